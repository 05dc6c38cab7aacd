//! `panal top`: a terminal view of the cluster refreshed every interval — per node CPU,
//! memory, load, process counts by state and the node process's own RSS — from
//! `GET /api/v1/metrics/nodes` on any node.

use std::time::Duration;

use crate::error::Result;
use crate::tooling::client::AdminArgs;
use crate::tooling::client::{Client, NodeMetrics};

/// Renders one screen from the `/api/v1/metrics/nodes` answer. Pure, so it is tested.
/// Every value is a plain string or number padded to its header's width (a JSON value
/// would ignore the width and shift the columns).
pub fn render(nodes: &[NodeMetrics]) -> String {
    let mut out = format!(
        "{:<14} {:<8} {:>6} {:>17} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>8} {:>7}\n",
        "NODE", "ROLE", "CPU%", "MEM USED/TOTAL", "LOAD1", "PROCS", "RUN", "SLEEP", "ZOMB", "STOP", "RSS", "SOURCE"
    );
    let mib = |b: u64| format!("{}M", b / (1024 * 1024));
    for n in nodes {
        let sample = n.latest.as_ref().map(|l| &l.sample);
        let Some(s) = sample.filter(|_| n.reachable) else {
            let why = n.error.as_deref().unwrap_or("no sample yet");
            out.push_str(&format!("{:<14} {:<8} unreachable: {why}\n", n.name, n.role));
            continue;
        };
        let p = &s.processes;
        let source = serde_json::to_value(s.source).ok().and_then(|v| v.as_str().map(str::to_string));
        out.push_str(&format!(
            "{:<14} {:<8} {:>6.1} {:>17} {:>6.2} {:>6} {:>5} {:>5} {:>5} {:>5} {:>8} {:>7}\n",
            n.name,
            n.role,
            s.cpu_busy_pct,
            format!("{}/{}", mib(s.mem_used_bytes), mib(s.mem_total_bytes)),
            s.load1,
            p.total,
            p.running,
            p.sleeping,
            p.zombie,
            p.stopped,
            mib(s.process_rss_bytes),
            source.unwrap_or_else(|| "-".into()),
        ));
    }
    out
}

/// Refreshes the view every `interval` until Ctrl-C; `once` prints a single screen.
pub async fn run(args: AdminArgs, interval: Duration, once: bool) -> Result<()> {
    let client = Client::admin(&args).await?;
    loop {
        let nodes = client.node_metrics().await?;
        if once {
            print!("{}", render(&nodes));
            return Ok(());
        }
        // Clear the screen and home the cursor, then draw.
        print!("\x1b[2J\x1b[H{} — every {:?}, Ctrl-C to quit\n\n{}", client.current_node(), interval, render(&nodes));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<NodeMetrics> {
        let json = serde_json::json!([
            {"id": 1, "name": "n1", "role": "manager", "reachable": true, "error": null, "latest": {
                "node": "n1", "taken_at": "2026-01-01T00:00:00Z", "sample": {
                "ts_ms": 0, "seq": 1, "cpu_busy_pct": 12.5, "cpu_count": 2,
                "mem_used_bytes": 1048576u64 * 300, "mem_total_bytes": 1048576u64 * 1000,
                "mem_available_bytes": 0, "load1": 0.5, "load5": 0.0, "load15": 0.0,
                "process_rss_bytes": 1048576u64 * 40, "process_cpu_seconds": 1.0, "process_open_fds": 10,
                "source": "scan",
                "processes": {"total": 77, "running": 2, "sleeping": 42, "disk_sleep": 0, "stopped": 0,
                    "traced": 0, "zombie": 1, "dead": 0, "idle": 0, "threads": 90,
                    "kernel_version": "6.1", "collected_ns": 0}}}},
            {"id": 2, "name": "n2", "role": "worker", "reachable": false, "error": "timed out", "latest": null}
        ]);
        match serde_json::from_value(json) {
            Ok(n) => n,
            Err(e) => panic!("fixture does not match the sample shape: {e}"),
        }
    }

    #[test]
    fn renders_reachable_and_unreachable_nodes() {
        let screen = render(&nodes());
        assert!(
            screen.contains("n1") && screen.contains("12.5") && screen.contains("300M/1000M") && screen.contains("40M"),
            "{screen}"
        );
        assert!(screen.contains("n2") && screen.contains("unreachable: timed out"), "{screen}");
    }

    /// Issue 19 item 10: each value ends in the same column as its header.
    #[test]
    fn values_sit_under_their_headers() {
        let screen = render(&nodes());
        let mut lines = screen.lines();
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        let ends = |line: &str| -> Vec<usize> {
            let bytes = line.as_bytes();
            (0..bytes.len()).filter(|&i| bytes[i] != b' ' && (i + 1 == bytes.len() || bytes[i + 1] == b' ')).collect()
        };
        // Right-aligned columns from CPU% on; MEM USED/TOTAL has a space in its header.
        let header_ends: Vec<usize> =
            ends(header).into_iter().filter(|&e| e != header.find("MEM").unwrap() + 2).collect();
        let row_ends = ends(row);
        assert_eq!(header_ends[2..], row_ends[2..], "\n{header}\n{row}");
        assert!(row.contains("    77     2    42     1     0"), "\n{header}\n{row}");
    }
}
