//! SVG chart of a battery's state of charge over time, with its voltage on a second axis
//! ([`render_soc_chart`]).
//!
//! This module owns the chart's layout, the time-axis labelling, the downsampling of long series and
//! the SVG/XML text it emits. It is pure: samples in, a standalone SVG document out.

use std::fmt::Write as _;

use chrono::DateTime;

use super::battery::{BatterySample, GAP_LIMIT_MS, LOW_SOC_PCT};

/// Width of the SVG in pixels.
pub const WIDTH: u32 = 800;
/// Height of the SVG in pixels.
pub const HEIGHT: u32 = 320;
/// Most points drawn per line (SoC and voltage each); longer series are downsampled.
pub const MAX_POINTS_PER_LINE: usize = 1000;

/// Longer titles are cut and end in `…` so they stay on the chart.
const MAX_TITLE_CHARS: usize = 80;

/// Plot area, in SVG user units.
const PLOT_LEFT: f64 = 56.0;
const PLOT_RIGHT: f64 = 716.0;
const PLOT_TOP: f64 = 44.0;
const PLOT_BOTTOM: f64 = 272.0;

const SOC_COLOR: &str = "#1f77b4";
const VOLTAGE_COLOR: &str = "#ff7f0e";
const LOW_SOC_COLOR: &str = "#d62728";

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Candidate spacings of time labels, smallest first; labels fall on UTC multiples of the spacing.
const TICK_STEPS_MS: [i64; 31] = [
    SECOND,
    2 * SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    4 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    3 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    60 * DAY,
    91 * DAY,
    182 * DAY,
    365 * DAY,
    730 * DAY,
    1826 * DAY,
    3652 * DAY,
];

