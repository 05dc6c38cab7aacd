//! The energy service's operations: devices, readings and aggregates, the user's summary,
//! battery CSV upload, battery summary and chart.

use serde::{Deserialize, Serialize};

use super::battery::{self, BatterySample, BatterySummary};
use super::{command, Actor, Aggregate, Bucket, Device, DevicePatch, EnergySummary, NewDevice, ReadingRow, MAX_BATCH};
use crate::auth::{Identity, Role};
use crate::error::{FieldError, Validator};
use crate::page::{Page, PageParams};
use crate::services::{service_ops, Body, Call, Deleted, Operation};
use crate::Error;

/// One reading as clients send it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadingInput {
    /// RFC 3339 timestamp.
    #[schema(format = DateTime)]
    pub ts: String,
    /// kWh used in the interval ending at `ts` (this or `generation_kwh` is needed).
    #[schema(minimum = 0, maximum = 1000000)]
    pub consumption_kwh: Option<f64>,
    /// kWh generated in the interval ending at `ts`.
    #[schema(minimum = 0, maximum = 1000000)]
    pub generation_kwh: Option<f64>,
}

/// One reading, or a batch of up to 10,000 (`{"readings": [...]}` or a bare array).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ReadingsInput {
    Batch {
        #[schema(min_items = 1, max_items = 10000)]
        readings: Vec<ReadingInput>,
    },
    List(Vec<ReadingInput>),
    One(ReadingInput),
}

/// Chosen by shape, so that an error names its field (`[3].consumption_kwh: invalid
/// type …`); an untagged enum would only say that no variant matched.
impl<'de> Deserialize<'de> for ReadingsInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        // Other members beside `readings` are ignored, as the documented schema allows.
        #[derive(Deserialize)]
        struct Batch {
            readings: Vec<ReadingInput>,
        }
        let named = |e: serde_path_to_error::Error<serde_json::Error>| D::Error::custom(e.to_string());
        let value = serde_json::Value::deserialize(d)?;
        match &value {
            serde_json::Value::Array(_) => {
                serde_path_to_error::deserialize(value).map(ReadingsInput::List).map_err(named)
            }
            serde_json::Value::Object(m) if m.contains_key("readings") => serde_path_to_error::deserialize(value)
                .map(|b: Batch| ReadingsInput::Batch { readings: b.readings })
                .map_err(named),
            _ => serde_path_to_error::deserialize(value).map(ReadingsInput::One).map_err(named),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadingsStored {
    pub device_id: i64,
    /// Readings written (a timestamp sent again replaces the stored reading).
    pub stored: u64,
}

/// `from`/`to` (RFC 3339) of range queries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start, inclusive (RFC 3339). Default: the beginning.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End, exclusive (RFC 3339, after `from`). Default: no end.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadingsQuery {
    /// Start, inclusive (RFC 3339). Default: the beginning.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End, exclusive (RFC 3339, after `from`). Default: no end.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `raw` (default), `hour`, `day` or `month`.
    #[param(inline)]
    pub bucket: Option<Bucket>,
    /// Buckets per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^-?[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatteryUploaded {
    pub device_id: i64,
    /// Samples stored (a timestamp sent again replaces the stored sample).
    pub stored: u64,
    /// Summary of the uploaded series.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<BatterySummary>,
}

/// Most buckets per page of readings.
pub const MAX_READINGS_PAGE: u32 = 1000;

/// The battery summary as served.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatteryReport {
    pub device_id: i64,
    /// Absent when the range holds no samples.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<BatterySummary>,
}

impl ReadingsInput {
    /// The readings, whichever of the three shapes they came in.
    pub fn into_list(self) -> Vec<ReadingInput> {
        match self {
            ReadingsInput::Batch { readings } | ReadingsInput::List(readings) => readings,
            ReadingsInput::One(r) => vec![r],
        }
    }
}

