//! Battery telemetry uploads: parsing and validating the `battery.csv` body of
//! `POST /api/v1/devices/{id}/battery.csv` into [`BatterySample`]s ([`parse_csv`]), and the
//! [`BatterySummary`] statistics computed from a series of samples ([`summarize`]).
//!
//! This module owns the CSV format (accepted header names, timestamp formats, value ranges, limits)
//! and the summary semantics (energy integration, cycle counting, time-weighted statistics). It does
//! no I/O and keeps no state; everything is deterministic for a given input.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// Largest number of data rows [`parse_csv`] accepts; one more is an error.
pub const MAX_ROWS: usize = 200_000;

/// [`parse_csv`] stops after collecting this many errors and returns them.
pub const MAX_ERRORS: usize = 20;

/// Intervals between consecutive samples longer than this (6 hours) are treated as gaps in the
/// recording: [`summarize`] leaves them out of the energy totals and the time-weighted statistics,
/// and the chart breaks its lines there.
pub const GAP_LIMIT_MS: i64 = 6 * 60 * 60 * 1000;

/// State of charge below which [`BatterySummary::seconds_below_20_pct`] counts time.
pub const LOW_SOC_PCT: f64 = 20.0;

/// One measurement of a battery at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatterySample {
    /// Unix time in milliseconds, UTC.
    pub ts_ms: i64,
    /// State of charge, 0..=100 %.
    pub soc_pct: f64,
    /// Terminal voltage in volts, > 0 and ≤ 2000.
    pub voltage_v: f64,
    /// Current in amperes, |I| ≤ 10000; positive means charging, negative discharging.
    pub current_a: f64,
    /// Temperature in °C (−60..=150), when the file has a temperature column and the row a value.
    pub temperature_c: Option<f64>,
}

/// One problem found in an uploaded CSV file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CsvError {
    /// 1-based line number in the file; the header is line 1 (a multi-line quoted record is named by
    /// the line it starts on).
    pub line: usize,
    /// The column's header as written in the file (trimmed), or the canonical field name for a
    /// missing required column (`timestamp`, `soc`, `voltage`, `current`); `None` when the problem
    /// is not about one column.
    pub column: Option<String>,
    /// What is wrong, for a person to read.
    pub message: String,
}

impl CsvError {
    fn new(line: usize, column: Option<&str>, message: impl Into<String>) -> Self {
        Self { line, column: column.map(str::to_owned), message: message.into() }
    }
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "line {}, column '{}': {}", self.line, column, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for CsvError {}

/// The fields a battery CSV can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Timestamp,
    Soc,
    Voltage,
    Current,
    Temperature,
}

impl Field {
    const ALL: [Field; 5] = [Field::Timestamp, Field::Soc, Field::Voltage, Field::Current, Field::Temperature];

    /// Canonical name, used in messages and for a missing column.
    fn name(self) -> &'static str {
        match self {
            Field::Timestamp => "timestamp",
            Field::Soc => "soc",
            Field::Voltage => "voltage",
            Field::Current => "current",
            Field::Temperature => "temperature",
        }
    }

    /// Accepted header names, as shown in messages; compared after [`normalize_header`].
    fn synonyms(self) -> &'static [&'static str] {
        match self {
            Field::Timestamp => &["timestamp", "ts", "time", "datetime", "date_time", "date"],
            Field::Soc => &["soc", "soc_pct", "soc_percent", "state_of_charge", "soc (%)"],
            Field::Voltage => &["voltage", "voltage_v", "volts", "v"],
            Field::Current => &["current", "current_a", "amps", "i"],
            Field::Temperature => &["temperature", "temperature_c", "temp", "temp_c"],
        }
    }
}

