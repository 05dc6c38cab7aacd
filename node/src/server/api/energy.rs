//! Energy routes: devices, readings, summaries, battery data and charts, plus forecasts.
//! Each is served by an energy or prediction service instance somewhere in the cluster.

use axum::extract::State;
use axum::response::Response;
use panal_actors::energy::ops::{
    AddReadings, BatteryChart, BatteryReport, BatteryUploaded, CreateDevice, DeleteDevice, DeleteReadings,
    GetBatterySummary, GetDevice, ListDevices, QueryReadings, RangeQuery, ReadingsDeleted, ReadingsInput,
    ReadingsQuery, ReadingsStored, Summary, UpdateDevice, UploadBattery,
};
use panal_actors::energy::{Aggregate, Device, DevicePatch, EnergySummary, NewDevice};
use panal_actors::page::{Page, PageParams};
use panal_actors::prediction::{DeviceForecast, ForecastQuery, ForecastResponse, UserForecast};
use panal_actors::services::Deleted;

use super::extract::{CallMeta, Caller, JsonBody, Path, QueryParams, TextBody};
use super::openapi::ApiErrors;
use super::services::call;
use super::AppState;
use crate::error::Result;

#[utoipa::path(post, path = "/api/v1/devices", tag = "energy", security(("bearer" = [])), request_body = NewDevice,
    responses((status = 201, body = Device), ApiErrors))]
pub async fn create_device(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    JsonBody(b): JsonBody<NewDevice>,
) -> Result<Response> {
    call(&s, c, m, CreateDevice { device: b }).await
}

/// The caller's devices (all devices for an admin).
#[utoipa::path(get, path = "/api/v1/devices", tag = "energy", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<Device>), ApiErrors))]
pub async fn list_devices(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    QueryParams(p): QueryParams<PageParams>,
) -> Result<Response> {
    call(&s, c, m, ListDevices { page: p }).await
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "energy", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Device), ApiErrors))]
pub async fn get_device(State(s): State<AppState>, c: Caller, m: CallMeta, Path(id): Path<i64>) -> Result<Response> {
    call(&s, c, m, GetDevice { id }).await
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "energy", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = DevicePatch, responses((status = 200, body = Device), ApiErrors))]
pub async fn update_device(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    JsonBody(b): JsonBody<DevicePatch>,
) -> Result<Response> {
    call(&s, c, m, UpdateDevice { id, patch: b }).await
}

/// Deletes a device with its readings and battery samples.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "energy", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Deleted), ApiErrors))]
pub async fn delete_device(State(s): State<AppState>, c: Caller, m: CallMeta, Path(id): Path<i64>) -> Result<Response> {
    call(&s, c, m, DeleteDevice { id }).await
}

/// Stores one reading or a batch of up to 10,000. A timestamp sent again replaces its reading.
#[utoipa::path(post, path = "/api/v1/devices/{id}/readings", tag = "energy", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = ReadingsInput, responses((status = 201, body = ReadingsStored), ApiErrors))]
pub async fn add_readings(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    JsonBody(b): JsonBody<ReadingsInput>,
) -> Result<Response> {
    call(&s, c, m, AddReadings { id, readings: b.into_list() }).await
}

/// Readings in `[from, to)`, raw or aggregated per hour, day or month (sum, min, max, count).
#[utoipa::path(get, path = "/api/v1/devices/{id}/readings", tag = "energy", security(("bearer" = [])),
    params(("id" = i64, Path), ReadingsQuery), responses((status = 200, body = Page<Aggregate>), ApiErrors))]
pub async fn readings(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    QueryParams(q): QueryParams<ReadingsQuery>,
) -> Result<Response> {
    call(&s, c, m, QueryReadings { id, query: q }).await
}

/// Deletes the device's readings in `[from, to)` (an absent bound is open): the owner's way
/// to remove a mistaken range.
#[utoipa::path(delete, path = "/api/v1/devices/{id}/readings", tag = "energy", security(("bearer" = [])),
    params(("id" = i64, Path), RangeQuery), responses((status = 200, body = ReadingsDeleted), ApiErrors))]
pub async fn delete_readings(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Result<Response> {
    call(&s, c, m, DeleteReadings { id, range: q }).await
}

/// The caller's consumption, generation, net and self-sufficiency across their devices.
#[utoipa::path(get, path = "/api/v1/energy/summary", tag = "energy", security(("bearer" = [])), params(RangeQuery),
    responses((status = 200, body = EnergySummary), ApiErrors))]
pub async fn summary(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Result<Response> {
    call(&s, c, m, Summary { range: q }).await
}

/// Uploads battery data as CSV (timestamp, state of charge %, voltage, current, temperature;
/// header-mapped, extra columns ignored). Errors name the line and column.
#[utoipa::path(post, path = "/api/v1/devices/{id}/battery.csv", tag = "energy", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body(content = String, content_type = "text/csv"),
    responses((status = 201, body = BatteryUploaded), ApiErrors))]
pub async fn upload_battery(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    TextBody(body): TextBody,
) -> Result<Response> {
    call(&s, c, m, UploadBattery { id, csv: body }).await
}

/// Summary of the stored battery series in `[from, to)`: SoC min/max/mean, equivalent
/// full cycles, energy in/out, time below 20 %.
#[utoipa::path(get, path = "/api/v1/devices/{id}/battery", tag = "energy", security(("bearer" = [])),
    params(("id" = i64, Path), RangeQuery), responses((status = 200, body = BatteryReport), ApiErrors))]
pub async fn battery_summary(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Result<Response> {
    call(&s, c, m, GetBatterySummary { id, range: q }).await
}

/// The battery series in `[from, to)` as an SVG chart (state of charge and voltage).
#[utoipa::path(get, path = "/api/v1/devices/{id}/battery/chart.svg", tag = "energy", security(("bearer" = [])),
    params(("id" = i64, Path), RangeQuery),
    responses((status = 200, body = String, content_type = "image/svg+xml"), ApiErrors))]
pub async fn battery_chart(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Result<Response> {
    call(&s, c, m, BatteryChart { id, range: q }).await
}

/// Consumption forecast of one device with 80 % and 95 % intervals and a backtest error.
#[utoipa::path(get, path = "/api/v1/devices/{id}/forecast", tag = "prediction", security(("bearer" = [])),
    params(("id" = i64, Path), ForecastQuery), responses((status = 200, body = ForecastResponse), ApiErrors))]
pub async fn device_forecast(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    Path(id): Path<i64>,
    QueryParams(q): QueryParams<ForecastQuery>,
) -> Result<Response> {
    call(&s, c, m, DeviceForecast { id, query: q }).await
}

/// Forecast of the caller's total consumption across their devices.
#[utoipa::path(get, path = "/api/v1/energy/forecast", tag = "prediction", security(("bearer" = [])),
    params(ForecastQuery), responses((status = 200, body = ForecastResponse), ApiErrors))]
pub async fn user_forecast(
    State(s): State<AppState>,
    c: Caller,
    m: CallMeta,
    QueryParams(q): QueryParams<ForecastQuery>,
) -> Result<Response> {
    call(&s, c, m, UserForecast { query: q }).await
}
