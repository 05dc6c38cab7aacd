//! Energy-consumption forecasting for one device's metered series.
//!
//! This module owns everything behind `GET /api/v1/devices/{id}/forecast?horizon=24h&interval=hour`
//! except the HTTP and storage plumbing: it takes a regular series of readings (one slot per hour or per
//! day, oldest first, `None` for a slot without data) and returns a point forecast with 80% and 95%
//! prediction intervals, the name of the model that produced it and a backtest error (MAE and MAPE on the
//! last window of history).
//!
//! # Models
//!
//! * **`mstl_ets`** — MSTL decomposition (augurs) with daily + weekly seasonality (periods 24 and 168) for
//!   hourly data, weekly (7) for daily data; the deseasonalised trend is modelled by AutoETS (`ZZN`:
//!   additive/multiplicative error, none/additive/damped trend, no seasonality). Prediction intervals
//!   come from augurs (predicted at level 0.8 and 0.95). Used when the history holds at least
//!   [`mstl_min_history`] real observations (two weekly cycles for hourly data, four for daily data).
//! * **`seasonal_naive`** — repeats the last cycle of the shortest period (24 hours / 7 days). Its
//!   intervals come from the root-mean-square of the in-sample seasonal differences `y[t] - y[t-p]`,
//!   widened by `sqrt(k + 1)` for the `k`-th repetition of the cycle, with normal quantiles 1.2816 (80%)
//!   and 1.96 (95%). Used when the history holds at least [`min_history`] but fewer than
//!   [`mstl_min_history`] observations, for a constant series (every observation equal, e.g. a device that
//!   has been off: the forecast is exact and ETS would only burn its optimiser budget), and as the fallback
//!   whenever MSTL/ETS fails for any reason (error, non-finite or implausible output, even a panic inside
//!   augurs); the fallback is reported in [`Forecast::fallback_reason`].
//! * Fewer than [`min_history`] real observations → [`ForecastError::InsufficientHistory`].
//!
//! # Input handling
//!
//! * Stored slots become history through [`complete_slots`]: a slot whose readings do not reach across
//!   it (the day in progress, a first day that began mid-way) counts as missing, so it is neither fitted
//!   nor backtested as a low value.
//! * Only the most recent [`max_history`] slots are considered (8 weeks hourly, 1 year daily), which
//!   bounds the cost of a request.
//! * Non-finite readings (NaN, ±∞) are treated as missing. Leading missing slots are dropped. Only real
//!   observations count toward the minimums.
//! * Interior gaps are filled before fitting: gaps of up to [`SHORT_GAP`] slots by linear interpolation,
//!   longer ones by copying the previous cycle of the shortest period with a linear level correction so
//!   that both edges of the gap line up (linear interpolation when less than one cycle precedes the gap).
//! * Trailing missing slots (e.g. the current hour is not reported yet) are forecast too: `step` is
//!   always counted from the *last slot of `history`*, so steps `1..=horizon` are the slots right after
//!   it, whatever the number of trailing gaps.
//! * The series is scaled by a power of two near its largest absolute value before fitting (augurs' MSTL
//!   works in `f32`), so huge or tiny readings neither overflow nor underflow and scaling round-trips
//!   exactly; every number returned is finite (saturated at `±f64::MAX`).
//! * When every observation is `>= 0` (consumption), values and all bounds are clamped at 0.
//! * Output is deterministic: the ETS models searched all have analytic intervals (no simulation).
//!
//! # Backtest
//!
//! The last `window = min(horizon, shortest period)` slots of the history are held out, the same model is
//! fitted on the rest and its forecast is compared with the real observations of the window (imputed
//! slots are skipped). When the rest holds fewer than [`mstl_min_history`] observations (or MSTL fails on
//! it), the backtest uses seasonal naive instead; [`Backtest::model`] always names the model that was
//! actually backtested. MAPE (percent) skips actuals equal to 0 and is `None` if all of them are 0.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};
use serde::{Deserialize, Serialize};

