//! Energy (the GRID services): devices owned by users, meter readings with aggregates,
//! and battery series uploaded as CSV. Users see only their own devices; admins see all.

pub mod battery;
pub mod chart;
pub mod ops;

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension, Row};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

use crate::command::{commands, Proposal};
use crate::page::{page_rows, Page};
use crate::prediction::forecast::SlotReadings;
use crate::time;
use crate::Rejection;

use battery::BatterySample;

/// Most readings accepted in one request.
pub const MAX_BATCH: usize = 10_000;

/// How far ahead of the cluster's time a reading may be stamped: meters' clocks drift a
/// little, but a reading from the future is a mistake (and would anchor forecasts there).
pub const MAX_AHEAD_MS: i64 = 5 * time::MINUTE_MS;

/// Decimal places of every kWh figure the API returns (3: watt-hours). Sums of stored
/// readings are rounded to it, so `17.42` never comes out as `17.419999999999998`.
pub const KWH_DECIMALS: i32 = 3;

/// Rounds a kWh figure to [`KWH_DECIMALS`] places.
pub fn round_kwh(kwh: f64) -> f64 {
    let scale = 10f64.powi(KWH_DECIMALS);
    let rounded = (kwh * scale).round() / scale;
    // Beyond 2^53 / 1000 the product is no longer exact: the input is as precise as it gets.
    if rounded.is_finite() {
        rounded
    } else {
        kwh
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Meter,
    Solar,
    Battery,
    Other,
}

impl DeviceKind {
    fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Meter => "meter",
            DeviceKind::Solar => "solar",
            DeviceKind::Battery => "battery",
            DeviceKind::Other => "other",
        }
    }

    fn parse(s: &str) -> DeviceKind {
        match s {
            "meter" => DeviceKind::Meter,
            "solar" => DeviceKind::Solar,
            "battery" => DeviceKind::Battery,
            _ => DeviceKind::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub kind: DeviceKind,
    #[serde(rename = "created_at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_ms: i64,
    #[serde(rename = "updated_at", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    pub kind: DeviceKind,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: Option<String>,
    pub kind: Option<DeviceKind>,
}

/// A reading as stored and proposed: compact, timestamps in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReadingRow {
    #[serde(rename = "t")]
    pub ts_ms: i64,
    #[serde(rename = "c")]
    pub consumption_kwh: Option<f64>,
    #[serde(rename = "g")]
    pub generation_kwh: Option<f64>,
}

/// Who is asking: the caller's id and whether they are an admin.
pub use crate::catalog::Actor;

commands! {
    pub enum EnergyCommand {
        CreateDevice {
            pub owner_id: i64,
            pub device: NewDevice,
        },
        UpdateDevice {
            pub device_id: i64,
            pub actor: Actor,
            pub patch: DevicePatch,
        },
        DeleteDevice {
            pub device_id: i64,
            pub actor: Actor,
        },
        /// Inserts readings; a reading for a timestamp already stored replaces it, so sending
        /// the same batch twice changes nothing.
        AddReadings {
            pub device_id: i64,
            pub actor: Actor,
            pub readings: Vec<ReadingRow>,
        },
        AddBatterySamples {
            pub device_id: i64,
            pub actor: Actor,
            pub samples: Vec<BatterySample>,
        },
        /// Deletes the device's readings in `[from, to)` (an absent bound is open).
        DeleteReadings {
            pub device_id: i64,
            pub actor: Actor,
            pub from_ms: Option<i64>,
            pub to_ms: Option<i64>,
        },
    }
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS devices (
             id INTEGER PRIMARY KEY,
             owner_id INTEGER NOT NULL,
             name TEXT NOT NULL,
             kind TEXT NOT NULL,
             created_ms INTEGER NOT NULL,
             updated_ms INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS devices_owner ON devices (owner_id, id);
         CREATE TABLE IF NOT EXISTS readings (
             device_id INTEGER NOT NULL,
             ts_ms INTEGER NOT NULL,
             consumption_kwh REAL,
             generation_kwh REAL,
             PRIMARY KEY (device_id, ts_ms)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS battery_samples (
             device_id INTEGER NOT NULL,
             ts_ms INTEGER NOT NULL,
             soc_pct REAL NOT NULL,
             voltage_v REAL NOT NULL,
             current_a REAL NOT NULL,
             temperature_c REAL,
             PRIMARY KEY (device_id, ts_ms)
         ) WITHOUT ROWID;",
    )
}

/// Checks a device name; shared by the edge and `apply`.
pub fn valid_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= 100
}