service_ops! {
    /// The energy service's operations.
    EnergyOp => Energy {
        CreateDevice, ListDevices, GetDevice, UpdateDevice, DeleteDevice,
        AddReadings, QueryReadings, DeleteReadings, Summary, UploadBattery, GetBatterySummary, BatteryChart,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateDevice {
    pub device: NewDevice,
}

impl Operation for CreateDevice {
    type Output = Device;
    const STATUS: u16 = 201;

    async fn handle(self, call: &Call) -> Result<Device, Error> {
        let who = call.caller()?;
        let mut v = Validator::default();
        v.check(super::valid_name(&self.device.name), "name", "required, at most 100 characters");
        v.finish()?;
        call.write(command::CreateDevice { owner_id: who.user_id, device: self.device }).await
    }
}

/// The caller's devices (all devices for an admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListDevices {
    pub page: PageParams,
}

impl Operation for ListDevices {
    type Output = Page<Device>;
    const CACHED: bool = true;

    async fn handle(self, call: &Call) -> Result<Page<Device>, Error> {
        let actor = actor(call.caller()?);
        let (limit, after) = (self.page.limit(crate::page::MAX_LIMIT)?, self.page.int_cursor()?);
        call.read(move |db| Ok(super::list_devices(db, actor, limit, after)?)).await
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GetDevice {
    pub id: i64,
}

impl Operation for GetDevice {
    type Output = Device;
    const CACHED: bool = true;

    async fn handle(self, call: &Call) -> Result<Device, Error> {
        let (actor, id) = (actor(call.caller()?), self.id);
        call.read(move |db| Ok(super::visible_device(db, id, actor)??)).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateDevice {
    pub id: i64,
    pub patch: DevicePatch,
}

impl Operation for UpdateDevice {
    type Output = Device;

    async fn handle(self, call: &Call) -> Result<Device, Error> {
        let actor = actor(call.caller()?);
        let mut v = Validator::default();
        v.check(self.patch.name.as_deref().is_none_or(super::valid_name), "name", "required, at most 100 characters");
        v.finish()?;
        call.write(command::UpdateDevice { device_id: self.id, actor, patch: self.patch }).await
    }
}

/// Deletes a device with its readings and battery samples.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct DeleteDevice {
    pub id: i64,
}

impl Operation for DeleteDevice {
    type Output = Deleted;

    async fn handle(self, call: &Call) -> Result<Deleted, Error> {
        let actor = actor(call.caller()?);
        call.write(command::DeleteDevice { device_id: self.id, actor }).await?;
        Ok(Deleted { deleted: self.id })
    }
}

/// Stores readings of one device (a timestamp sent again replaces its reading).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddReadings {
    pub id: i64,
    pub readings: Vec<ReadingInput>,
}

impl Operation for AddReadings {
    type Output = ReadingsStored;
    const STATUS: u16 = 201;

    async fn handle(self, call: &Call) -> Result<ReadingsStored, Error> {
        let actor = actor(call.caller()?);
        let readings = parse_readings(self.readings)?;
        // Named at the edge with this node's clock; `apply` decides with the entry's.
        let now = call.read(|db| Ok(crate::time::app_now(db)?)).await?;
        if let Some((i, e)) = super::first_from_the_future(&readings, now) {
            // A rule of the clock, not of the schema: 422 `rule_violated`.
            return Err(Error::RuleViolated(vec![FieldError { field: format!("readings[{i}].ts"), message: e }]));
        }
        let stored = call.write(command::AddReadings { device_id: self.id, actor, readings }).await?;
        Ok(ReadingsStored { device_id: self.id, stored })
    }
}

/// Readings of one device, raw or aggregated, a page at a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryReadings {
    pub id: i64,
    pub query: ReadingsQuery,
}

impl Operation for QueryReadings {
    type Output = Page<Aggregate>;
    const CACHED: bool = true;

    async fn handle(self, call: &Call) -> Result<Page<Aggregate>, Error> {
        let actor = actor(call.caller()?);
        let (id, query) = (self.id, self.query);
        let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
        let page = PageParams { limit: query.limit, cursor: None };
        let limit = page.limit(MAX_READINGS_PAGE).map(|l| if query.limit.is_none() { 100 } else { l })?;
        let after = query.cursor.as_deref().map(cursor_ms).transpose()?;
        let bucket = query.bucket.unwrap_or_default();
        call.read(move |db| {
            super::visible_device(db, id, actor)??;
            Ok(super::readings(db, id, bucket, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX), limit, after)?)
        })
        .await
    }
}

/// Deletes one device's readings in `[from, to)`; an absent bound is open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteReadings {
    pub id: i64,
    pub range: RangeQuery,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadingsDeleted {
    pub device_id: i64,
    /// Readings deleted.
    pub deleted: u64,
}

impl Operation for DeleteReadings {
    type Output = ReadingsDeleted;

    async fn handle(self, call: &Call) -> Result<ReadingsDeleted, Error> {
        let actor = actor(call.caller()?);
        let (from_ms, to_ms) = range(self.range.from.as_deref(), self.range.to.as_deref())?;
        let deleted = call.write(command::DeleteReadings { device_id: self.id, actor, from_ms, to_ms }).await?;
        Ok(ReadingsDeleted { device_id: self.id, deleted })
    }
}

/// The caller's consumption, generation and self-sufficiency across their devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub range: RangeQuery,
}

impl Operation for Summary {
    type Output = EnergySummary;
    const CACHED: bool = true;

    async fn handle(self, call: &Call) -> Result<EnergySummary, Error> {
        let who = call.caller()?.user_id;
        let (from, to) = range(self.range.from.as_deref(), self.range.to.as_deref())?;
        call.read(move |db| Ok(super::summary(db, who, from, to)?)).await
    }
}

/// Battery samples of one device, as CSV text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadBattery {
    pub id: i64,
    pub csv: String,
}

impl Operation for UploadBattery {
    type Output = BatteryUploaded;
    const STATUS: u16 = 201;