/// Largest horizon, in steps, for [`Interval::Hour`] (one week).
pub const MAX_HORIZON_HOURS: usize = 168;
/// Largest horizon, in steps, for [`Interval::Day`].
pub const MAX_HORIZON_DAYS: usize = 90;
/// Most recent slots considered for [`Interval::Hour`] (8 weeks); older slots are ignored.
pub const MAX_HISTORY_HOURS: usize = 8 * 168;
/// Most recent slots considered for [`Interval::Day`] (one year); older slots are ignored.
pub const MAX_HISTORY_DAYS: usize = 365;
/// Gaps of at most this many consecutive missing slots are filled by linear interpolation.
pub const SHORT_GAP: usize = 2;

/// [`Forecast::model`] / [`Backtest::model`] value for MSTL decomposition + AutoETS trend.
pub const MODEL_MSTL_ETS: &str = "mstl_ets";
/// [`Forecast::model`] / [`Backtest::model`] value for the seasonal-naive model.
pub const MODEL_SEASONAL_NAIVE: &str = "seasonal_naive";

/// Standard-normal quantile for a central 80% interval.
const Z_80: f64 = 1.2816;
/// Standard-normal quantile for a central 95% interval.
const Z_95: f64 = 1.96;
/// MSTL output whose magnitude exceeds this many times the largest observation is rejected as
/// implausible (e.g. an exploding trend) and replaced by the seasonal-naive fallback.
const MAX_PLAUSIBLE_RATIO: f64 = 100.0;

/// Spacing of the slots of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// One slot per hour.
    Hour,
    /// One slot per day.
    Day,
}

impl Interval {
    /// The query-string spelling: `"hour"` or `"day"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    /// Largest accepted horizon in steps ([`MAX_HORIZON_HOURS`] / [`MAX_HORIZON_DAYS`]).
    pub fn max_horizon(self) -> usize {
        match self {
            Interval::Hour => MAX_HORIZON_HOURS,
            Interval::Day => MAX_HORIZON_DAYS,
        }
    }

    /// Most recent slots of `history` that are considered ([`MAX_HISTORY_HOURS`] / [`MAX_HISTORY_DAYS`]).
    pub fn max_history(self) -> usize {
        match self {
            Interval::Hour => MAX_HISTORY_HOURS,
            Interval::Day => MAX_HISTORY_DAYS,
        }
    }

    /// Seasonal periods modelled by MSTL: `[24, 168]` for hourly data, `[7]` for daily data.
    pub fn seasonal_periods(self) -> &'static [usize] {
        match self {
            Interval::Hour => &[24, 168],
            Interval::Day => &[7],
        }
    }

    /// Shortest seasonal period (24 hours / 7 days): the seasonal-naive period and the backtest window cap.
    pub fn shortest_period(self) -> usize {
        match self {
            Interval::Hour => 24,
            Interval::Day => 7,
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = ForecastError;

    /// Parses `"hour"` or `"day"` (ASCII case-insensitive, surrounding whitespace ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("hour") {
            Ok(Interval::Hour)
        } else if s.eq_ignore_ascii_case("day") {
            Ok(Interval::Day)
        } else {
            Err(ForecastError::InvalidInterval(format!("{s:?} (expected \"hour\" or \"day\")")))
        }
    }
}

/// One forecast slot. Invariant: `lower_95 <= lower_80 <= value <= upper_80 <= upper_95`, all finite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastPoint {
    /// 1-based number of slots after the last slot of `history`.
    pub step: usize,
    /// Point forecast.
    pub value: f64,
    /// Lower bound of the 80% prediction interval.
    pub lower_80: f64,
    /// Upper bound of the 80% prediction interval.
    pub upper_80: f64,
    /// Lower bound of the 95% prediction interval.
    pub lower_95: f64,
    /// Upper bound of the 95% prediction interval.
    pub upper_95: f64,
}

/// Out-of-sample error of the model on the last window of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backtest {
    /// Number of held-out slots: `min(horizon, shortest period)`.
    pub window: usize,
    /// Model that was backtested ([`MODEL_MSTL_ETS`] or [`MODEL_SEASONAL_NAIVE`]). It differs from
    /// [`Forecast::model`] when the history without the window was too short for MSTL, or MSTL failed on it.
    pub model: String,
    /// Mean absolute error over the real observations of the window, in the series' units.
    pub mae: f64,
    /// Mean absolute percentage error (percent) over the window's non-zero real observations;
    /// `None` when every one of them is 0.
    pub mape: Option<f64>,
}