/// Lower-cases, trims, strips a UTF-8 byte order mark, turns `_` and `-` into spaces and collapses
/// runs of whitespace, so `State_Of_Charge` and ` state  of charge ` compare equal.
fn normalize_header(raw: &str) -> String {
    let lower = raw.trim_start_matches('\u{feff}').trim().to_lowercase();
    let spaced: String = lower.chars().map(|c| if c == '_' || c == '-' { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Drops a trailing unit written as `(...)`, `[...]` or `%`: `voltage (v)` → `voltage`,
/// `soc [%]` → `soc`, `soc%` → `soc`.
fn strip_unit(name: &str) -> &str {
    let mut s = name.trim();
    for (open, close) in [('(', ')'), ('[', ']')] {
        if let Some(inner) = s.strip_suffix(close) {
            if let Some(pos) = inner.rfind(open) {
                s = inner.get(..pos).unwrap_or("").trim_end();
            }
        }
    }
    s.trim_end_matches('%').trim_end()
}

/// Which field a header names, and the synonym it matched.
fn classify_header(raw: &str) -> Option<(Field, &'static str)> {
    let normalized = normalize_header(raw);
    let candidates = [normalized.as_str(), strip_unit(&normalized)];
    for candidate in candidates {
        if candidate.is_empty() {
            continue;
        }
        for field in Field::ALL {
            if let Some(synonym) = field.synonyms().iter().find(|s| normalize_header(s) == candidate) {
                return Some((field, synonym));
            }
        }
    }
    None
}

/// A column of the file: its position and its header as written.
#[derive(Debug, Clone)]
struct Column {
    index: usize,
    name: String,
}

impl Column {
    fn value<'r>(&self, record: &'r csv::StringRecord) -> Option<&'r str> {
        record.get(self.index).filter(|v| !v.is_empty())
    }
}

/// Where a row's timestamp comes from.
#[derive(Debug, Clone)]
enum TimestampSource {
    /// One column holding the whole timestamp.
    Single(Column),
    /// Separate `date` and `time` columns, joined with a space before parsing.
    DateAndTime { date: Column, time: Column, label: String },
}

/// The columns a file's header maps to.
#[derive(Debug, Clone)]
struct Columns {
    timestamp: TimestampSource,
    soc: Column,
    voltage: Column,
    current: Column,
    temperature: Option<Column>,
}

/// Maps the header record to [`Columns`], or explains why it cannot.
fn map_headers(headers: &csv::StringRecord, line: usize) -> Result<Columns, Vec<CsvError>> {
    let mut found: [Vec<(Column, &'static str)>; 5] = Default::default();
    for (index, raw) in headers.iter().enumerate() {
        if let Some((field, synonym)) = classify_header(raw) {
            let name = raw.trim_start_matches('\u{feff}').trim().to_owned();
            if let Some(slot) = found.get_mut(field as usize) {
                slot.push((Column { index, name }, synonym));
            }
        }
    }

    let mut errors = Vec::new();
    let single = |field: Field, errors: &mut Vec<CsvError>| -> Option<Column> {
        let columns = found.get(field as usize).map(Vec::as_slice).unwrap_or(&[]);
        match columns {
            [] => None,
            [(column, _)] => Some(column.clone()),
            [(first, _), (second, _), ..] => {
                errors.push(CsvError::new(
                    line,
                    Some(&second.name),
                    format!(
                        "columns '{}' and '{}' both look like the {} column; keep only one",
                        first.name,
                        second.name,
                        field.name()
                    ),
                ));
                None
            }
        }
    };

    let timestamp = {
        let columns = found.first().map(Vec::as_slice).unwrap_or(&[]);
        let date = columns.iter().find(|(_, s)| *s == "date");
        let time = columns.iter().find(|(_, s)| *s == "time");
        match (columns.len(), date, time) {
            (2, Some((date, _)), Some((time, _))) => Some(TimestampSource::DateAndTime {
                label: format!("{}+{}", date.name, time.name),
                date: date.clone(),
                time: time.clone(),
            }),
            _ => single(Field::Timestamp, &mut errors).map(TimestampSource::Single),
        }
    };
    let soc = single(Field::Soc, &mut errors);
    let voltage = single(Field::Voltage, &mut errors);
    let current = single(Field::Current, &mut errors);
    let temperature = single(Field::Temperature, &mut errors);

    let missing = |field: Field| {
        let accepted = field.synonyms().join(", ");
        CsvError::new(
            line,
            Some(field.name()),
            format!("missing required column '{}' (accepted headers: {accepted})", field.name()),
        )
    };
    // A field named by several columns already has an error from `single`.
    let ambiguous = |field: Field| found.get(field as usize).is_some_and(|c| c.len() > 1);
    for (field, present) in [
        (Field::Timestamp, timestamp.is_some()),
        (Field::Soc, soc.is_some()),
        (Field::Voltage, voltage.is_some()),
        (Field::Current, current.is_some()),
    ] {
        if !present && !ambiguous(field) {
            errors.push(missing(field));
        }
    }

    match (timestamp, soc, voltage, current) {
        (Some(timestamp), Some(soc), Some(voltage), Some(current)) if errors.is_empty() => {
            Ok(Columns { timestamp, soc, voltage, current, temperature })
        }
        _ => Err(errors),
    }
}

/// Picks the delimiter from the first non-blank line: `,` unless that line has none and has `;`
/// (then `;`) or a tab (then tab).
fn sniff_delimiter(text: &str) -> u8 {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.contains(',') {
        b','
    } else if first.contains(';') {
        b';'
    } else if first.contains('\t') {
        b'\t'
    } else {
        b','
    }
}

/// Parses a timestamp into unix milliseconds (UTC).
///
/// Accepted: RFC 3339 with any offset (`2024-05-01T12:00:00+02:00`, `...Z`, fractional seconds
/// allowed; converted to UTC); `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS` without offset, read as
/// UTC (optional fractional seconds); an integer of exactly 10 digits (unix seconds) or 13 digits
/// (unix milliseconds). Sub-millisecond precision is truncated.
fn parse_timestamp(raw: &str) -> Result<i64, String> {
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        let value: i64 = raw.parse().map_err(|_| format!("'{raw}' is not a valid unix timestamp"))?;
        return match raw.len() {
            10 => Ok(value * 1000),
            13 => Ok(value),
            n => Err(format!(
                "integer timestamp '{raw}' has {n} digits; expected unix seconds (10 digits) or milliseconds (13 digits)"
            )),
        };
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(raw) {
        return Ok(dt.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(naive.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "'{raw}' is not a timestamp; use RFC 3339 (2024-05-01T12:00:00Z), 'YYYY-MM-DD HH:MM:SS' (UTC), \
         or unix seconds (10 digits) / milliseconds (13 digits)"
    ))
}

/// Parses a finite number.
fn parse_number(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("'{raw}' is not a finite number")),
        Err(_) => Err(format!("'{raw}' is not a number")),
    }
}

fn check_soc(v: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("state of charge must be between 0 and 100 %, got {v}"))
    }
}

