//! The energy service's operations: devices, readings and aggregates, the user's summary,
//! battery CSV upload, battery summary and chart.

use serde::{Deserialize, Serialize};

use super::battery::{self, BatterySummary};
use super::{Actor, Bucket, DevicePatch, EnergyCommand, NewDevice, ReadingRow, MAX_BATCH};
use crate::auth::{Identity, Role};
use crate::error::{FieldError, Validator};
use crate::page::PageParams;
use crate::services::{ById, Call, Id, Output};
use crate::{Command, Error, Reply};

/// One reading as clients send it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadingInput {
    /// RFC 3339 timestamp.
    pub ts: String,
    pub consumption_kwh: Option<f64>,
    pub generation_kwh: Option<f64>,
}

/// One reading, or a batch of up to 10,000 (`{"readings": [...]}` or a bare array).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ReadingsInput {
    Batch { readings: Vec<ReadingInput> },
    List(Vec<ReadingInput>),
    One(ReadingInput),
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
    pub from: Option<String>,
    /// End, exclusive (RFC 3339). Default: no end.
    pub to: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadingsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    /// `raw` (default), `hour`, `day` or `month`.
    pub bucket: Option<Bucket>,
    /// Buckets per page (1 to 1000, default 100).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WithRange<T> {
    pub id: i64,
    #[serde(flatten)]
    pub query: T,
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

pub async fn handle(call: &Call) -> Result<Output, Error> {
    match call.req.op.as_str() {
        "devices.create" => {
            let who = call.caller()?;
            let device: NewDevice = call.input()?;
            let mut v = Validator::default();
            v.check(super::valid_name(&device.name), "name", "required, at most 100 characters");
            v.finish()?;
            write_device(call, EnergyCommand::CreateDevice { owner_id: who.user_id, device }, 201).await
        }
        "devices.list" => {
            let actor = actor(call.caller()?);
            let page: PageParams = call.input()?;
            let (limit, after) = (page.limit(crate::page::MAX_LIMIT)?, page.int_cursor()?);
            Output::ok(call.read(move |db| Ok(super::list_devices(db, actor, limit, after)?)).await?)
        }
        "devices.get" => {
            let actor = actor(call.caller()?);
            let Id { id } = call.input::<Id>()?;
            Output::ok(call.read(move |db| Ok(super::visible_device(db, id, actor)??)).await?)
        }
        "devices.update" => {
            let actor = actor(call.caller()?);
            let ById { id, body } = call.input::<ById<DevicePatch>>()?;
            let mut v = Validator::default();
            v.check(body.name.as_deref().is_none_or(super::valid_name), "name", "required, at most 100 characters");
            v.finish()?;
            write_device(call, EnergyCommand::UpdateDevice { device_id: id, actor, patch: body }, 200).await
        }
        "devices.delete" => {
            let actor = actor(call.caller()?);
            let Id { id } = call.input::<Id>()?;
            let (_, index) = call.write(Command::Energy(EnergyCommand::DeleteDevice { device_id: id, actor })).await?;
            Output::written(200, serde_json::json!({ "deleted": id }), index)
        }
        "readings.add" => {
            let actor = actor(call.caller()?);
            let ById { id, body } = call.input::<ById<ReadingsInput>>()?;
            let readings = parse_readings(body)?;
            let command = EnergyCommand::AddReadings { device_id: id, actor, readings };
            match call.write(Command::Energy(command)).await? {
                (Reply::Count(stored), index) => Output::written(201, ReadingsStored { device_id: id, stored }, index),
                (other, _) => Err(crate::auth::ops::unexpected(other)),
            }
        }
        "readings.query" => {
            let actor = actor(call.caller()?);
            let WithRange { id, query } = call.input::<WithRange<ReadingsQuery>>()?;
            let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
            let page = PageParams { limit: query.limit, cursor: None };
            let limit = page.limit(MAX_READINGS_PAGE).map(|l| if query.limit.is_none() { 100 } else { l })?;
            let after = query.cursor.as_deref().map(cursor_ms).transpose()?;
            let bucket = query.bucket.unwrap_or_default();
            let page = call
                .read(move |db| {
                    super::visible_device(db, id, actor)??;
                    Ok(super::readings(db, id, bucket, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX), limit, after)?)
                })
                .await?;
            Output::ok(page)
        }
        "energy.summary" => {
            let who = call.caller()?.user_id;
            let q: RangeQuery = call.input()?;
            let (from, to) = range(q.from.as_deref(), q.to.as_deref())?;
            Output::ok(call.read(move |db| Ok(super::summary(db, who, from, to)?)).await?)
        }
        "battery.upload" => {
            let actor = actor(call.caller()?);
            let ById { id, body } = call.input::<ById<String>>()?;
            let samples = battery::parse_csv(&body).map_err(|errors| {
                Error::Validation(
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
            let command = EnergyCommand::AddBatterySamples { device_id: id, actor, samples };
            match call.write(Command::Energy(command)).await? {
                (Reply::Count(stored), index) => {
                    Output::written(201, BatteryUploaded { device_id: id, stored, summary }, index)
                }
                (other, _) => Err(crate::auth::ops::unexpected(other)),
            }
        }
        "battery.summary" | "battery.chart" => {
            let actor = actor(call.caller()?);
            let WithRange { id, query } = call.input::<WithRange<RangeQuery>>()?;
            let (from, to) = range(query.from.as_deref(), query.to.as_deref())?;
            let (device, samples) = call
                .read(move |db| {
                    let device = super::visible_device(db, id, actor)??;
                    if device.kind != super::DeviceKind::Battery {
                        return Err(super::not_a_battery(id).into());
                    }
                    Ok((device, super::battery_samples(db, id, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX))?))
                })
                .await?;
            if call.req.op == "battery.chart" {
                let title = format!("{}: state of charge", device.name);
                Ok(Output::Text {
                    content_type: "image/svg+xml",
                    body: super::chart::render_soc_chart(&samples, &title),
                })
            } else {
                Output::ok(serde_json::json!({ "device_id": id, "summary": battery::summarize(&samples) }))
            }
        }
        other => Err(Error::NotFound(format!("the energy service has no operation {other:?}"))),
    }
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
        v.check(f < t, "to", "must be after from");
    }
    v.finish()?;
    Ok((from, to))
}

/// Checks every reading; reports up to 20 bad ones by index.
fn parse_readings(input: ReadingsInput) -> Result<Vec<ReadingRow>, Error> {
    let list = match input {
        ReadingsInput::Batch { readings } | ReadingsInput::List(readings) => readings,
        ReadingsInput::One(r) => vec![r],
    };
    let mut v = Validator::default();
    if list.is_empty() || list.len() > MAX_BATCH {
        v.fail("readings", format!("send 1 to {MAX_BATCH} readings, not {}", list.len()));
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
            v.fail(&format!("readings[{i}]"), e);
            bad += 1;
        } else if !seen.insert(ts_ms) {
            v.fail(&format!("readings[{i}].ts"), "appears twice in the batch");
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

async fn write_device(call: &Call, command: EnergyCommand, status: u16) -> Result<Output, Error> {
    match call.write(Command::Energy(command)).await? {
        (Reply::Device(d), index) => Output::written(status, d, index),
        (other, _) => Err(crate::auth::ops::unexpected(other)),
    }
}