    async fn handle(self, call: &Call) -> Result<BatteryUploaded, Error> {
        let actor = actor(call.caller()?);
        // The body's schema is "text/csv": what is wrong inside it is a rule, not the schema.
        let samples = battery::parse_csv(&self.csv).map_err(|errors| {
            Error::RuleViolated(
                errors
                    .into_iter()
                    .map(|e| FieldError {
                        field: match e.column {
                            Some(c) => format!("line {}, column {c}", e.line),
                            None => format!("line {}", e.line),
                        },
                        message: e.message,
                    })
                    .collect(),
            )
        })?;
        let summary = battery::summarize(&samples);
        let stored = call.write(command::AddBatterySamples { device_id: self.id, actor, samples }).await?;
        Ok(BatteryUploaded { device_id: self.id, stored, summary })
    }
}

/// Summary of the stored battery series in a range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetBatterySummary {
    pub id: i64,
    pub range: RangeQuery,
}

impl Operation for GetBatterySummary {
    type Output = BatteryReport;

    async fn handle(self, call: &Call) -> Result<BatteryReport, Error> {
        let (_, samples) = battery_series(call, self.id, &self.range).await?;
        Ok(BatteryReport { device_id: self.id, summary: battery::summarize(&samples) })
    }
}

/// The battery series in a range as an SVG chart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatteryChart {
    pub id: i64,
    pub range: RangeQuery,
}

/// An SVG document.
#[derive(Debug, Clone, Serialize)]
pub struct Svg(pub String);

impl Operation for BatteryChart {
    type Output = Svg;

    async fn handle(self, call: &Call) -> Result<Svg, Error> {
        let (device, samples) = battery_series(call, self.id, &self.range).await?;
        let title = format!("{}: state of charge", device.name);
        Ok(Svg(super::chart::render_soc_chart(&samples, &title)))
    }

    fn encode(output: Svg) -> Result<Body, Error> {
        Ok(Body::text("image/svg+xml", output.0))
    }
}

/// A battery device visible to the caller, with its samples in the range.
async fn battery_series(call: &Call, id: i64, range_q: &RangeQuery) -> Result<(Device, Vec<BatterySample>), Error> {
    let actor = actor(call.caller()?);
    let (from, to) = range(range_q.from.as_deref(), range_q.to.as_deref())?;
    call.read(move |db| {
        let device = super::visible_device(db, id, actor)??;
        if device.kind != super::DeviceKind::Battery {
            return Err(super::not_a_battery(id).into());
        }
        Ok((device, super::battery_samples(db, id, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX))?))
    })
    .await
}

pub(crate) fn actor(who: &Identity) -> Actor {
    Actor { user_id: who.user_id, admin: who.role == Role::Admin }
}

fn cursor_ms(c: &str) -> Result<i64, Error> {
    c.parse().map_err(|_| {
        Error::Validation(vec![FieldError {
            field: "cursor".into(),
            message: "not a cursor returned by this list".into(),
        }])
    })
}

/// Parses `from` / `to`; both name themselves when invalid.
pub fn range(from: Option<&str>, to: Option<&str>) -> Result<(Option<i64>, Option<i64>), Error> {
    let mut v = Validator::default();
    let mut parse = |field: &str, text: Option<&str>| match text {
        None => None,
        Some(t) => {
            let ms = crate::time::parse_rfc3339(t);
            v.check(ms.is_some(), field, "must be an RFC 3339 timestamp such as 2026-11-01T00:00:00Z");
            ms
        }
    };
    let (from, to) = (parse("from", from), parse("to", to));
    if let (Some(f), Some(t)) = (from, to) {
        v.rule(f < t, "to", "must be after from");
    }
    v.finish()?;
    Ok((from, to))
}

/// Checks every reading; reports up to 20 bad ones by index.
fn parse_readings(list: Vec<ReadingInput>) -> Result<Vec<ReadingRow>, Error> {
    let mut v = Validator::default();
    // A rule here: the bare-array form's schema cannot carry its bounds.
    if list.is_empty() || list.len() > MAX_BATCH {
        v.rule(false, "readings", format!("send 1 to {MAX_BATCH} readings, not {}", list.len()));
        v.finish()?;
    }
    let mut rows = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    let mut bad = 0;
    for (i, r) in list.into_iter().enumerate() {
        let Some(ts_ms) = crate::time::parse_rfc3339(&r.ts) else {
            v.fail(&format!("readings[{i}].ts"), "must be an RFC 3339 timestamp");
            bad += 1;
            continue;
        };
        let row = ReadingRow { ts_ms, consumption_kwh: r.consumption_kwh, generation_kwh: r.generation_kwh };
        if let Err(e) = super::valid_reading(&row) {
            v.rule(false, &format!("readings[{i}]"), e);
            bad += 1;
        } else if !seen.insert(ts_ms) {
            v.rule(false, &format!("readings[{i}].ts"), "appears twice in the batch");
            bad += 1;
        }
        if bad >= 20 {
            break;
        }
        rows.push(row);
    }
    v.finish()?;
    Ok(rows)
}