fn check_voltage(v: f64) -> Result<f64, String> {
    if v > 0.0 && v <= 2000.0 {
        Ok(v)
    } else {
        Err(format!("voltage must be greater than 0 and at most 2000 V, got {v}"))
    }
}

fn check_current(v: f64) -> Result<f64, String> {
    if v.abs() <= 10_000.0 {
        Ok(v)
    } else {
        Err(format!("current must be between -10000 and 10000 A, got {v}"))
    }
}

fn check_temperature(v: f64) -> Result<f64, String> {
    if (-60.0..=150.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("temperature must be between -60 and 150 °C, got {v}"))
    }
}

/// Collects errors up to [`MAX_ERRORS`].
struct Errors(Vec<CsvError>);

impl Errors {
    fn push(&mut self, error: CsvError) {
        if self.0.len() < MAX_ERRORS {
            self.0.push(error);
        }
    }

    fn full(&self) -> bool {
        self.0.len() >= MAX_ERRORS
    }
}

/// Turns the reader's byte positions into 1-based line numbers. The `csv` crate's own line counts
/// go wrong around skipped blank lines, and its byte position of a record can point at blank lines
/// it then skipped, so this steps over line breaks before counting. Positions must not decrease.
struct LineTracker<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: usize,
}

impl<'a> LineTracker<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0, line: 1 }
    }

    /// The line on which the record at `position` starts; the last known line without a position.
    fn line_of(&mut self, position: Option<&csv::Position>) -> usize {
        let Some(position) = position else { return self.line };
        let mut start = usize::try_from(position.byte()).unwrap_or(usize::MAX).min(self.bytes.len());
        while let Some(b'\r' | b'\n') = self.bytes.get(start) {
            start += 1;
        }
        if start > self.offset {
            for i in self.offset..start {
                match (self.bytes.get(i), self.bytes.get(i + 1)) {
                    (Some(b'\n'), _) => self.line += 1,
                    (Some(b'\r'), next) if next != Some(&b'\n') => self.line += 1,
                    _ => {}
                }
            }
            self.offset = start;
        }
        self.line
    }
}