/// Renders `samples` as a standalone SVG document (800×320, with a `viewBox`).
///
/// - State of charge is a polyline against a 0–100 % left axis with gridlines every 20 % and a
///   dashed red line at 20 %. Values outside 0..=100 are clamped to the axis.
/// - Voltage is a thinner polyline against a right axis spanning its own min..max (padded by
///   ±0.5 V when constant), labelled at min, middle and max.
/// - The time axis is UTC with 4–6 labels: on round multiples of a step chosen for the span
///   (seconds … years) when one gives 4–6 labels, otherwise 5 evenly spaced ones; the label format
///   follows the step (`HH:MM:SS`, `HH:MM`, `DD Mon HH:MM` across days, `YYYY-MM-DD`, `YYYY`).
/// - Each line is downsampled to at most [`MAX_POINTS_PER_LINE`] points: the first and last
///   samples, then the minimum and maximum of each of 499 equal-count buckets in time order, so
///   spikes survive. Lines break where consecutive samples are more than
///   [`GAP_LIMIT_MS`] apart; an isolated point is drawn as a dot.
/// - Samples need not be sorted; non-finite values are left out of their line.
/// - `title` is cut to 80 characters (ending in `…`) and XML-escaped (characters XML cannot carry
///   are dropped). Coordinates are printed
///   with at most 2 decimals.
/// - Without plottable samples the SVG shows the title and "no data".
pub fn render_soc_chart(samples: &[BatterySample], title: &str) -> String {
    let title = escape_xml(&shorten(title, MAX_TITLE_CHARS));
    let mut sorted: Vec<&BatterySample> = samples.iter().collect();
    if !sorted.iter().zip(sorted.iter().skip(1)).all(|(a, b)| a.ts_ms <= b.ts_ms) {
        sorted.sort_by_key(|s| s.ts_ms);
    }
    let soc: Vec<(i64, f64)> =
        sorted.iter().filter(|s| s.soc_pct.is_finite()).map(|s| (s.ts_ms, s.soc_pct.clamp(0.0, 100.0))).collect();
    let voltage: Vec<(i64, f64)> =
        sorted.iter().filter(|s| s.voltage_v.is_finite()).map(|s| (s.ts_ms, s.voltage_v)).collect();

    let mut out = String::with_capacity(64 * 1024);
    open_svg(&mut out, &title);
    let (Some(t_first), Some(t_last)) = (
        soc.first().map(|p| p.0).into_iter().chain(voltage.first().map(|p| p.0)).min(),
        soc.last().map(|p| p.0).into_iter().chain(voltage.last().map(|p| p.0)).max(),
    ) else {
        let _ =
            write!(out, r##"<text x="400" y="170" text-anchor="middle" font-size="16" fill="#777777">no data</text>"##);
        out.push_str("</svg>\n");
        return out;
    };

    let (t0, t1) = if t_first == t_last {
        (t_first.saturating_sub(30 * MINUTE), t_last.saturating_add(30 * MINUTE))
    } else {
        (t_first, t_last)
    };
    let span = (i128::from(t1) - i128::from(t0)) as f64;
    let x_of = |ts: i64| PLOT_LEFT + (i128::from(ts) - i128::from(t0)) as f64 / span * (PLOT_RIGHT - PLOT_LEFT);
    let soc_y = |pct: f64| PLOT_BOTTOM - pct / 100.0 * (PLOT_BOTTOM - PLOT_TOP);

    // State-of-charge gridlines and left labels.
    out.push_str(r##"<g class="grid" stroke="#e5e5e5" stroke-width="1">"##);
    for pct in [0.0, 20.0, 40.0, 60.0, 80.0, 100.0] {
        let y = num(soc_y(pct));
        let _ = write!(out, r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}"/>"#, num(PLOT_LEFT), num(PLOT_RIGHT));
    }
    out.push_str("</g>\n");
    out.push_str(r##"<g class="soc-axis" font-size="11" fill="#444444" text-anchor="end">"##);
    for pct in [0.0, 20.0, 40.0, 60.0, 80.0, 100.0] {
        let _ = write!(out, r#"<text x="{}" y="{}">{}%</text>"#, num(PLOT_LEFT - 6.0), num(soc_y(pct) + 4.0), num(pct));
    }
    out.push_str("</g>\n");
    let low = num(soc_y(LOW_SOC_PCT));
    let _ = writeln!(
        out,
        r#"<line class="low-soc" x1="{}" y1="{low}" x2="{}" y2="{low}" stroke="{LOW_SOC_COLOR}" stroke-width="1" stroke-dasharray="6 4"/>"#,
        num(PLOT_LEFT),
        num(PLOT_RIGHT)
    );

    // Time axis.
    let (ticks, format) = time_ticks(t0, t1);
    out.push_str(r##"<g class="time-axis" font-size="11" fill="#444444" text-anchor="middle">"##);
    for ts in ticks {
        let x = num(x_of(ts));
        let label = DateTime::from_timestamp_millis(ts).map(|d| d.format(format).to_string()).unwrap_or_default();
        let _ = write!(
            out,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#999999"/><text class="tick" x="{x}" y="{}">{}</text>"##,
            num(PLOT_BOTTOM),
            num(PLOT_BOTTOM + 5.0),
            num(PLOT_BOTTOM + 18.0),
            escape_xml(&label)
        );
    }
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="11" fill="#666666" text-anchor="middle">Time (UTC)</text>"##,
        num((PLOT_LEFT + PLOT_RIGHT) / 2.0),
        num(PLOT_BOTTOM + 38.0)
    );
    let mid_y = num((PLOT_TOP + PLOT_BOTTOM) / 2.0);
    let _ = writeln!(
        out,
        r##"<text x="14" y="{mid_y}" font-size="11" fill="{SOC_COLOR}" text-anchor="middle" transform="rotate(-90 14 {mid_y})">State of charge (%)</text>"##
    );

    // Voltage axis and line.
    let v_min = voltage.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let v_max = voltage.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if v_min.is_finite() && v_max.is_finite() {
        let (v_lo, v_hi) = if v_max - v_min < 1e-9 { (v_min - 0.5, v_max + 0.5) } else { (v_min, v_max) };
        let v_y = |v: f64| PLOT_BOTTOM - (v - v_lo) / (v_hi - v_lo) * (PLOT_BOTTOM - PLOT_TOP);
        out.push_str(r##"<g class="voltage-axis" font-size="11" fill="#444444" text-anchor="start">"##);
        for v in [v_lo, (v_lo + v_hi) / 2.0, v_hi] {
            let y = v_y(v);
            let _ = write!(
                out,
                r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999999"/><text x="{}" y="{}">{} V</text>"##,
                num(PLOT_RIGHT),
                num(y),
                num(PLOT_RIGHT + 4.0),
                num(y),
                num(PLOT_RIGHT + 7.0),
                num(y + 4.0),
                num(v)
            );
        }
        out.push_str("</g>\n");
        let x = num(f64::from(WIDTH) - 8.0);
        let _ = writeln!(
            out,
            r##"<text x="{x}" y="{mid_y}" font-size="11" fill="{VOLTAGE_COLOR}" text-anchor="middle" transform="rotate(90 {x} {mid_y})">Voltage (V)</text>"##
        );
        draw_line(&mut out, "voltage", VOLTAGE_COLOR, 1.0, &voltage, &x_of, &v_y);
    }
    draw_line(&mut out, "soc", SOC_COLOR, 2.0, &soc, &x_of, &soc_y);

    // Plot frame and legend.
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999999" stroke-width="1"/>"##,
        num(PLOT_LEFT),
        num(PLOT_TOP),
        num(PLOT_RIGHT - PLOT_LEFT),
        num(PLOT_BOTTOM - PLOT_TOP)
    );
    let _ = writeln!(
        out,
        r##"<g class="legend" font-size="11" fill="#444444"><line x1="540" y1="32" x2="560" y2="32" stroke="{SOC_COLOR}" stroke-width="2"/><text x="564" y="36">SoC</text><line x1="604" y1="32" x2="624" y2="32" stroke="{VOLTAGE_COLOR}" stroke-width="1"/><text x="628" y="36">Voltage</text><line x1="674" y1="32" x2="694" y2="32" stroke="{LOW_SOC_COLOR}" stroke-dasharray="6 4"/><text x="698" y="36">20%</text></g>"##
    );
    out.push_str("</svg>\n");
    out
}

/// Writes the SVG start tag, accessible title, background and visible title.
fn open_svg(out: &mut String, escaped_title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" role="img">"#
    );
    let _ = writeln!(out, "<title>{escaped_title}</title>");
    let _ = writeln!(out, r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##);
    let _ = writeln!(
        out,
        r##"<text x="{}" y="22" font-size="14" font-weight="bold" fill="#222222">{escaped_title}</text>"##,
        num(PLOT_LEFT)
    );
}

/// Draws one series as polylines (one per stretch without gaps; lone points as dots).
fn draw_line(
    out: &mut String,
    class: &str,
    color: &str,
    stroke_width: f64,
    series: &[(i64, f64)],
    x_of: &dyn Fn(i64) -> f64,
    y_of: &dyn Fn(f64) -> f64,
) {
    for segment in segments(series, MAX_POINTS_PER_LINE) {
        match segment.as_slice() {
            [] => {}
            [(ts, value)] => {
                let _ = writeln!(
                    out,
                    r#"<circle class="{class}" cx="{}" cy="{}" r="{}" fill="{color}"/>"#,
                    num(x_of(*ts)),
                    num(y_of(*value)),
                    num(stroke_width + 0.5)
                );
            }
            points => {
                let _ = write!(
                    out,
                    r#"<polyline class="{class}" fill="none" stroke="{color}" stroke-width="{}" stroke-linejoin="round" points=""#,
                    num(stroke_width)
                );
                for (i, (ts, value)) in points.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{},{}", num(x_of(*ts)), num(y_of(*value)));
                }
                out.push_str("\"/>\n");
            }
        }
    }
}

/// Downsamples a time-sorted series to at most `max_points` points and splits it where consecutive
/// original samples are more than [`GAP_LIMIT_MS`] apart.
fn segments(series: &[(i64, f64)], max_points: usize) -> Vec<Vec<(i64, f64)>> {
    // gaps_before[i]: how many gaps lie between series[0] and series[i].
    let mut gaps_before = Vec::with_capacity(series.len());
    let mut gaps = 0usize;
    let mut previous: Option<i64> = None;
    for &(ts, _) in series {
        if previous.is_some_and(|p| ts.saturating_sub(p) > GAP_LIMIT_MS) {
            gaps += 1;
        }
        gaps_before.push(gaps);
        previous = Some(ts);
    }

    let mut result: Vec<Vec<(i64, f64)>> = Vec::new();
    let mut last_gaps: Option<usize> = None;
    for index in downsample(series, max_points) {
        let (Some(&point), Some(&gaps)) = (series.get(index), gaps_before.get(index)) else { continue };
        match result.last_mut() {
            Some(current) if last_gaps == Some(gaps) => current.push(point),
            _ => result.push(vec![point]),
        }
        last_gaps = Some(gaps);
    }
    result
}

/// Indices (ascending) of the points kept: all when there are at most `max_points`; otherwise the
/// first and last, plus the index of the minimum and of the maximum value in each of
/// `(max_points - 2) / 2` buckets of (nearly) equal sample count between them.
fn downsample(series: &[(i64, f64)], max_points: usize) -> Vec<usize> {
    let n = series.len();
    if n <= max_points.max(4) {
        return (0..n).collect();
    }
    let buckets = (max_points.max(4) - 2) / 2;
    let inner = n - 2;
    let mut kept = Vec::with_capacity(max_points);
    kept.push(0);
    for bucket in 0..buckets {
        let lo = 1 + bucket * inner / buckets;
        let hi = 1 + (bucket + 1) * inner / buckets;
        let Some(slice) = series.get(lo..hi) else { continue };
        let mut min_at: Option<(usize, f64)> = None;
        let mut max_at: Option<(usize, f64)> = None;
        for (offset, &(_, value)) in slice.iter().enumerate() {
            if min_at.is_none_or(|(_, m)| value < m) {
                min_at = Some((lo + offset, value));
            }
            if max_at.is_none_or(|(_, m)| value > m) {
                max_at = Some((lo + offset, value));
            }
        }
        if let (Some((a, _)), Some((b, _))) = (min_at, max_at) {
            kept.push(a.min(b));
            if a != b {
                kept.push(a.max(b));
            }
        }
    }
    kept.push(n - 1);
    kept
}

/// Time-axis label positions (unix ms) for the range `t0..=t1` (`t0 < t1`) and their `strftime`
/// format.
fn time_ticks(t0: i64, t1: i64) -> (Vec<i64>, &'static str) {
    let (lo, hi) = (i128::from(t0), i128::from(t1));
    for step in TICK_STEPS_MS {
        let step = i128::from(step);
        let first = lo.div_euclid(step) * step + if lo.rem_euclid(step) == 0 { 0 } else { step };
        if first > hi {
            continue;
        }
        let count = (hi - first) / step + 1;
        if (4..=6).contains(&count) {
            let ticks = (0..count).filter_map(|k| i64::try_from(first + k * step).ok()).collect();
            return (ticks, label_format(step, t0, t1));
        }
    }
    let span = hi - lo;
    let ticks = (0..5).filter_map(|k| i64::try_from(lo + span * k / 4).ok()).collect();
    let format = if span < 10 * i128::from(SECOND) { "%H:%M:%S%.3f" } else { label_format(span / 5, t0, t1) };
    (ticks, format)
}

/// The label format for labels `step_ms` apart on an axis from `t0` to `t1`.
fn label_format(step_ms: i128, t0: i64, t1: i64) -> &'static str {
    let same_day = match (DateTime::from_timestamp_millis(t0), DateTime::from_timestamp_millis(t1)) {
        (Some(a), Some(b)) => a.date_naive() == b.date_naive(),
        _ => false,
    };
    if step_ms < i128::from(MINUTE) {
        if same_day {
            "%H:%M:%S"
        } else {
            "%d %b %H:%M:%S"
        }
    } else if step_ms < i128::from(DAY) {
        if same_day {
            "%H:%M"
        } else {
            "%d %b %H:%M"
        }
    } else if step_ms < 365 * i128::from(DAY) {
        "%Y-%m-%d"
    } else {
        "%Y"
    }
}

/// Formats a coordinate or value with at most 2 decimals and no trailing zeros (`-0` becomes `0`,
/// non-finite values `0`).
fn num(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_owned();
    }
    let rounded = (value * 100.0).round() / 100.0;
    if rounded == 0.0 {
        "0".to_owned()
    } else {
        format!("{rounded}")
    }
}

/// `text` cut to at most `max` characters, the last being `…` when it was cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        text.chars().take(max.saturating_sub(1)).chain(std::iter::once('…')).collect()
    }
}

