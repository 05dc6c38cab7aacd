//! The prediction service: consumption forecasts for one device or for all of a user's
//! devices, from the replicated readings, with prediction intervals and a backtest.

pub mod forecast;

use serde::{Deserialize, Serialize};

use crate::energy::round_kwh;
use crate::error::FieldError;
use crate::services::{service_ops, Call, Operation};
use crate::time::{self, DAY_MS, HOUR_MS};
use crate::{Error, Rejection};
use forecast::{ForecastError, Interval};

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForecastQuery {
    /// How far ahead: `24h`, `48h`, `7d` or a number of slots (default `24h`; at most 168 hours
    /// hourly, 90 days daily).
    #[param(pattern = "^\\s*[0-9]{1,4}\\s*[hHdD]?\\s*$")]
    pub horizon: Option<String>,
    /// `hour` (default) or `day`.
    #[param(pattern = "^(hour|day)$")]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForecastPoint {
    #[serde(rename = "ts", with = "time::as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ts_ms: i64,
    /// Forecast consumption (kWh) in the slot starting at `ts`.
    pub value: f64,
    pub lower_80: f64,
    pub upper_80: f64,
    pub lower_95: f64,
    pub upper_95: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BacktestError {
    /// Slots held out at the end of the history.
    pub window: usize,
    /// Mean absolute error, kWh.
    pub mae: f64,
    /// Mean absolute percentage error, percent (absent when every actual was 0).
    pub mape: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForecastResponse {
    pub device_id: Option<i64>,
    /// `hour` or `day`.
    pub interval: String,
    /// Number of slots forecast.
    pub horizon: usize,
    /// `mstl_ets` (MSTL decomposition with daily and weekly seasonality, ETS trend) or
    /// `seasonal_naive` (the same slot one season earlier) when history is short.
    pub model: String,
    pub seasonal_periods: Vec<usize>,
    /// Slots of history the model saw.
    pub history_len: usize,
    pub backtest: BacktestError,
    pub points: Vec<ForecastPoint>,
}

service_ops! {
    /// The prediction service's operations.
    PredictionOp => Prediction { DeviceForecast, UserForecast }
}

/// Consumption forecast of one device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceForecast {
    pub id: i64,
    pub query: ForecastQuery,
}

impl Operation for DeviceForecast {
    type Output = ForecastResponse;

    async fn handle(self, call: &Call) -> Result<ForecastResponse, Error> {
        forecast_op(call, Some(self.id), self.query).await
    }
}

/// Forecast of the caller's total consumption across their devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserForecast {
    pub query: ForecastQuery,
}

impl Operation for UserForecast {
    type Output = ForecastResponse;

    async fn handle(self, call: &Call) -> Result<ForecastResponse, Error> {
        forecast_op(call, None, self.query).await
    }
}

async fn forecast_op(call: &Call, device_id: Option<i64>, query: ForecastQuery) -> Result<ForecastResponse, Error> {
    let who = call.caller()?.clone();
    let field = |field: &str, message: String| Error::Validation(vec![FieldError { field: field.into(), message }]);
    let interval: Interval = query
        .interval
        .as_deref()
        .unwrap_or("hour")
        .parse()
        .map_err(|_| field("interval", "must be hour or day".into()))?;
    // How far ahead an interval may look is a rule the documented pattern cannot express.
    let horizon = forecast::parse_horizon(query.horizon.as_deref().unwrap_or("24h"), interval)
        .map_err(|e| Error::RuleViolated(vec![FieldError { field: "horizon".into(), message: e.to_string() }]))?;
    let slot_ms = match interval {
        Interval::Hour => HOUR_MS,
        Interval::Day => DAY_MS,
    };
    let max_slots = interval.max_history();
    let actor = crate::energy::ops::actor(&who);
    let series = call
        .read(move |db| {
            let owner = match device_id {
                Some(id) => crate::energy::visible_device(db, id, actor)??.owner_id,
                None => actor.user_id,
            };
            let now = time::app_now(db)?;
            Ok(crate::energy::consumption_series(db, device_id, owner, slot_ms, max_slots, now)?)
        })
        .await?;
    let need = forecast::min_history(interval);
    let Some((first_ms, slots)) = series else {
        return Err(insufficient(0, need, interval));
    };
    let history = forecast::complete_slots(&slots, slot_ms);
    // Model fitting is CPU work: off the async threads.
    let result = tokio::task::spawn_blocking(move || {
        forecast::forecast(&history, interval, horizon).map(|f| (f, history.len()))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    let (f, len) = match result {
        Ok(done) => done,
        Err(ForecastError::InsufficientHistory { have, need }) => return Err(insufficient(have, need, interval)),
        Err(ForecastError::InvalidHorizon(m)) => return Err(field("horizon", m)),
        Err(e) => return Err(Error::Internal(e.to_string())),
    };
    let last_slot = first_ms + (len as i64 - 1) * slot_ms;
    Ok(ForecastResponse {
        device_id,
        interval: interval.as_str().into(),
        horizon,
        model: f.model,
        seasonal_periods: f.seasonal_periods,
        history_len: f.history_len,
        backtest: BacktestError {
            window: f.backtest.window,
            mae: round_kwh(f.backtest.mae),
            mape: f.backtest.mape.map(|m| (m * 100.0).round() / 100.0),
        },
        points: f
            .points
            .into_iter()
            .map(|p| ForecastPoint {
                ts_ms: last_slot + p.step as i64 * slot_ms,
                value: round_kwh(p.value),
                lower_80: round_kwh(p.lower_80),
                upper_80: round_kwh(p.upper_80),
                lower_95: round_kwh(p.lower_95),
                upper_95: round_kwh(p.upper_95),
            })
            .collect(),
    })
}

fn insufficient(have: usize, need: usize, interval: Interval) -> Error {
    Rejection::new(
        "insufficient_history",
        format!("a forecast needs at least {need} {interval} slots with readings; this history has {have}"),
    )
    .into()
}