/// Reads one required numeric value, pushing an error naming the column when it is absent or bad.
fn required_number(
    record: &csv::StringRecord,
    column: &Column,
    check: fn(f64) -> Result<f64, String>,
    line: usize,
    errors: &mut Errors,
) -> Option<f64> {
    let result = match column.value(record) {
        None => Err("missing value".to_owned()),
        Some(raw) => parse_number(raw).and_then(check),
    };
    result.map_err(|message| errors.push(CsvError::new(line, Some(&column.name), message))).ok()
}

/// Parses one data row. Returns the timestamp when it parsed (for duplicate detection, even if
/// another value is bad) and the sample when every value is valid.
fn parse_row(
    record: &csv::StringRecord,
    columns: &Columns,
    header_len: usize,
    line: usize,
    errors: &mut Errors,
) -> (Option<i64>, Option<BatterySample>) {
    if record.len() > header_len && record.iter().skip(header_len).any(|v| !v.is_empty()) {
        errors.push(CsvError::new(
            line,
            None,
            format!("row has {} fields but the header has {header_len}", record.len()),
        ));
        return (None, None);
    }

    let (raw_ts, ts_label): (Option<Cow<'_, str>>, &str) = match &columns.timestamp {
        TimestampSource::Single(column) => (column.value(record).map(Cow::Borrowed), &column.name),
        TimestampSource::DateAndTime { date, time, label } => {
            let joined = match (date.value(record), time.value(record)) {
                (Some(d), Some(t)) => Some(Cow::Owned(format!("{d} {t}"))),
                _ => None,
            };
            (joined, label)
        }
    };
    let ts = match raw_ts {
        None => Err("missing value".to_owned()),
        Some(raw) => parse_timestamp(&raw),
    };
    let ts = ts.map_err(|message| errors.push(CsvError::new(line, Some(ts_label), message))).ok();

    let soc = required_number(record, &columns.soc, check_soc, line, errors);
    let voltage = required_number(record, &columns.voltage, check_voltage, line, errors);
    let current = required_number(record, &columns.current, check_current, line, errors);
    let temperature = match columns.temperature.as_ref().and_then(|c| c.value(record).map(|raw| (c, raw))) {
        None => Ok(None),
        Some((column, raw)) => parse_number(raw)
            .and_then(check_temperature)
            .map(Some)
            .map_err(|message| errors.push(CsvError::new(line, Some(&column.name), message))),
    };

    let sample = match (ts, soc, voltage, current, temperature) {
        (Some(ts_ms), Some(soc_pct), Some(voltage_v), Some(current_a), Ok(temperature_c)) => {
            Some(BatterySample { ts_ms, soc_pct, voltage_v, current_a, temperature_c })
        }
        _ => None,
    };
    (ts, sample)
}