/// The first reading stamped more than [`MAX_AHEAD_MS`] after `now_ms`, as
/// `(index, message)`. Shared by the edge (with this node's clock) and `apply` (with the
/// entry's replicated clock, which decides).
pub fn first_from_the_future(readings: &[ReadingRow], now_ms: i64) -> Option<(usize, String)> {
    let latest = now_ms.saturating_add(MAX_AHEAD_MS);
    readings.iter().position(|r| r.ts_ms > latest).map(|i| {
        (
            i,
            format!(
                "{} is in the future: readings may be at most {} minutes ahead of the cluster's time ({})",
                time::rfc3339(readings[i].ts_ms),
                MAX_AHEAD_MS / time::MINUTE_MS,
                time::rfc3339(now_ms)
            ),
        )
    })
}

/// Checks one reading's values (timestamps are checked where they are parsed).
pub fn valid_reading(r: &ReadingRow) -> Result<(), &'static str> {
    let ok = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && (0.0..=1_000_000.0).contains(&v));
    if r.consumption_kwh.is_none() && r.generation_kwh.is_none() {
        return Err("needs consumption_kwh or generation_kwh");
    }
    if !ok(r.consumption_kwh) || !ok(r.generation_kwh) {
        return Err("values must be 0 to 1000000 kWh");
    }
    Ok(())
}

impl Proposal for command::CreateDevice {
    type Reply = Device;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Device, Rejection>> {
        let Self { owner_id, device } = self;
        let now = time::now(db, ctx)?;
        if !valid_name(&device.name) {
            return Ok(Err(Rejection::new("validation_failed", "name: required, at most 100 characters")));
        }
        db.prepare_cached(
            "INSERT INTO devices (owner_id, name, kind, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![owner_id, device.name.trim(), device.kind.as_str(), now])?;
        device_reply(db, db.last_insert_rowid())
    }
}

impl Proposal for command::UpdateDevice {
    type Reply = Device;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Device, Rejection>> {
        let Self { device_id, actor, patch } = self;
        let now = time::now(db, ctx)?;
        let device = match owned_device(db, device_id, actor)? {
            Ok(d) => d,
            Err(r) => return Ok(Err(r)),
        };
        let name = patch.name.unwrap_or_else(|| device.name.clone());
        if !valid_name(&name) {
            return Ok(Err(Rejection::new("validation_failed", "name: required, at most 100 characters")));
        }
        let kind = patch.kind.unwrap_or(device.kind);
        // A patch that changes nothing leaves `updated_at` alone.
        if name.trim() == device.name && kind == device.kind {
            return Ok(Ok(device));
        }
        db.execute(
            "UPDATE devices SET name = ?2, kind = ?3, updated_ms = ?4 WHERE id = ?1",
            params![device_id, name.trim(), kind.as_str(), now],
        )?;
        device_reply(db, device_id)
    }
}

impl Proposal for command::DeleteDevice {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Self { device_id, actor } = self;
        if let Err(r) = owned_device(db, device_id, actor)? {
            return Ok(Err(r));
        }
        db.execute("DELETE FROM readings WHERE device_id = ?1", [device_id])?;
        db.execute("DELETE FROM battery_samples WHERE device_id = ?1", [device_id])?;
        db.execute("DELETE FROM devices WHERE id = ?1", [device_id])?;
        Ok(Ok(()))
    }
}

