//! `bench tls`: what TLS costs. Reads (`GET /api/v1/books?limit=20`) and writes (`POST
//! /api/v1/books`) through one node of a local 3-manager cluster at `--connections` with
//! keep-alive, once per configuration (a fresh cluster each): the API over HTTPS with a
//! certificate from the cluster CA, the API over plain HTTP (`--api-tls off`), and, when
//! this build has `--peer-tls`, plain peers too.

use std::time::Duration;

use clap::{Args, CommandFactory};

use super::report::{num, Report, Table};
use super::{load, LoadResult};
use crate::error::{Error, Result};
use crate::tooling::launcher::{ApiTransport, LaunchConfig, LocalCluster};

#[derive(Debug, Args)]
pub struct TlsBench {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Seconds per measured run (reads, then writes, per configuration).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// First port for the benchmark's clusters.
    #[arg(long, default_value_t = 19700)]
    pub base_port: u16,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// One way of running the cluster.
struct Setup {
    label: &'static str,
    api: ApiTransport,
    node_args: &'static [&'static str],
}

/// Whether `panal start` has `--flag` (a later build may add one).
fn start_has_flag(flag: &str) -> bool {
    #[derive(clap::Parser)]
    struct Start {
        #[command(flatten)]
        args: crate::server::config::StartArgs,
    }
    Start::command().get_arguments().any(|a| a.get_long() == Some(flag))
}

fn setups() -> Vec<Setup> {
    let mut setups = vec![
        Setup { label: "API HTTPS, peers mTLS", api: ApiTransport::ClusterCa, node_args: &[] },
        Setup {
            label: "API HTTP (--api-tls off), peers mTLS",
            api: ApiTransport::Plain,
            node_args: &["--api-tls", "off"],
        },
    ];
    if start_has_flag("peer-tls") {
        setups.push(Setup {
            label: "API HTTP, plain peers (--peer-tls off)",
            api: ApiTransport::Plain,
            node_args: &["--api-tls", "off", "--peer-tls", "off"],
        });
    }
    setups
}

/// Books the reads list (a full page).
const SEEDED_BOOKS: usize = 20;

fn new_book(n: u64) -> serde_json::Value {
    serde_json::json!({
        "title": format!("Bench book {n}"),
        "author": "Bench",
        "price_cents": 1000,
        "currency": "EUR",
        "stock": 10,
    })
}

/// Reads and writes through node 0 of a fresh cluster set up as `setup`.
async fn measure(setup: &Setup, args: &TlsBench) -> Result<(LoadResult, LoadResult)> {
    let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    let mut config = LaunchConfig::base_port(dir.path(), args.base_port)?;
    config.api = setup.api.clone();
    config.node_args = setup.node_args.iter().map(|s| s.to_string()).collect();
    let mut cluster = LocalCluster::up(config, 3, 0).await?;
    let admin = cluster.admin_client().await?;
    super::wait_for_mesh(&admin, 3).await?;
    let token = admin.token().ok_or_else(|| Error::Fatal("the admin login gave no token".into()))?;
    for n in 0..SEEDED_BOOKS as u64 {
        let _: serde_json::Value = admin.post("/api/v1/books", &new_book(n)).await?;
    }
    let http = cluster.trust()?.http_client(
        reqwest::Client::builder().pool_max_idle_per_host(args.connections).timeout(Duration::from_secs(30)),
    )?;
    let base = cluster.nodes[0].api_url.clone();
    let duration = Duration::from_secs(args.seconds);
    let reads = {
        let (http, url) = (http.clone(), format!("{base}/api/v1/books?limit=20"));
        load(setup.label, args.connections, duration, move |_| {
            let req = http.get(&url);
            async move { matches!(req.send().await, Ok(r) if r.status().is_success()) }
        })
        .await
    };
    let writes = {
        let (http, url, token) = (http.clone(), format!("{base}/api/v1/books"), token.clone());
        load(setup.label, args.connections, duration, move |seq| {
            let req = http.post(&url).bearer_auth(&token).json(&new_book(seq));
            async move { matches!(req.send().await, Ok(r) if r.status().is_success()) }
        })
        .await
    };
    cluster.stop().await;
    Ok((reads, writes))
}

pub async fn run(args: TlsBench) -> Result<Report> {
    let mut results = Vec::new();
    for setup in setups() {
        let (reads, writes) = measure(&setup, &args).await?;
        for (op, r) in [("read", &reads), ("write", &writes)] {
            eprintln!(
                "{:<40} {op:<5} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                setup.label, r.per_second, r.p50_ms, r.p99_ms, r.errors
            );
        }
        results.push((setup.label, reads, writes));
    }
    // The loss of each configuration against the API over plain HTTP with TLS peers.
    let plain = results
        .iter()
        .find(|(label, ..)| label.starts_with("API HTTP ("))
        .map(|(_, r, w)| (r.per_second, w.per_second));
    let mut table = Table::new(&[
        "<configuration",
        "<operation",
        "connections",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "vs API HTTP",
    ]);
    let mut notes = Vec::new();
    for (label, reads, writes) in &results {
        for (op, r, base) in [("read", reads, plain.map(|p| p.0)), ("write", writes, plain.map(|p| p.1))] {
            let change = base.map(|b| (r.per_second / b.max(1e-9) - 1.0) * 100.0);
            table.row(vec![
                label.to_string(),
                op.to_string(),
                r.writers.to_string(),
                num(Some(r.per_second), 0),
                num(Some(r.p50_ms), 2),
                num(Some(r.p99_ms), 2),
                r.errors.to_string(),
                change.map_or("—".into(), |c| format!("{c:+.1} %")),
            ]);
        }
        if label.starts_with("API HTTPS") {
            if let Some((pr, pw)) = plain {
                let loss = |x: f64, b: f64| (1.0 - x / b.max(1e-9)) * 100.0;
                notes.push(format!(
                    "HTTPS on the API costs {:.1} % of the reads/s and {:.1} % of the writes/s (target: at most 15 %)",
                    loss(reads.per_second, pr),
                    loss(writes.per_second, pw)
                ));
            }
        }
    }
    if !start_has_flag("peer-tls") {
        notes.push("no plain-peers row: this build has no --peer-tls off".into());
    }
    let rows: Vec<_> = results
        .iter()
        .map(|(label, r, w)| serde_json::json!({ "configuration": label, "reads": r, "writes": w }))
        .collect();
    Ok(Report {
        title: "The cost of TLS".into(),
        command: format!("panal bench tls --seconds {} --connections {}", args.seconds, args.connections),
        method: format!(
            "Reads (`GET /api/v1/books?limit=20`) then writes (`POST /api/v1/books`, replicated) with {} keep-alive \
             connections through one node of a local 3-manager cluster, {} s each, once per configuration (a fresh \
             cluster each): the API over HTTPS with its certificate from the cluster CA, the API over plain HTTP, and \
             plain peers when the build allows it. The load generator runs on the same machine and pays its side \
             of every handshake and record too.",
            args.connections, args.seconds
        ),
        tables: vec![table],
        notes,
        data: serde_json::json!({ "results": rows }),
    })
}