/// A forecast for the slots following `history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// Model that produced `points`: [`MODEL_MSTL_ETS`] or [`MODEL_SEASONAL_NAIVE`].
    pub model: String,
    /// Seasonal periods of that model, in slots (`[24, 168]`, `[7]`, or the single naive period).
    pub seasonal_periods: Vec<usize>,
    /// `horizon` points, `step` 1 to `horizon`.
    pub points: Vec<ForecastPoint>,
    /// Backtest on the last window of history.
    pub backtest: Backtest,
    /// Real observations used (within the last [`max_history`] slots).
    pub history_len: usize,
    /// Interior missing slots that were imputed before fitting.
    pub imputed: usize,
    /// Why MSTL/ETS was wanted but seasonal naive was served; `None` when no fallback happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// Why no forecast could be made.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum ForecastError {
    /// Fewer real observations than [`min_history`].
    #[error("insufficient history: have {have} observations, need at least {need}")]
    InsufficientHistory {
        /// Real (finite) observations within the last [`max_history`] slots.
        have: usize,
        /// [`min_history`] for the interval.
        need: usize,
    },
    /// Horizon is 0, above the interval's maximum, or unparsable.
    #[error("invalid horizon: {0}")]
    InvalidHorizon(String),
    /// Interval string is neither `hour` nor `day`.
    #[error("invalid interval: {0}")]
    InvalidInterval(String),
    /// Internal invariant violated (should not happen; reported instead of panicking).
    #[error("model error: {0}")]
    Model(String),
}

/// Minimum number of real observations for any forecast: 48 hours (two daily cycles) or 14 days (two
/// weekly cycles).
pub fn min_history(interval: Interval) -> usize {
    match interval {
        Interval::Hour => 48,
        Interval::Day => 14,
    }
}

/// Minimum number of real observations for MSTL+ETS: 336 hours (two weekly cycles, the least MSTL accepts
/// for period 168) or 28 days (four weekly cycles: two would be only 14 points for the decomposition and
/// the ETS trend fit, which we judge too few). Below this, seasonal naive is used.
pub fn mstl_min_history(interval: Interval) -> usize {
    match interval {
        Interval::Hour => 2 * 168,
        Interval::Day => 4 * 7,
    }
}

/// Most recent slots of `history` that [`forecast`] considers.
pub fn max_history(interval: Interval) -> usize {
    interval.max_history()
}

/// Parses the `horizon` query parameter into a number of steps of `interval`.
///
/// Accepts `"<n>h"` (hours), `"<n>d"` (days) or a bare `"<n>"` (steps of `interval`). For daily data an
/// hour count must be a whole number of days. The result is validated like [`forecast`]'s `horizon`.
pub fn parse_horizon(s: &str, interval: Interval) -> Result<usize, ForecastError> {
    let s = s.trim();
    let bad = || ForecastError::InvalidHorizon(format!("{s:?} (expected e.g. \"24h\", \"7d\" or a step count)"));
    let (digits, hours_per_unit) = if let Some(d) = s.strip_suffix(['h', 'H']) {
        (d, Some(1usize))
    } else if let Some(d) = s.strip_suffix(['d', 'D']) {
        (d, Some(24))
    } else {
        (s, None)
    };
    let n: usize = digits.trim().parse().map_err(|_| bad())?;
    let steps = match (hours_per_unit, interval) {
        (None, _) => n,
        (Some(per), Interval::Hour) => n.checked_mul(per).ok_or_else(bad)?,
        (Some(per), Interval::Day) => {
            let hours = n.checked_mul(per).ok_or_else(bad)?;
            if hours % 24 != 0 {
                return Err(ForecastError::InvalidHorizon(format!("{s:?} is not a whole number of days")));
            }
            hours / 24
        }
    };
    validate_horizon(interval, steps)?;
    Ok(steps)
}

/// What the store knows of one slot of history: the summed value, how many readings made
/// it, and where the first and last of them fall (milliseconds from the slot's start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotReadings {
    pub value: f64,
    pub count: u32,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Share of its length a slot's readings must reach across for the slot to be complete.