/// Answers how many readings were stored.
impl Proposal for command::AddReadings {
    type Reply = u64;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<u64, Rejection>> {
        let Self { device_id, actor, readings } = self;
        let now = time::now(db, ctx)?;
        if let Err(r) = owned_device(db, device_id, actor)? {
            return Ok(Err(r));
        }
        if readings.is_empty() || readings.len() > MAX_BATCH {
            return Ok(Err(Rejection::new("validation_failed", format!("send 1 to {MAX_BATCH} readings"))));
        }
        if let Some((i, e)) = readings.iter().enumerate().find_map(|(i, r)| valid_reading(r).err().map(|e| (i, e))) {
            return Ok(Err(Rejection::new("validation_failed", format!("readings[{i}]: {e}"))));
        }
        if let Some((i, e)) = first_from_the_future(&readings, now) {
            return Ok(Err(Rejection::new("validation_failed", format!("readings[{i}].ts: {e}"))));
        }
        let mut insert = db.prepare_cached(
            "INSERT INTO readings (device_id, ts_ms, consumption_kwh, generation_kwh) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device_id, ts_ms) DO UPDATE SET consumption_kwh = excluded.consumption_kwh,
                 generation_kwh = excluded.generation_kwh",
        )?;
        for r in &readings {
            insert.execute(params![device_id, r.ts_ms, r.consumption_kwh, r.generation_kwh])?;
        }
        Ok(Ok(readings.len() as u64))
    }
}

/// Answers how many samples were stored.
impl Proposal for command::AddBatterySamples {
    type Reply = u64;

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<u64, Rejection>> {
        let Self { device_id, actor, samples } = self;
        let device = match owned_device(db, device_id, actor)? {
            Ok(d) => d,
            Err(r) => return Ok(Err(r)),
        };
        if device.kind != DeviceKind::Battery {
            return Ok(Err(not_a_battery(device_id)));
        }
        let mut insert = db.prepare_cached(
            "INSERT INTO battery_samples (device_id, ts_ms, soc_pct, voltage_v, current_a, temperature_c)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(device_id, ts_ms) DO UPDATE SET soc_pct = excluded.soc_pct, voltage_v = excluded.voltage_v,
                 current_a = excluded.current_a, temperature_c = excluded.temperature_c",
        )?;
        for s in &samples {
            insert.execute(params![device_id, s.ts_ms, s.soc_pct, s.voltage_v, s.current_a, s.temperature_c])?;
        }
        Ok(Ok(samples.len() as u64))
    }
}

/// Answers how many readings were deleted.
impl Proposal for command::DeleteReadings {
    type Reply = u64;

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<u64, Rejection>> {
        let Self { device_id, actor, from_ms, to_ms } = self;
        if let Err(r) = owned_device(db, device_id, actor)? {
            return Ok(Err(r));
        }
        if let (Some(from), Some(to)) = (from_ms, to_ms) {
            if from >= to {
                return Ok(Err(Rejection::new("validation_failed", "to: must be after from")));
            }
        }
        Ok(Ok(delete_readings(db, device_id, from_ms, to_ms)?))
    }
}

/// Deletes one device's readings in `[from, to)`; returns how many went.
fn delete_readings(db: &Connection, device_id: i64, from_ms: Option<i64>, to_ms: Option<i64>) -> rusqlite::Result<u64> {
    let deleted = db
        .prepare_cached("DELETE FROM readings WHERE device_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3")?
        .execute(params![device_id, from_ms.unwrap_or(i64::MIN), to_ms.unwrap_or(i64::MAX)])?;
    Ok(deleted as u64)
}

pub fn not_a_battery(device_id: i64) -> Rejection {
    Rejection::new("not_a_battery", format!("device {device_id} is not a battery (kind must be battery)"))
}

fn owned_device(db: &Connection, id: i64, actor: Actor) -> rusqlite::Result<Result<Device, Rejection>> {
    Ok(match device_by_id(db, id)? {
        Some(d) if d.owner_id == actor.user_id || actor.admin => Ok(d),
        // Other users' devices do not exist as far as the caller can tell.
        _ => Err(Rejection::not_found(format!("no device {id}"))),
    })
}

/// The device, if `actor` may see it.
pub fn visible_device(db: &Connection, id: i64, actor: Actor) -> rusqlite::Result<Result<Device, Rejection>> {
    owned_device(db, id, actor)
}

fn device_reply(db: &Connection, id: i64) -> rusqlite::Result<Result<Device, Rejection>> {
    Ok(device_by_id(db, id)?.ok_or_else(|| Rejection::not_found(format!("no device {id}"))))
}

fn device_row(r: &Row) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        name: r.get(2)?,
        kind: DeviceKind::parse(&r.get::<_, String>(3)?),
        created_ms: r.get(4)?,
        updated_ms: r.get(5)?,
    })
}

