//! The one report format of every benchmark: a Markdown section (tables and notes) printed
//! on stdout, the same figures as JSON, and `bench all`'s `docs/benchmarks.md`.

use std::path::Path;

use crate::error::{Error, Result};

/// One benchmark's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Section title, e.g. "Replicated writes".
    pub title: String,
    /// The command that reproduces it.
    pub command: String,
    /// What was measured and how, one paragraph.
    pub method: String,
    pub tables: Vec<Table>,
    /// Derived figures and remarks, one line each (ratios, medians, skipped baselines).
    pub notes: Vec<String>,
    /// Every figure, for machines.
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns whose name starts with `<` are left-aligned, the others right-aligned
    /// (numbers); the marker is not printed.
    pub fn new(columns: &[&str]) -> Self {
        Self { columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.trim_start_matches('<')).collect();
        let rules: Vec<&str> = self.columns.iter().map(|c| if c.starts_with('<') { "---" } else { "---:" }).collect();
        let mut out = format!("| {} |\n|{}|\n", names.join(" | "), rules.join("|"));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\nReproduce: `{}`\n\n{}\n", self.title, self.command, self.method);
        for table in &self.tables {
            out.push('\n');
            out.push_str(&table.markdown());
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }

    /// Prints the Markdown and writes the JSON to `json` when given.
    pub fn emit(&self, json: Option<&Path>) -> Result<()> {
        println!("\n{}", self.markdown());
        if let Some(path) = json {
            write_json(path, &serde_json::to_value(self).unwrap_or_default())?;
        }
        Ok(())
    }
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap_or_default())
        .map_err(|e| Error::Fatal(format!("cannot write {}: {e}", path.display())))
}

/// A number with `decimals` places, or "-" when absent.
pub fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

/// CPU model, cores, memory and kernel of this machine, from /proc.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1_048_576.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} × {model}, {mem_gib:.0} GiB memory, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown_with_aligned_columns() {
        let mut t = Table::new(&["<system", "req/s"]);
        t.row(vec!["panal".into(), num(Some(1234.56), 0)]);
        t.row(vec!["etcd".into(), num(None, 0)]);
        assert_eq!(t.markdown(), "| system | req/s |\n|---|---:|\n| panal | 1235 |\n| etcd | - |\n");
        let r = Report {
            title: "T".into(),
            command: "panal bench x".into(),
            method: "How.".into(),
            tables: vec![t],
            notes: vec!["ratio 2.00x".into()],
            data: serde_json::json!({}),
        };
        let md = r.markdown();
        assert!(md.starts_with("## T\n\nReproduce: `panal bench x`\n\nHow.\n\n| system"), "{md}");
        assert!(md.ends_with("- ratio 2.00x\n"), "{md}");
        assert!(machine().contains("GiB memory, Linux"));
    }
}