/// Escapes text for XML content and attribute values, dropping characters XML 1.0 cannot carry.
fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

    fn series(n: usize, step_ms: i64) -> Vec<BatterySample> {
        (0..n)
            .map(|i| BatterySample {
                ts_ms: T0 + i as i64 * step_ms,
                soc_pct: 50.0 + 30.0 * ((i as f64) / 500.0).sin(),
                voltage_v: 48.0 + ((i as f64) / 300.0).cos(),
                current_a: 1.0,
                temperature_c: None,
            })
            .collect()
    }

    /// Minimal XML well-formedness check: one root element, balanced and properly nested tags,
    /// quoted and unique attributes, only known entities, no stray `<` or `&`.
    fn check_well_formed(xml: &str) -> Result<(), String> {
        fn check_text(text: &str) -> Result<(), String> {
            let mut rest = text;
            while let Some(at) = rest.find('&') {
                let after = &rest[at + 1..];
                let end = after.find(';').ok_or_else(|| format!("unterminated entity in {text:?}"))?;
                let entity = &after[..end];
                let ok = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
                    || entity
                        .strip_prefix("#x")
                        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                    || entity.strip_prefix('#').is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return Err(format!("bad entity &{entity}; in {text:?}"));
                }
                rest = &after[end + 1..];
            }
            if text.contains('<') {
                return Err(format!("raw '<' in {text:?}"));
            }
            Ok(())
        }
        fn is_name(name: &str) -> bool {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
                && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        }

        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = xml.trim_start();
        if let Some(after) = rest.strip_prefix("<?xml") {
            rest = &after[after.find("?>").ok_or("unterminated declaration")? + 2..];
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = &after[after.find("-->").ok_or("unterminated comment")? + 3..];
            } else if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').ok_or("unterminated end tag")?;
                let name = after[..end].trim_end();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                rest = &after[end + 1..];
            } else if let Some(after) = rest.strip_prefix('<') {
                // Find the closing '>' outside quoted attribute values.
                let mut quote = None;
                let mut end = None;
                for (i, c) in after.char_indices() {
                    match (quote, c) {
                        (None, '"' | '\'') => quote = Some(c),
                        (Some(q), c) if c == q => quote = None,
                        (None, '>') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or("unterminated start tag")?;
                let mut inner = &after[..end];
                let self_closing = inner.ends_with('/');
                if self_closing {
                    inner = &inner[..inner.len() - 1];
                }
                let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
                let name = &inner[..name_end];
                if !is_name(name) {
                    return Err(format!("bad element name {name:?}"));
                }
                let mut attrs = inner[name_end..].trim_start();
                let mut seen = Vec::new();
                while !attrs.is_empty() {
                    let eq = attrs.find('=').ok_or_else(|| format!("attribute without value in <{name}>"))?;
                    let attr = attrs[..eq].trim();
                    if !is_name(attr) || seen.contains(&attr) {
                        return Err(format!("bad or repeated attribute {attr:?} in <{name}>"));
                    }
                    seen.push(attr);
                    let value_part = attrs[eq + 1..].trim_start();
                    let q = value_part.chars().next().filter(|c| *c == '"' || *c == '\'');
                    let q = q.ok_or_else(|| format!("unquoted attribute {attr} in <{name}>"))?;
                    let close = value_part[1..].find(q).ok_or("unterminated attribute")?;
                    check_text(&value_part[1..1 + close])?;
                    let after_value = &value_part[1 + close + 1..];
                    if !after_value.is_empty() && !after_value.starts_with(char::is_whitespace) {
                        return Err(format!("missing space after attribute {attr} in <{name}>"));
                    }
                    attrs = after_value.trim_start();
                }
                if stack.is_empty() {
                    roots += 1;
                }
                if !self_closing {
                    stack.push(name);
                }
                rest = &after[end + 1..];
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = &rest[..end];
                if stack.is_empty() && !text.trim().is_empty() {
                    return Err(format!("text outside the root: {text:?}"));
                }
                check_text(text)?;
                rest = &rest[end..];
            }
        }
        match (stack.as_slice(), roots) {
            ([], 1) => Ok(()),
            ([], n) => Err(format!("{n} root elements")),
            (open, _) => Err(format!("unclosed elements {open:?}")),
        }
    }

    /// Points of every polyline with the given class, in document order.
    fn polyline_points(svg: &str, class: &str) -> Vec<Vec<(f64, f64)>> {
        let marker = format!(r#"<polyline class="{class}""#);
        svg.match_indices(&marker)
            .map(|(at, _)| {
                let tag = &svg[at..at + svg[at..].find("/>").unwrap()];
                let points = &tag[tag.find("points=\"").unwrap() + 8..tag.len() - 1];
                points
                    .split(' ')
                    .map(|pair| {
                        let (x, y) = pair.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    fn tick_labels(svg: &str) -> Vec<String> {
        svg.match_indices(r#"<text class="tick""#)
            .map(|(at, _)| {
                let start = at + svg[at..].find('>').unwrap() + 1;
                svg[start..start + svg[start..].find("</text>").unwrap()].to_owned()
            })
            .collect()
    }

    #[test]
    fn well_formedness_checker_rejects_broken_xml() {
        assert!(check_well_formed(r#"<a x="1"><b/>t &amp; u</a>"#).is_ok());
        for bad in
            ["<a><b></a></b>", "<a>", "<a/><b/>", "<a>x & y</a>", r#"<a x="1" x="2"/>"#, "<a x=1/>", "<a>&foo;</a>"]
        {
            assert!(check_well_formed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ten_thousand_samples_are_downsampled_and_spikes_survive() {
        let mut samples = series(10_000, 60_000);
        samples[4321].soc_pct = 100.0;
        samples[7654].soc_pct = 0.0;
        let svg = render_soc_chart(&samples, "Pack A");
        check_well_formed(&svg).unwrap();
        let soc = polyline_points(&svg, "soc");
        assert_eq!(soc.len(), 1);
        assert!((900..=MAX_POINTS_PER_LINE).contains(&soc[0].len()), "{}", soc[0].len());
        let ys: Vec<f64> = soc[0].iter().map(|p| p.1).collect();
        assert!(ys.contains(&PLOT_TOP), "spike to 100% lost");
        assert!(ys.contains(&PLOT_BOTTOM), "dip to 0% lost");
        assert!(soc[0].windows(2).all(|w| w[0].0 <= w[1].0), "x must not go backwards");
        assert_eq!(soc[0].first().unwrap().0, PLOT_LEFT);
        assert_eq!(soc[0].last().unwrap().0, PLOT_RIGHT);
        let voltage = polyline_points(&svg, "voltage");
        assert_eq!(voltage.len(), 1);
        assert!(voltage[0].len() <= MAX_POINTS_PER_LINE);
        assert!(svg.contains(r#"stroke-dasharray="6 4""#));
        for pct in ["0%", "20%", "40%", "60%", "80%", "100%"] {
            assert!(svg.contains(&format!(">{pct}</text>")), "{pct}");
        }
        assert!(svg.starts_with("<svg") && svg.contains(r#"viewBox="0 0 800 320""#));
    }

    #[test]
    fn small_series_keeps_every_point() {
        let svg = render_soc_chart(&series(50, 60_000), "x");
        assert_eq!(polyline_points(&svg, "soc")[0].len(), 50);
        assert_eq!(polyline_points(&svg, "voltage")[0].len(), 50);
    }

    #[test]
    fn title_is_escaped() {
        let svg = render_soc_chart(&series(10, 1000), "Pack <&> \"1\" 'b'\u{1}");
        check_well_formed(&svg).unwrap();
        assert!(svg.contains("Pack &lt;&amp;&gt; &quot;1&quot; &apos;b&apos;</title>"));
        assert!(!svg.contains("<&>"));
        let empty = render_soc_chart(&[], "<&>");
        check_well_formed(&empty).unwrap();
        assert!(empty.contains("&lt;&amp;&gt;"));
        let long = render_soc_chart(&[], &"é".repeat(200));
        assert!(long.contains(&format!("<title>{}…</title>", "é".repeat(79))));
    }

    #[test]
    fn empty_input_says_no_data() {
        let svg = render_soc_chart(&[], "");
        check_well_formed(&svg).unwrap();
        assert!(svg.contains(">no data</text>"));
        assert!(!svg.contains("<polyline"));
        let nan =
            BatterySample { ts_ms: T0, soc_pct: f64::NAN, voltage_v: f64::NAN, current_a: 0.0, temperature_c: None };
        assert!(render_soc_chart(&[nan], "t").contains("no data"));
    }

    #[test]
    fn time_labels_fit_the_span() {
        let cases: [(i64, &str); 10] = [
            (2_500, "12:00:00.000"),
            (10 * SECOND, "12:00:00"),
            (5 * MINUTE, "12:00"),
            (3 * HOUR, "12:00"),
            (15 * HOUR, "01 May 12:00"),
            (2 * DAY, "01 May 12:00"),
            (12 * HOUR + 20 * SECOND, "01 May 12:00"),
            (90 * DAY, "2024-"),
            (3 * 365 * DAY, "20"),
            (30 * 365 * DAY, "20"),
        ];
        for (span, prefix) in cases {
            let samples = [series(1, 0), vec![BatterySample { ts_ms: T0 + span, ..series(1, 0)[0].clone() }]].concat();
            let svg = render_soc_chart(&samples, "t");
            check_well_formed(&svg).unwrap();
            let labels = tick_labels(&svg);
            assert!((4..=6).contains(&labels.len()), "{span}: {labels:?}");
            assert!(labels.iter().any(|l| l.starts_with(prefix)), "{span}: {labels:?}");
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(unique, labels, "{span}: repeated labels");
        }
        // Seconds-apart labels across midnight carry the date.
        let around_midnight: Vec<_> = [T0 + 12 * HOUR - 10 * SECOND, T0 + 12 * HOUR + 10 * SECOND]
            .iter()
            .map(|&ts_ms| BatterySample { ts_ms, ..series(1, 0)[0].clone() })
            .collect();
        let labels = tick_labels(&render_soc_chart(&around_midnight, "t"));
        assert_eq!(labels.first().map(String::as_str), Some("01 May 23:59:50"), "{labels:?}");
        assert!(labels.contains(&"02 May 00:00:00".to_owned()), "{labels:?}");
        // A single sample gets an hour-wide axis around it.
        let svg = render_soc_chart(&series(1, 0), "t");
        check_well_formed(&svg).unwrap();
        assert!((4..=6).contains(&tick_labels(&svg).len()));
        assert!(svg.contains(r#"<circle class="soc" cx="386""#), "{svg}");
    }

    #[test]
    fn numbers_have_at_most_two_decimals() {
        let mut samples = series(3000, 7_777);
        samples[5].voltage_v = 48.123456;
        let svg = render_soc_chart(&samples, "t");
        let mut number = String::new();
        for c in svg.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
            } else {
                if let Some((_, decimals)) = number.split_once('.') {
                    assert!(decimals.len() <= 2, "{number}");
                }
                number.clear();
            }
        }
        assert_eq!(num(1.005e3), "1005");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(2.0 / 3.0), "0.67");
        assert_eq!(num(f64::NAN), "0");
    }

    #[test]
    fn gaps_break_the_lines_and_unsorted_input_is_sorted() {
        let mut samples = series(20, 60_000);
        for s in &mut samples[10..] {
            s.ts_ms += GAP_LIMIT_MS;
        }
        samples.reverse();
        let svg = render_soc_chart(&samples, "t");
        check_well_formed(&svg).unwrap();
        let soc = polyline_points(&svg, "soc");
        assert_eq!(soc.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10]);
        assert!(soc[0][9].0 < soc[1][0].0);
        // A lone sample after a gap is drawn as a dot.
        let mut samples = series(5, 60_000);
        samples[4].ts_ms += GAP_LIMIT_MS;
        let svg = render_soc_chart(&samples, "t");
        assert_eq!(polyline_points(&svg, "soc")[0].len(), 4);
        assert!(svg.contains(r#"<circle class="soc""#));
    }

    #[test]
    fn constant_voltage_gets_a_padded_axis() {
        let samples: Vec<_> = series(10, 1000).into_iter().map(|s| BatterySample { voltage_v: 48.0, ..s }).collect();
        let svg = render_soc_chart(&samples, "t");
        for label in [">47.5 V<", ">48 V<", ">48.5 V<"] {
            assert!(svg.contains(label), "{label}");
        }
    }

    #[test]
    fn downsample_keeps_first_last_and_extremes() {
        let values: Vec<(i64, f64)> = (0..5000).map(|i| (i, if i == 2500 { 9.0 } else { 1.0 })).collect();
        let kept = downsample(&values, 100);
        assert!(kept.len() <= 100);
        assert_eq!((kept[0], *kept.last().unwrap()), (0, 4999));
        assert!(kept.contains(&2500));
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
    }
}