pub fn device_by_id(db: &Connection, id: i64) -> rusqlite::Result<Option<Device>> {
    db.prepare_cached("SELECT id, owner_id, name, kind, created_ms, updated_ms FROM devices WHERE id = ?1")?
        .query_row([id], device_row)
        .optional()
}

/// The caller's devices (every device for an admin), in id order.
pub fn list_devices(db: &Connection, actor: Actor, limit: u32, after: i64) -> rusqlite::Result<Page<Device>> {
    let mut stmt = db.prepare_cached(
        "SELECT id, owner_id, name, kind, created_ms, updated_ms FROM devices
         WHERE (?1 OR owner_id = ?2) AND id > ?3 ORDER BY id",
    )?;
    let rows = page_rows(stmt.query_map(params![actor.admin, actor.user_id, after], device_row)?, limit)?;
    Ok(Page::from_rows(rows, limit, |d| d.id.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    #[default]
    Raw,
    Hour,
    Day,
    Month,
}

/// Sum, minimum and maximum of one quantity over a bucket (absent when no reading had it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Aggregate {
    /// Start of the bucket (the reading's own time for `raw`).
    #[serde(rename = "ts", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub start_ms: i64,
    pub count: i64,
    pub consumption_kwh: Option<Stats>,
    pub generation_kwh: Option<Stats>,
}

fn bucket_expr(bucket: Bucket) -> &'static str {
    match bucket {
        Bucket::Raw => "ts_ms",
        Bucket::Hour => "(ts_ms / 3600000) * 3600000",
        Bucket::Day => "(ts_ms / 86400000) * 86400000",
        Bucket::Month => "CAST(strftime('%s', ts_ms / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000",
    }
}

fn stats(sum: Option<f64>, min: Option<f64>, max: Option<f64>) -> Option<Stats> {
    Some(Stats { sum: round_kwh(sum?), min: round_kwh(min?), max: round_kwh(max?) })
}