pub const MIN_COVERAGE: f64 = 0.9;

/// The history to fit on: each slot's value, or `None` for a slot without readings or an
/// incomplete one. A slot is complete when its readings reach from its start to its end:
/// the span from its first to its last reading, plus one typical spacing (the slot's
/// length over the median number of readings per slot), covers at least [`MIN_COVERAGE`]
/// of it. A day in progress or a first day that began at noon would otherwise be fitted
/// (and backtested) as a day of low consumption; gaps inside a slot are not detected.
pub fn complete_slots(slots: &[Option<SlotReadings>], slot_ms: i64) -> Vec<Option<f64>> {
    let mut counts: Vec<u32> = slots.iter().flatten().map(|s| s.count.max(1)).collect();
    counts.sort_unstable();
    let Some(&typical) = counts.get(counts.len() / 2) else {
        return vec![None; slots.len()];
    };
    let spacing = slot_ms as f64 / f64::from(typical);
    let needed = MIN_COVERAGE * slot_ms as f64;
    slots.iter().map(|s| s.filter(|s| (s.last_ms - s.first_ms) as f64 + spacing >= needed).map(|s| s.value)).collect()
}

/// Forecasts the `horizon` slots following `history`.
///
/// `history` is a regular series, one slot per `interval`, oldest first; `None` (or a non-finite value)
/// means no data for that slot. See the module documentation for model choice, gap handling and the
/// backtest.
///
/// # Errors
///
/// * [`ForecastError::InvalidHorizon`] if `horizon` is 0 or above [`Interval::max_horizon`];
/// * [`ForecastError::InsufficientHistory`] if fewer than [`min_history`] real observations are among the
///   last [`max_history`] slots.
pub fn forecast(history: &[Option<f64>], interval: Interval, horizon: usize) -> Result<Forecast, ForecastError> {
    validate_horizon(interval, horizon)?;
    let prep = prepare(history, interval)?;

    // Trailing missing slots are forecast as well, then skipped, so steps stay anchored to history's end.
    let steps = prep.trailing.saturating_add(horizon);
    let want_mstl = prep.n_obs >= mstl_min_history(interval) && !prep.constant;
    let fit = fit_model(want_mstl, &prep.y, &prep.observed, prep.nonneg, interval, steps);

    let points = to_points(&fit.raw, prep.trailing, prep.scale);
    if points.len() != horizon {
        return Err(ForecastError::Model(format!("produced {} points for a horizon of {horizon}", points.len())));
    }
    let backtest = backtest(&prep, interval, horizon, fit.model == MODEL_MSTL_ETS);
    let seasonal_periods = if fit.model == MODEL_MSTL_ETS {
        interval.seasonal_periods().to_vec()
    } else {
        vec![interval.shortest_period()]
    };
    Ok(Forecast {
        model: fit.model.to_owned(),
        seasonal_periods,
        points,
        backtest,
        history_len: prep.n_obs,
        imputed: prep.imputed,
        fallback_reason: fit.fallback_reason,
    })
}

fn validate_horizon(interval: Interval, horizon: usize) -> Result<(), ForecastError> {
    let max = interval.max_horizon();
    if horizon == 0 || horizon > max {
        return Err(ForecastError::InvalidHorizon(format!(
            "{horizon} steps; must be between 1 and {max} for interval {interval}"
        )));
    }
    Ok(())
}

/// History after sanitising, trimming, scaling and gap filling.
#[derive(Debug)]
struct Prepared {
    /// Scaled, gap-filled series from the first to the last real observation.
    y: Vec<f64>,
    /// Whether each slot of `y` is a real observation (not imputed).
    observed: Vec<bool>,
    /// `y = original / scale`; a power of two, so scaling round-trips exactly.
    scale: f64,
    /// Every observation is `>= 0`.
    nonneg: bool,
    /// Every observation has the same value.
    constant: bool,
    /// Number of real observations.
    n_obs: usize,
    /// Number of imputed interior slots.
    imputed: usize,
    /// Missing slots after the last real observation.
    trailing: usize,
}

