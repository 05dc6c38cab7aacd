//! The drill's report: a terminal summary with PASS/FAIL per check, and in the report
//! directory `report.md`, `figures.json`, `timeline.svg` (throughput, errors and business
//! rejections per second, faults marked) and `history.json` (every operation, for a closer look at a failure).

use std::fmt::Write;
use std::path::Path;

use super::checker::Check;
use super::figures::{Figures, Spread};
use super::history::History;
use crate::error::{Error, Result};

fn verdict(c: &Check) -> &'static str {
    if c.passed() {
        "PASS"
    } else {
        "FAIL"
    }
}

fn ms(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "-".into())
}

fn spread(label: &str, x: &Spread) -> Option<String> {
    (x.count > 0).then(|| format!("{label} median {} (max {})", ms(x.median_ms), ms(x.max_ms)))
}

/// One line per kind of fault with what was measured: writes resumed after, new leader,
/// 503 and not-ready on an isolated leader's side, drain duration.
fn fault_lines(f: &Figures) -> Vec<String> {
    f.by_fault
        .iter()
        .map(|(kind, k)| {
            let parts: Vec<String> = [
                spread("writes resumed after", &k.writes_resumed),
                spread("new leader after", &k.new_leader),
                spread("isolated side 503 after", &k.refused),
                spread("not ready after", &k.unready),
                spread("drained in", &k.drained),
            ]
            .into_iter()
            .flatten()
            .collect();
            format!("{kind} ×{}: {}", k.faults, if parts.is_empty() { "-".into() } else { parts.join(", ") })
        })
        .collect()
}

/// The summary printed at the end of a drill.
pub fn summary(h: &History, f: &Figures, checks: &[Check]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\ndrill {} on {} nodes, seed {}, {:.0} s of workload",
        h.scenario,
        h.nodes.len(),
        h.seed,
        f.duration_s
    );
    let _ = writeln!(
        s,
        "operations: {} ({} ok, {} rejected by business rules, {} failed, {} indeterminate), {:.0} ok/s, {} retries",
        f.ops, f.ok, f.rejected, f.failed, f.indeterminate, f.ops_per_second, f.retries
    );
    let _ = writeln!(
        s,
        "faults: {}; leader failover median {}, max {}; longest window without a write {:.0} ms",
        h.faults.len(),
        ms(f.leader_failover_median_ms),
        ms(f.leader_failover_max_ms),
        f.longest_write_gap_ms
    );
    for line in fault_lines(f) {
        let _ = writeln!(s, "  {line}");
    }
    if !f.errors_by_kind.is_empty() {
        let errors: Vec<String> = f.errors_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(s, "errors: {}", errors.join(", "));
    }
    if !f.rejections_by_kind.is_empty() {
        let rejections: Vec<String> = f.rejections_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(s, "business rejections (not failures): {}", rejections.join(", "));
    }
    for c in checks {
        let _ = writeln!(s, "  {} {:<28} ({} checked) {}", verdict(c), c.name, c.checked, c.description);
        for v in &c.violations {
            let _ = writeln!(s, "       - {v}");
        }
        if c.violation_count > c.violations.len() {
            let _ = writeln!(s, "       … and {} more", c.violation_count - c.violations.len());
        }
    }
    let passed = checks.iter().all(Check::passed);
    let _ = writeln!(s, "{}", if passed { "PASS" } else { "FAIL" });
    s
}