/// Readings of one device in `[from, to)`, aggregated per bucket, one page of buckets.
pub fn readings(
    db: &Connection,
    device_id: i64,
    bucket: Bucket,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
    after_ms: Option<i64>,
) -> rusqlite::Result<Page<Aggregate>> {
    let b = bucket_expr(bucket);
    let sql = format!(
        "SELECT {b} AS bucket, count(*), sum(consumption_kwh), min(consumption_kwh), max(consumption_kwh),
                sum(generation_kwh), min(generation_kwh), max(generation_kwh)
         FROM readings WHERE device_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
         GROUP BY bucket HAVING bucket > ?4 ORDER BY bucket"
    );
    let mut stmt = db.prepare_cached(&sql)?;
    let aggregates = stmt.query_map(params![device_id, from_ms, to_ms, after_ms.unwrap_or(i64::MIN)], |r| {
        Ok(Aggregate {
            start_ms: r.get(0)?,
            count: r.get(1)?,
            consumption_kwh: stats(r.get(2)?, r.get(3)?, r.get(4)?),
            generation_kwh: stats(r.get(5)?, r.get(6)?, r.get(7)?),
        })
    })?;
    let rows = page_rows(aggregates, limit)?;
    Ok(Page::from_rows(rows, limit, |a| a.start_ms.to_string()))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnergySummary {
    #[serde(rename = "from", with = "time::as_rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub from_ms: Option<i64>,
    #[serde(rename = "to", with = "time::as_rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub to_ms: Option<i64>,
    pub devices: i64,
    pub readings: i64,
    pub consumption_kwh: f64,
    pub generation_kwh: f64,
    /// Consumption minus generation.
    pub net_kwh: f64,
    /// Share of consumption covered by own generation, 0 to 1 (absent without consumption).
    pub self_sufficiency: Option<f64>,
}

/// Totals over every device the user owns, in `[from, to)`.
pub fn summary(
    db: &Connection,
    owner_id: i64,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> rusqlite::Result<EnergySummary> {
    let (devices, readings, consumption, generation): (i64, i64, f64, f64) = db
        .prepare_cached(
            "SELECT (SELECT count(*) FROM devices WHERE owner_id = ?1), count(r.ts_ms),
                coalesce(sum(r.consumption_kwh), 0), coalesce(sum(r.generation_kwh), 0)
         FROM readings r JOIN devices d ON d.id = r.device_id
         WHERE d.owner_id = ?1 AND r.ts_ms >= ?2 AND r.ts_ms < ?3",
        )?
        .query_row(params![owner_id, from_ms.unwrap_or(i64::MIN), to_ms.unwrap_or(i64::MAX)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let (consumption, generation) = (round_kwh(consumption), round_kwh(generation));
    Ok(EnergySummary {
        from_ms,
        to_ms,
        devices,
        readings,
        consumption_kwh: consumption,
        generation_kwh: generation,
        net_kwh: round_kwh(consumption - generation),
        // A share to 4 places (0.01 %).
        self_sufficiency: (consumption > 0.0).then(|| (generation.min(consumption) / consumption * 1e4).round() / 1e4),
    })
}

/// Hourly (or daily) consumption of one device or of all the owner's devices, from the
/// first slot with data up to the last, at most `max_slots` slots back from the last.
/// Only slots that ended by `now_ms` count: the slot in progress (and any reading stamped
/// later) is left out, so a forecast learns from finished slots only. Slots without
/// readings are `None`. Returns the start of the first slot and the series.
pub fn consumption_series(
    db: &Connection,
    device_id: Option<i64>,
    owner_id: i64,
    slot_ms: i64,
    max_slots: usize,
    now_ms: i64,
) -> rusqlite::Result<Option<(i64, Vec<Option<SlotReadings>>)>> {
    let until = now_ms.div_euclid(slot_ms) * slot_ms;
    let sql = "SELECT (r.ts_ms / ?3) * ?3 AS slot, sum(r.consumption_kwh), count(*), min(r.ts_ms), max(r.ts_ms)
               FROM readings r JOIN devices d ON d.id = r.device_id
               WHERE (?1 IS NULL OR r.device_id = ?1) AND d.owner_id = ?2 AND r.consumption_kwh IS NOT NULL
                 AND r.ts_ms >= ?4 AND r.ts_ms < ?5
               GROUP BY slot ORDER BY slot";
    let last: Option<i64> = db.query_row(
        "SELECT max(r.ts_ms) FROM readings r JOIN devices d ON d.id = r.device_id
         WHERE (?1 IS NULL OR r.device_id = ?1) AND d.owner_id = ?2 AND r.consumption_kwh IS NOT NULL AND r.ts_ms < ?3",
        params![device_id, owner_id, until],
        |r| r.get(0),
    )?;
    let Some(last) = last else { return Ok(None) };
    let last_slot = last / slot_ms * slot_ms;
    let earliest = last_slot - (max_slots as i64 - 1) * slot_ms;
    let rows: Vec<(i64, SlotReadings)> = db
        .prepare_cached(sql)?
        .query_map(params![device_id, owner_id, slot_ms, earliest, until], |r| {
            let slot: i64 = r.get(0)?;
            Ok((
                slot,
                SlotReadings {
                    value: r.get(1)?,
                    count: r.get(2)?,
                    first_ms: r.get::<_, i64>(3)? - slot,
                    last_ms: r.get::<_, i64>(4)? - slot,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let Some(&(first, _)) = rows.first() else { return Ok(None) };
    let mut series = vec![None; ((last_slot - first) / slot_ms + 1) as usize];
    for (slot, readings) in rows {
        series[((slot - first) / slot_ms) as usize] = Some(readings);
    }
    Ok(Some((first, series)))
}

/// Stored battery samples of a device in `[from, to)`, oldest first.
pub fn battery_samples(
    db: &Connection,
    device_id: i64,
    from_ms: i64,
    to_ms: i64,
) -> rusqlite::Result<Vec<BatterySample>> {
    db.prepare_cached(
        "SELECT ts_ms, soc_pct, voltage_v, current_a, temperature_c FROM battery_samples
         WHERE device_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms",
    )?
    .query_map(params![device_id, from_ms, to_ms], |r| {
        Ok(BatterySample {
            ts_ms: r.get(0)?,
            soc_pct: r.get(1)?,
            voltage_v: r.get(2)?,
            current_a: r.get(3)?,
            temperature_c: r.get(4)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests;