/// Parses and validates an uploaded battery CSV.
///
/// **Header** (first non-blank line): columns are matched by name, in any order, case-insensitively,
/// ignoring surrounding spaces, treating `_`/`-` like spaces and ignoring a trailing unit such as
/// `(V)`, `[%]` or `%`. Accepted names:
/// - timestamp: `timestamp`, `ts`, `time`, `datetime`, `date`, `date_time` — or a `date` column
///   plus a `time` column, joined with a space;
/// - state of charge (%): `soc`, `soc_pct`, `soc_percent`, `state_of_charge`, `state of charge`,
///   `soc (%)`;
/// - voltage (V): `voltage`, `voltage_v`, `volts`, `v`;
/// - current (A, positive = charging): `current`, `current_a`, `amps`, `i`;
/// - temperature (°C, optional): `temperature`, `temperature_c`, `temp`, `temp_c`.
///
/// Other columns are ignored. Two columns naming the same field are an error, as is a missing
/// required column (line 1, column = the canonical name). The delimiter is `,`, or `;` / tab when
/// the header line has no comma. A UTF-8 byte order mark is ignored.
///
/// **Rows**: timestamps as described for RFC 3339 / `YYYY-MM-DD HH:MM:SS` (UTC) /
/// `YYYY-MM-DDTHH:MM:SS` (UTC) / 10-digit unix seconds / 13-digit unix milliseconds. Values must be
/// finite numbers with SoC in 0..=100, voltage in (0, 2000], |current| ≤ 10000 and temperature in
/// −60..=150; an empty temperature is `None`. Blank rows (all fields empty) are skipped; a row with
/// extra non-empty fields beyond the header is an error. Two rows with the same timestamp (after
/// conversion to UTC milliseconds) are an error on the later line. At most [`MAX_ROWS`] data rows.
/// An empty file, or a header without data rows, is an error.
///
/// **Errors** name the 1-based line (header = line 1) and the column as written in the header.
/// Parsing stops once [`MAX_ERRORS`] errors are collected; all collected errors are returned, sorted
/// by line. On success the samples are returned sorted by timestamp (rows may arrive in any order).
pub fn parse_csv(text: &str) -> Result<Vec<BatterySample>, Vec<CsvError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(vec![CsvError::new(1, None, "the file is empty; expected a header line and data rows")]);
    }

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sniff_delimiter(text))
        .flexible(true)
        .trim(csv::Trim::All)
        .has_headers(true)
        .from_reader(text.as_bytes());

    let mut lines = LineTracker::new(text.as_bytes());
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            return Err(vec![CsvError::new(lines.line_of(e.position()), None, format!("unreadable header: {e}"))])
        }
    };
    let header_line = lines.line_of(headers.position());
    let columns = map_headers(&headers, header_line)?;

    let mut errors = Errors(Vec::new());
    let mut samples = Vec::new();
    let mut timestamps: Vec<(i64, usize)> = Vec::new();
    let mut data_rows = 0usize;
    let mut complete = true;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = lines.line_of(e.position());
                errors.push(CsvError::new(line, None, format!("malformed CSV: {e}")));
                complete = false;
                break;
            }
        }
        let line = lines.line_of(record.position());
        if record.iter().all(str::is_empty) {
            continue;
        }
        data_rows += 1;
        if data_rows > MAX_ROWS {
            errors.push(CsvError::new(line, None, format!("too many rows: at most {MAX_ROWS} data rows are accepted")));
            complete = false;
            break;
        }
        let (ts, sample) = parse_row(&record, &columns, headers.len(), line, &mut errors);
        if let Some(ts) = ts {
            timestamps.push((ts, line));
        }
        if let Some(sample) = sample {
            samples.push(sample);
        }
        if errors.full() {
            complete = false;
            break;
        }
    }

    if complete && data_rows == 0 {
        errors.push(CsvError::new(header_line, None, "the file has a header but no data rows"));
    }

    if complete {
        timestamps.sort_unstable();
        let ts_label = match &columns.timestamp {
            TimestampSource::Single(column) => column.name.as_str(),
            TimestampSource::DateAndTime { label, .. } => label.as_str(),
        };
        let mut first_line_of_group: Option<(i64, usize)> = None;
        for &(ts, line) in &timestamps {
            match first_line_of_group {
                Some((group_ts, first_line)) if group_ts == ts => errors.push(CsvError::new(
                    line,
                    Some(ts_label),
                    format!("duplicate timestamp {} (first seen on line {first_line})", describe_ts(ts)),
                )),
                _ => first_line_of_group = Some((ts, line)),
            }
        }
    }

    let mut errors = errors.0;
    if errors.is_empty() {
        samples.sort_by_key(|s| s.ts_ms);
        Ok(samples)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// Renders unix milliseconds as RFC 3339 UTC for messages.
fn describe_ts(ts_ms: i64) -> String {
    DateTime::from_timestamp_millis(ts_ms).map_or_else(|| ts_ms.to_string(), |dt| dt.to_rfc3339())
}

/// Statistics over a series of [`BatterySample`]s; see [`summarize`] for how each is computed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BatterySummary {
    /// Number of samples.
    pub samples: usize,
    /// Earliest sample's time (RFC 3339 UTC).
    #[serde(rename = "from", serialize_with = "crate::time::as_rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub from_ms: i64,
    /// Latest sample's time (RFC 3339 UTC).
    #[serde(rename = "to", serialize_with = "crate::time::as_rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub to_ms: i64,
    /// Lowest state of charge seen, %.
    pub soc_min_pct: f64,
    /// Highest state of charge seen, %.
    pub soc_max_pct: f64,
    /// Time-weighted mean state of charge, %.
    pub soc_mean_pct: f64,
    /// Sum of |ΔSoC| between consecutive samples divided by 200.
    pub equivalent_full_cycles: f64,
    /// Energy put into the battery (integral of positive V×I), kWh.
    pub energy_in_kwh: f64,
    /// Energy taken out of the battery (integral of negative V×I, as a positive number), kWh.
    pub energy_out_kwh: f64,
    /// Seconds spent in intervals that start below 20 % SoC.
    pub seconds_below_20_pct: f64,
    /// Highest temperature seen, °C, if any sample has one.
    pub temperature_max_c: Option<f64>,
}