fn markdown(h: &History, f: &Figures, checks: &[Check], command: &str) -> String {
    let mut s = String::new();
    let passed = checks.iter().all(Check::passed);
    let _ = writeln!(s, "# Drill `{}`: {}\n", h.scenario, if passed { "PASS" } else { "FAIL" });
    let _ = writeln!(s, "Command: `{command}`  \nNodes: {}  \nSeed: {}\n", h.nodes.join(", "), h.seed);
    let _ = writeln!(s, "## Checks\n\n| check | verdict | checked | what |\n|---|---|---:|---|");
    for c in checks {
        let _ = writeln!(s, "| {} | {} | {} | {} |", c.name, verdict(c), c.checked, c.description);
    }
    for c in checks.iter().filter(|c| !c.passed()) {
        let _ = writeln!(s, "\n### {} — {} violations\n", c.name, c.violation_count);
        for v in &c.violations {
            let _ = writeln!(s, "- {v}");
        }
    }
    let _ = writeln!(s, "\n## Figures\n");
    let _ = writeln!(s, "| figure | value |\n|---|---:|");
    let _ = writeln!(s, "| workload | {:.1} s |", f.duration_s);
    let _ = writeln!(s, "| operations | {} |", f.ops);
    let _ = writeln!(
        s,
        "| acknowledged / rejected by business rules / failed / indeterminate | {} / {} / {} / {} |",
        f.ok, f.rejected, f.failed, f.indeterminate
    );
    let _ = writeln!(s, "| acknowledged operations per second | {:.0} |", f.ops_per_second);
    let _ = writeln!(s, "| retries | {} |", f.retries);
    let _ = writeln!(s, "| leader failover median (fault → first write) | {} |", ms(f.leader_failover_median_ms));
    let _ = writeln!(s, "| leader failover max | {} |", ms(f.leader_failover_max_ms));
    let _ = writeln!(
        s,
        "| longest window without an acknowledged write | {:.0} ms ({:.1}–{:.1} s) |",
        f.longest_write_gap_ms,
        f.longest_write_gap_at.0 / 1000.0,
        f.longest_write_gap_at.1 / 1000.0
    );
    let _ = writeln!(
        s,
        "\n### Operations by kind\n\n| kind | ok | rejected | failed | indeterminate | retries |\n|---|---:|---:|---:|---:|---:|"
    );
    for (k, c) in &f.by_kind {
        let _ = writeln!(s, "| {k} | {} | {} | {} | {} | {} |", c.ok, c.rejected, c.failed, c.indeterminate, c.retries);
    }
    let _ = writeln!(s, "\n### Failed attempts by error\n\n| error | attempts |\n|---|---:|");
    for (k, n) in &f.errors_by_kind {
        let _ = writeln!(s, "| {k} | {n} |");
    }
    let _ = writeln!(
        s,
        "\n### Business rejections (the cluster answered; a rule said no)\n\n| rejection | attempts |\n|---|---:|"
    );
    for (k, n) in &f.rejections_by_kind {
        let _ = writeln!(s, "| {k} | {n} |");
    }
    let _ = writeln!(
        s,
        "\n### Per kind of fault (median / max)\n\n| fault | count | writes resumed after | new leader after | isolated side 503 after | not ready after | drained in |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let cell =
        |x: &Spread| if x.count == 0 { "-".to_string() } else { format!("{} / {}", ms(x.median_ms), ms(x.max_ms)) };
    for (kind, k) in &f.by_fault {
        let _ = writeln!(
            s,
            "| {kind} | {} | {} | {} | {} | {} | {} |",
            k.faults,
            cell(&k.writes_resumed),
            cell(&k.new_leader),
            cell(&k.refused),
            cell(&k.unready),
            cell(&k.drained)
        );
    }
    let _ = writeln!(s, "\nAims: writes resumed after a leader pause < 1 s; an isolated leader's side answers 503 and reports not ready < 1 s.");
    let _ = writeln!(
        s,
        "\n### Faults\n\n| at | fault | nodes | leader | healed | first write after |\n|---:|---|---|---|---:|---:|"
    );
    for (fault, fo) in h.faults.iter().zip(&f.failovers) {
        let _ = writeln!(
            s,
            "| {:.1} s | {} | {} | {} | {} | {} |",
            fault.start / 1000.0,
            fault.kind,
            fault.nodes.join(", "),
            if fault.hit_leader { "yes" } else { "no" },
            fault.healed.map(|t| format!("{:.1} s", t / 1000.0)).unwrap_or_else(|| "-".into()),
            ms(fo.first_write_ms)
        );
    }
    let _ = writeln!(s, "\n![timeline](timeline.svg)");
    s
}

/// Throughput (acknowledged operations), errors and business rejections per second as
/// bars, faults as shaded spans with their names.
pub fn timeline_svg(h: &History, f: &Figures) -> String {
    let (w, ht, left, bottom, top) = (900.0, 320.0, 50.0, 40.0, 30.0);
    let plot_w = w - left - 20.0;
    let plot_h = ht - bottom - top;
    let n = f.per_second.len().max(1) as f64;
    let peak = f.per_second.iter().map(|s| s.ok.max(s.errors).max(s.rejected)).max().unwrap_or(1).max(1) as f64;
    let x = |sec: f64| left + sec / n * plot_w;
    let y = |v: f64| top + plot_h - v / peak * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ht}" viewBox="0 0 {w} {ht}" font-family="sans-serif" font-size="11">
<rect width="{w}" height="{ht}" fill="#fff"/>
<text x="{left}" y="18" font-size="13">drill {} — acknowledged ops/s (blue), failed attempts/s (red), business rejections/s (grey), faults (shaded)</text>
"##,
        h.scenario
    );
    for fault in &h.faults {
        let x0 = x(fault.start / 1000.0);
        let x1 = x(fault.healed.unwrap_or(h.end) / 1000.0).max(x0 + 2.0);
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="#f5c542" opacity="0.35"><title>{} {}</title></rect>
<text x="{x0:.1}" y="{:.1}" fill="#8a6d00" font-size="9">{}</text>"##,
            x1 - x0,
            fault.kind,
            fault.nodes.join(","),
            top + 10.0,
            fault.kind
        );
    }
    let bar = (plot_w / n * 0.8).max(1.0);
    for sec in &f.per_second {
        let x0 = x(sec.second as f64);
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="#3b6fd8"><title>{} s: {} ok, {} errors, {} rejected</title></rect>"##,
            y(sec.ok as f64),
            top + plot_h - y(sec.ok as f64),
            sec.second,
            sec.ok,
            sec.errors,
            sec.rejected
        );
        if sec.rejected > 0 {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#9a9a9a"/>"##,
                x0 + bar / 8.0,
                y(sec.rejected as f64),
                bar / 4.0,
                top + plot_h - y(sec.rejected as f64)
            );
        }
        if sec.errors > 0 {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#d83b3b"/>"##,
                x0 + bar / 2.0,
                y(sec.errors as f64),
                bar / 4.0,
                top + plot_h - y(sec.errors as f64)
            );
        }
    }
    let axis = top + plot_h;
    let _ = writeln!(s, r##"<line x1="{left}" y1="{axis}" x2="{}" y2="{axis}" stroke="#333"/>"##, left + plot_w);
    let _ = writeln!(s, r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{axis}" stroke="#333"/>"##);
    let _ = writeln!(s, r##"<text x="{}" y="{}" text-anchor="end">{peak:.0}</text>"##, left - 4.0, top + 4.0);
    let _ = writeln!(s, r##"<text x="{}" y="{axis}" text-anchor="end">0</text>"##, left - 4.0);
    let step = ((n / 10.0).ceil() as usize).max(1);
    for sec in (0..f.per_second.len()).step_by(step) {
        let _ =
            writeln!(s, r##"<text x="{:.1}" y="{}" text-anchor="middle">{sec}s</text>"##, x(sec as f64), axis + 14.0);
    }
    s.push_str("</svg>\n");
    s
}

/// Writes report.md, figures.json, timeline.svg and history.json into `dir`.
pub fn write(dir: &Path, h: &History, f: &Figures, checks: &[Check], command: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Fatal(format!("cannot create {}: {e}", dir.display())))?;
    let put = |name: &str, bytes: Vec<u8>| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| Error::Fatal(format!("cannot write {}/{name}: {e}", dir.display())))
    };
    let verdicts: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| serde_json::json!({ "check": c.name, "passed": c.passed(), "checked": c.checked, "violations": c.violation_count, "evidence": c.violations }))
        .collect();
    let json = serde_json::json!({
        "scenario": h.scenario, "seed": h.seed, "nodes": h.nodes,
        "passed": checks.iter().all(Check::passed), "checks": verdicts, "figures": f,
    });
    put("figures.json", serde_json::to_vec_pretty(&json).unwrap_or_default())?;
    put("report.md", markdown(h, f, checks, command).into_bytes())?;
    put("timeline.svg", timeline_svg(h, f).into_bytes())?;
    put("history.json", serde_json::to_vec(h).unwrap_or_default())
}