fn prepare(history: &[Option<f64>], interval: Interval) -> Result<Prepared, ForecastError> {
    let start = history.len().saturating_sub(interval.max_history());
    let clean: Vec<Option<f64>> = history[start..].iter().map(|v| v.filter(|x| x.is_finite())).collect();
    let n_obs = clean.iter().filter(|v| v.is_some()).count();
    let need = min_history(interval);
    let insufficient = ForecastError::InsufficientHistory { have: n_obs, need };
    if n_obs < need {
        return Err(insufficient);
    }
    let (Some(first), Some(last)) = (clean.iter().position(Option::is_some), clean.iter().rposition(Option::is_some))
    else {
        return Err(insufficient);
    };
    let trailing = clean.len() - 1 - last;
    let slots = &clean[first..=last];

    let max_abs = slots.iter().flatten().fold(0.0_f64, |m, v| m.max(v.abs()));
    let scale = power_of_two_scale(max_abs);
    let nonneg = slots.iter().flatten().all(|v| *v >= 0.0);
    let first_value = slots.iter().flatten().next();
    let constant = slots.iter().flatten().all(|v| Some(v) == first_value);
    let scaled: Vec<Option<f64>> = slots.iter().map(|v| v.map(|x| x / scale)).collect();
    let observed: Vec<bool> = scaled.iter().map(Option::is_some).collect();
    let y = fill_gaps(&scaled, interval.shortest_period(), nonneg);
    Ok(Prepared { imputed: y.len() - n_obs, y, observed, scale, nonneg, constant, n_obs, trailing })
}

/// A power of two close to `max_abs` (1 for 0 or non-finite input), so that dividing and multiplying by it
/// is exact and the scaled series has max |y| in about `[1, 2)`.
fn power_of_two_scale(max_abs: f64) -> f64 {
    if !(max_abs > 0.0 && max_abs.is_finite()) {
        return 1.0;
    }
    // Clamped to the normal exponent range; `as` saturates and the log2 of a finite positive is finite.
    let exp = (max_abs.log2().floor() as i64).clamp(-1022, 1023);
    // Normal f64 with a zero mantissa: exactly 2^exp.
    f64::from_bits(((exp + 1023) as u64) << 52)
}