/// Integrates power that varies linearly from `p0` to `p1` watts over `dt_s` seconds (one trapezoid)
/// and returns `(positive part, magnitude of negative part)` in watt-seconds. When the sign changes
/// inside the interval the trapezoid is split at the zero crossing of the line.
fn split_trapezoid(p0: f64, p1: f64, dt_s: f64) -> (f64, f64) {
    if p0 >= 0.0 && p1 >= 0.0 {
        ((p0 + p1) / 2.0 * dt_s, 0.0)
    } else if p0 <= 0.0 && p1 <= 0.0 {
        (0.0, -(p0 + p1) / 2.0 * dt_s)
    } else {
        // Opposite strict signs, so p0 - p1 != 0.
        let t_zero = dt_s * p0 / (p0 - p1);
        let first = p0 * t_zero / 2.0;
        let second = p1 * (dt_s - t_zero) / 2.0;
        if p0 > 0.0 {
            (first, -second)
        } else {
            (second, -first)
        }
    }
}

/// Summarizes a series of samples; `None` when it is empty.
///
/// The samples are expected sorted by timestamp (as [`parse_csv`] returns them); an unsorted slice is
/// sorted on a copy first. Intervals are the spans between consecutive samples. Semantics:
///
/// - `samples`, `from_ms`/`to_ms` (first/last timestamp), `soc_min_pct`/`soc_max_pct` and
///   `temperature_max_c` (`None` when no sample has a temperature) cover every sample.
/// - `equivalent_full_cycles` = Σ |SoC(i+1) − SoC(i)| over all consecutive samples, divided by 200
///   (one full cycle is 0→100→0 %). Gaps count here: SoC that changed across a gap was still cycled.
/// - `energy_in_kwh` / `energy_out_kwh`: trapezoidal integration of power P = V×I over time. For each
///   interval P is taken as linear between the two samples' V×I; the positive area (charging) goes to
///   `energy_in_kwh`, the negative area (discharging) to `energy_out_kwh` as a positive number,
///   splitting the interval at the zero crossing when the sign changes. W·s / 3.6e6 = kWh.
/// - `seconds_below_20_pct`: sum of the durations of intervals whose starting SoC is < 20 %.
/// - `soc_mean_pct`: time-weighted mean, Σ ((SoC(i) + SoC(i+1)) / 2 × Δt) / Σ Δt. With a single
///   sample, or when no interval qualifies, it is the plain mean of the samples' SoC.
///
/// Intervals longer than [`GAP_LIMIT_MS`] (6 h), or of zero length, are gaps: they add nothing to
/// the energies, the time below 20 % or the time-weighted mean. All arithmetic is sequential f64 in
/// timestamp order, so the result is deterministic.
pub fn summarize(samples: &[BatterySample]) -> Option<BatterySummary> {
    if samples.is_empty() {
        return None;
    }
    let sorted: Cow<'_, [BatterySample]> =
        if samples.iter().zip(samples.iter().skip(1)).all(|(a, b)| a.ts_ms <= b.ts_ms) {
            Cow::Borrowed(samples)
        } else {
            let mut copy = samples.to_vec();
            copy.sort_by_key(|s| s.ts_ms);
            Cow::Owned(copy)
        };
    let samples: &[BatterySample] = &sorted;
    let (first, last) = (samples.first()?, samples.last()?);

    let mut soc_min = f64::INFINITY;
    let mut soc_max = f64::NEG_INFINITY;
    let mut soc_sum = 0.0;
    let mut temperature_max: Option<f64> = None;
    for s in samples {
        soc_min = soc_min.min(s.soc_pct);
        soc_max = soc_max.max(s.soc_pct);
        soc_sum += s.soc_pct;
        if let Some(t) = s.temperature_c {
            temperature_max = Some(temperature_max.map_or(t, |m| m.max(t)));
        }
    }

    let mut throughput = 0.0;
    let mut in_ws = 0.0;
    let mut out_ws = 0.0;
    let mut below_s = 0.0;
    let mut weighted_soc = 0.0;
    let mut covered_s = 0.0;
    for pair in samples.windows(2) {
        let (a, b) = match pair {
            [a, b] => (a, b),
            _ => continue,
        };
        throughput += (b.soc_pct - a.soc_pct).abs();
        let dt_ms = b.ts_ms.saturating_sub(a.ts_ms);
        if dt_ms <= 0 || dt_ms > GAP_LIMIT_MS {
            continue;
        }
        let dt_s = dt_ms as f64 / 1000.0;
        weighted_soc += (a.soc_pct + b.soc_pct) / 2.0 * dt_s;
        covered_s += dt_s;
        if a.soc_pct < LOW_SOC_PCT {
            below_s += dt_s;
        }
        let (e_in, e_out) = split_trapezoid(a.voltage_v * a.current_a, b.voltage_v * b.current_a, dt_s);
        in_ws += e_in;
        out_ws += e_out;
    }

    let soc_mean = if covered_s > 0.0 { weighted_soc / covered_s } else { soc_sum / samples.len() as f64 };

    Some(BatterySummary {
        samples: samples.len(),
        from_ms: first.ts_ms,
        to_ms: last.ts_ms,
        soc_min_pct: soc_min,
        soc_max_pct: soc_max,
        soc_mean_pct: soc_mean,
        equivalent_full_cycles: throughput / 200.0,
        energy_in_kwh: in_ws / 3_600_000.0,
        energy_out_kwh: out_ws / 3_600_000.0,
        seconds_below_20_pct: below_s,
        temperature_max_c: temperature_max,
    })
}

#[cfg(test)]
mod tests;
