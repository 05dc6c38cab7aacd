//! `panal top`: a terminal view of the cluster refreshed every interval — per node CPU,
//! memory, load, process counts by state and the node process's own RSS — from
//! `GET /api/v1/metrics/nodes` on any node.

use std::time::Duration;

use serde_json::Value;

use crate::error::Result;
use crate::tooling::admin::AdminClient;
use crate::tooling::cli::AdminArgs;

/// Renders one screen from the `/api/v1/metrics/nodes` answer. Pure, so it is tested.
pub fn render(nodes: &Value) -> String {
    let mut out = format!(
        "{:<14} {:<8} {:>6} {:>17} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>8} {:>7}\n",
        "NODE", "ROLE", "CPU%", "MEM USED/TOTAL", "LOAD1", "PROCS", "RUN", "SLEEP", "ZOMB", "STOP", "RSS", "SOURCE"
    );
    let mib = |v: &Value| v.as_u64().map(|b| format!("{}M", b / (1024 * 1024))).unwrap_or_else(|| "-".into());
    for n in nodes.as_array().into_iter().flatten() {
        let name = n["name"].as_str().unwrap_or("?");
        let role = n["role"].as_str().unwrap_or("?");
        let s = &n["latest"]["sample"];
        if !n["reachable"].as_bool().unwrap_or(false) || s.is_null() {
            out.push_str(&format!(
                "{name:<14} {role:<8} unreachable: {}\n",
                n["error"].as_str().unwrap_or("no sample yet")
            ));
            continue;
        }
        let p = &s["processes"];
        out.push_str(&format!(
            "{:<14} {:<8} {:>6.1} {:>17} {:>6.2} {:>6} {:>5} {:>5} {:>5} {:>5} {:>8} {:>7}\n",
            name,
            role,
            s["cpu_busy_pct"].as_f64().unwrap_or(0.0),
            format!("{}/{}", mib(&s["mem_used_bytes"]), mib(&s["mem_total_bytes"])),
            s["load1"].as_f64().unwrap_or(0.0),
            p["total"],
            p["running"],
            p["sleeping"],
            p["zombie"],
            p["stopped"],
            mib(&s["process_rss_bytes"]),
            s["source"].as_str().unwrap_or("-"),
        ));
    }
    out
}

/// Refreshes the view every `interval` until Ctrl-C; `once` prints a single screen.
pub async fn run(args: AdminArgs, interval: Duration, once: bool) -> Result<()> {
    let client = AdminClient::login(&args).await?;
    loop {
        let nodes = client.request(reqwest::Method::GET, "/api/v1/metrics/nodes").await?;
        if once {
            print!("{}", render(&nodes));
            return Ok(());
        }
        // Clear the screen and home the cursor, then draw.
        print!("\x1b[2J\x1b[H{} — every {:?}, Ctrl-C to quit\n\n{}", args.url, interval, render(&nodes));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reachable_and_unreachable_nodes() {
        let nodes = serde_json::json!([
            {"name": "n1", "role": "manager", "reachable": true, "latest": {"sample": {
                "cpu_busy_pct": 12.5, "mem_used_bytes": 1048576u64 * 300, "mem_total_bytes": 1048576u64 * 1000,
                "load1": 0.5, "process_rss_bytes": 1048576u64 * 40, "source": "scan",
                "processes": {"total": 80, "running": 2, "sleeping": 70, "zombie": 1, "stopped": 0}}}},
            {"name": "n2", "role": "worker", "reachable": false, "error": "timed out", "latest": null}
        ]);
        let screen = render(&nodes);
        assert!(
            screen.contains("n1") && screen.contains("12.5") && screen.contains("300M/1000M") && screen.contains("40M"),
            "{screen}"
        );
        assert!(screen.contains("n2") && screen.contains("unreachable: timed out"), "{screen}");
    }
}