/// Fills missing slots; see the module docs. Leading/trailing gaps (not produced by [`prepare`]) are
/// filled with the nearest observation; an input without observations becomes all zeros.
fn fill_gaps(values: &[Option<f64>], period: usize, nonneg: bool) -> Vec<f64> {
    let obs: Vec<usize> = values.iter().enumerate().filter_map(|(i, v)| v.map(|_| i)).collect();
    let mut out: Vec<f64> = values.iter().map(|v| v.unwrap_or(0.0)).collect();
    let (Some(&first), Some(&last)) = (obs.first(), obs.last()) else {
        return out;
    };
    let (first_val, last_val) = (out[first], out[last]);
    out[..first].fill(first_val);
    out[last + 1..].fill(last_val);

    for pair in obs.windows(2) {
        let &[a, b] = pair else { continue };
        if b - a <= 1 {
            continue;
        }
        let span = (b - a) as f64;
        if b - a - 1 <= SHORT_GAP || period == 0 || a < period {
            let (ya, yb) = (out[a], out[b]);
            for (t, slot) in out.iter_mut().enumerate().take(b).skip(a + 1) {
                let w = (t - a) as f64 / span;
                *slot = ya + (yb - ya) * w;
            }
        } else {
            // Copy the previous cycle, then add a linear level correction matching both edges.
            for t in a + 1..b {
                out[t] = out[t - period];
            }
            let d_a = out[a] - out[a - period];
            let d_b = out[b] - out[b - period];
            for (t, slot) in out.iter_mut().enumerate().take(b).skip(a + 1) {
                let w = (t - a) as f64 / span;
                *slot += d_a + (d_b - d_a) * w;
            }
        }
        if nonneg {
            out[a + 1..b].iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    out
}

/// A forecast in the scaled space of [`Prepared::y`].
#[derive(Debug, Clone, PartialEq)]
struct RawForecast {
    point: Vec<f64>,
    lower_80: Vec<f64>,
    upper_80: Vec<f64>,
    lower_95: Vec<f64>,
    upper_95: Vec<f64>,
}

impl RawForecast {
    /// Clamps at 0 (when `nonneg`) and restores `lower_95 <= lower_80 <= point <= upper_80 <= upper_95`.
    fn finish(&mut self, nonneg: bool) {
        for i in 0..self.point.len() {
            let mut p = self.point[i];
            let (mut l80, mut u80, mut l95, mut u95) =
                (self.lower_80[i], self.upper_80[i], self.lower_95[i], self.upper_95[i]);
            if nonneg {
                p = p.max(0.0);
                l80 = l80.max(0.0);
                u80 = u80.max(0.0);
                l95 = l95.max(0.0);
                u95 = u95.max(0.0);
            }
            l80 = l80.min(p);
            l95 = l95.min(l80);
            u80 = u80.max(p);
            u95 = u95.max(u80);
            self.point[i] = p;
            self.lower_80[i] = l80;
            self.upper_80[i] = u80;
            self.lower_95[i] = l95;
            self.upper_95[i] = u95;
        }
    }
}

/// Outcome of fitting: the (finished) forecast and which model made it.
#[derive(Debug)]
struct Fitted {
    raw: RawForecast,
    model: &'static str,
    fallback_reason: Option<String>,
}

/// MSTL+ETS if `want_mstl` and it succeeds, otherwise seasonal naive.
fn fit_model(want_mstl: bool, y: &[f64], observed: &[bool], nonneg: bool, interval: Interval, steps: usize) -> Fitted {
    let mut fallback_reason = None;
    if want_mstl {
        match mstl_ets(y, interval.seasonal_periods(), steps) {
            Ok(mut raw) => {
                raw.finish(nonneg);
                return Fitted { raw, model: MODEL_MSTL_ETS, fallback_reason };
            }
            Err(reason) => fallback_reason = Some(reason),
        }
    }
    let mut raw = seasonal_naive(y, observed, interval.shortest_period(), steps);
    raw.finish(nonneg);
    Fitted { raw, model: MODEL_SEASONAL_NAIVE, fallback_reason }
}

/// MSTL decomposition + AutoETS trend, intervals from augurs at levels 0.8 and 0.95. Any failure,
/// including a panic inside augurs, becomes an `Err` with a human-readable reason.
fn mstl_ets(y: &[f64], periods: &[usize], steps: usize) -> Result<RawForecast, String> {
    let run = || -> Result<RawForecast, String> {
        let trend = AutoETS::new(1, "ZZN").map_err(|e| format!("ETS spec: {e}"))?.allow_multiplicative_trend(false);
        let model = MSTLModel::new(periods.to_vec(), trend.into_trend_model());
        let fitted = model.fit(y).map_err(|e| format!("MSTL fit: {e}"))?;
        let f80 = fitted.predict(steps, 0.8).map_err(|e| format!("MSTL predict: {e}"))?;
        let f95 = fitted.predict(steps, 0.95).map_err(|e| format!("MSTL predict: {e}"))?;
        let (Some(i80), Some(i95)) = (f80.intervals, f95.intervals) else {
            return Err("MSTL returned no prediction intervals".to_owned());
        };
        Ok(RawForecast {
            point: f80.point,
            lower_80: i80.lower,
            upper_80: i80.upper,
            lower_95: i95.lower,
            upper_95: i95.upper,
        })
    };
    let raw = catch_unwind(AssertUnwindSafe(run)).map_err(|_| "MSTL/ETS panicked".to_owned())??;

    let series = [&raw.point, &raw.lower_80, &raw.upper_80, &raw.lower_95, &raw.upper_95];
    if series.iter().any(|s| s.len() != steps) {
        return Err(format!("MSTL returned a forecast of the wrong length (expected {steps})"));
    }
    if series.iter().flat_map(|s| s.iter()).any(|v| !v.is_finite()) {
        return Err("MSTL returned non-finite values".to_owned());
    }
    // `y` is scaled to max |y| in [1, 2) (or all zeros), so this bound is relative to the largest observation.
    if raw.point.iter().any(|v| v.abs() > MAX_PLAUSIBLE_RATIO) {
        return Err(format!("MSTL forecast exceeds {MAX_PLAUSIBLE_RATIO}x the largest observation"));
    }
    Ok(raw)
}

/// Seasonal-naive forecast with period `period` (capped at the series length), intervals from the RMS of
/// in-sample seasonal differences between real observations (all slots if there is no such pair).
fn seasonal_naive(y: &[f64], observed: &[bool], period: usize, steps: usize) -> RawForecast {
    let n = y.len();
    let mut raw = RawForecast {
        point: Vec::with_capacity(steps),
        lower_80: Vec::with_capacity(steps),
        upper_80: Vec::with_capacity(steps),
        lower_95: Vec::with_capacity(steps),
        upper_95: Vec::with_capacity(steps),
    };
    if n == 0 {
        for v in [&mut raw.point, &mut raw.lower_80, &mut raw.upper_80, &mut raw.lower_95, &mut raw.upper_95] {
            v.resize(steps, 0.0);
        }
        return raw;
    }
    let p = period.clamp(1, n);
    let diffs = |real_only: bool| {
        (p..n)
            .filter(|&t| !real_only || (observed.get(t) == Some(&true) && observed.get(t - p) == Some(&true)))
            .map(|t| y[t] - y[t - p])
            .collect::<Vec<f64>>()
    };
    let mut errors = diffs(true);
    if errors.is_empty() {
        errors = diffs(false);
    }
    let sigma = if errors.is_empty() {
        0.0
    } else {
        let mse = errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64;
        if mse.is_finite() {
            mse.sqrt()
        } else {
            0.0
        }
    };
    for h in 1..=steps {
        let k = (h - 1) / p;
        let value = y[n - p + (h - 1) % p];
        let s = sigma * ((k + 1) as f64).sqrt();
        raw.point.push(value);
        raw.lower_80.push(value - Z_80 * s);
        raw.upper_80.push(value + Z_80 * s);
        raw.lower_95.push(value - Z_95 * s);
        raw.upper_95.push(value + Z_95 * s);
    }
    raw
}

/// Saturates to a finite number (NaN becomes 0).
fn finite(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(f64::MIN, f64::MAX)
    }
}

/// Skips the first `skip` steps (trailing gaps), unscales and numbers the rest from 1.
fn to_points(raw: &RawForecast, skip: usize, scale: f64) -> Vec<ForecastPoint> {
    (skip..raw.point.len())
        .map(|i| ForecastPoint {
            step: i - skip + 1,
            value: finite(raw.point[i] * scale),
            lower_80: finite(raw.lower_80[i] * scale),
            upper_80: finite(raw.upper_80[i] * scale),
            lower_95: finite(raw.lower_95[i] * scale),
            upper_95: finite(raw.upper_95[i] * scale),
        })
        .collect()
}

fn backtest(prep: &Prepared, interval: Interval, horizon: usize, use_mstl: bool) -> Backtest {
    let n = prep.y.len();
    let window = horizon.min(interval.shortest_period()).min(n.saturating_sub(1));
    let split = n - window;
    let (train_y, train_obs) = (&prep.y[..split], &prep.observed[..split]);
    let train_n_obs = train_obs.iter().filter(|o| **o).count();
    let want_mstl = use_mstl && train_n_obs >= mstl_min_history(interval);
    let fit = fit_model(want_mstl, train_y, train_obs, prep.nonneg, interval, window);

    let (mut abs_sum, mut abs_n, mut pct_sum, mut pct_n) = (0.0_f64, 0usize, 0.0_f64, 0usize);
    for (t, f) in (split..n).zip(&fit.raw.point) {
        if !prep.observed[t] {
            continue;
        }
        let actual = prep.y[t];
        let err = (actual - f).abs();
        abs_sum += err;
        abs_n += 1;
        if actual != 0.0 {
            pct_sum += err / actual.abs();
            pct_n += 1;
        }
    }
    let mae = if abs_n == 0 { 0.0 } else { finite(abs_sum / abs_n as f64 * prep.scale) };
    let mape = (pct_n > 0).then(|| finite(pct_sum / pct_n as f64 * 100.0));
    Backtest { window, model: fit.model.to_owned(), mae, mape }
}

#[cfg(test)]
mod tests;
