//! `panal bench …`: load generators that print a table. Speed targets live here, never in
//! timed tests.
//!
//! `bench raft` measures acknowledged writes through a local 3-manager cluster at several
//! concurrencies, the same load against a 3-member etcd on loopback when `etcd` is
//! installed (`scripts/bench-raft.sh` installs it), and leader failover time.
//!
//! `bench services` measures realistic service mixes beside a FastAPI + SQLite service
//! (`services.rs`).
//!
//! `bench metrics` times one sample of the node's statistics: the `/proc` scan, the kernel
//! module's `/proc/panal_procs` and a full sample, with thousands of idle processes
//! (`metrics.rs`; `scripts/kmod-test.sh --bench` runs it in a guest with the module loaded).
//!
//! `bench orchestration` times rescheduling after a node kill, a drain and a rolling restart
//! under load (`orchestration.rs`).

mod http;
mod login_flood;
mod metrics;
mod orchestration;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use tokio::process::Command;

use crate::error::{Error, Result};
use crate::tooling::client::Client;
use crate::tooling::launcher::{LaunchConfig, LocalCluster};

mod report;
mod services;
use http::HttpBench;
use report::{num, Report, Table};
use services::{services, ServicesBench};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Replicated writes/s and latency vs etcd, and leader failover time.
    Raft(RaftBench),
    /// Requests/s and latency through one node, route by route (`/health`, the service
    /// ping, a book list, a book page, an energy summary) with each balancing policy, beside
    /// a single-process FastAPI + SQLite service, and node memory under that load.
    Http(HttpBench),
    /// Browse, purchase and ingest mixes through a 3-node cluster, every node serving, vs a
    /// single-process FastAPI + SQLite service doing the same work.
    Services(ServicesBench),
    /// Every benchmark above, one after the other, written to docs/benchmarks.md with the
    /// machine it ran on (scripts/bench-all.sh installs the baselines first).
    All(AllBench),
    /// Cost of one metrics sample (/proc scan, kernel module, full sample) with 100 to
    /// 5,000 idle processes.
    Metrics(metrics::MetricsBench),
    /// Node memory before, during and after a flood of wrong logins from concurrent clients.
    LoginFlood(login_flood::LoginFloodBench),
    /// Node kill → first request served by the rescheduled instance, drain duration, and a
    /// rolling restart under load with its failed requests.
    Orchestration(orchestration::OrchestrationBench),
    /// Reads and writes with the API over HTTPS vs plain HTTP (and plain peers when
    /// available), side by side.
    Tls(tls::TlsBench),
}

#[derive(Debug, Args)]
pub struct AllBench {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Python with fastapi and uvicorn installed, for the FastAPI baselines.
    #[arg(long)]
    pub baseline_python: Option<PathBuf>,
    /// Benchmarks to skip, comma-separated (raft, http, services, tls, metrics, login-flood,
    /// orchestration).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Where to write the Markdown.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// Where to write every figure as JSON.
    #[arg(long, default_value = "docs/benchmarks.json")]
    pub json: PathBuf,
}

#[derive(Debug, Args)]
pub struct RaftBench {
    /// Concurrent writers per run, comma-separated.
    #[arg(long, default_value = "1,16,128")]
    pub writers: String,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Leader kills to time.
    #[arg(long, default_value_t = 5)]
    pub failovers: usize,
    /// First port for the benchmark's own cluster.
    #[arg(long, default_value_t = 17700)]
    pub base_port: u16,
    /// Send writes to every node (`all`, followers forward to the leader) or to the
    /// leader only (`leader`).
    #[arg(long, default_value = "all", value_parser = ["all", "leader"])]
    pub target: String,
    /// Skip etcd even when it is installed.
    #[arg(long)]
    pub no_etcd: bool,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    // Ctrl-C or SIGTERM drops the run, and with it every child process (kill on drop).
    tokio::select! {
        r = run_one(cmd) => r,
        _ = crate::server::start::shutdown_signal() => Err(Error::Fatal("interrupted; clusters and baselines stopped".into())),
    }
}

async fn run_one(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Raft(args) => {
            let json = args.json.clone();
            raft(args).await?.emit(json.as_deref())
        }
        BenchCommand::Http(args) => {
            let json = args.json.clone();
            http::run(args).await?.emit(json.as_deref())
        }
        BenchCommand::Services(args) => {
            let json = args.json.clone();
            let (report, baseline_error) = services(args).await?;
            report.emit(json.as_deref())?;
            baseline_error.map_or(Ok(()), Err)
        }
        BenchCommand::All(args) => all(args).await,
        BenchCommand::Metrics(args) => {
            let json = args.json.clone();
            metrics::run(args).await?.emit(json.as_deref())
        }
        BenchCommand::LoginFlood(args) => {
            let json = args.json.clone();
            login_flood::run(args).await?.emit(json.as_deref())
        }
        BenchCommand::Orchestration(args) => {
            let json = args.json.clone();
            orchestration::run(args).await?.emit(json.as_deref())
        }
        BenchCommand::Tls(args) => {
            let json = args.json.clone();
            tls::run(args).await?.emit(json.as_deref())
        }
    }
}

/// A benchmark's arguments with their command-line defaults, plus `extra` flags.
fn bench_args(name: &str, extra: &[String]) -> Result<BenchCommand> {
    use clap::Parser;
    /// `panal bench`'s own grammar, so that `bench all` parses each benchmark's flags.
    #[derive(Parser)]
    #[command(name = "panal bench")]
    struct BenchLine {
        #[command(subcommand)]
        command: BenchCommand,
    }
    let argv = ["panal bench", name].into_iter().map(String::from).chain(extra.iter().cloned());
    BenchLine::try_parse_from(argv).map(|l| l.command).map_err(|e| Error::Fatal(format!("bench {name}: {e}")))
}

/// `bench all`: every benchmark in turn, then one Markdown file and one JSON file.
async fn all(args: AllBench) -> Result<()> {
    let seconds = args.seconds.to_string();
    let python: Vec<String> = match &args.baseline_python {
        Some(p) => vec!["--baseline-python".into(), p.display().to_string()],
        None => Vec::new(),
    };
    let mut reports = Vec::new();
    for name in ["raft", "http", "services", "tls", "metrics", "login-flood", "orchestration"] {
        if args.skip.iter().any(|s| s == name) {
            continue;
        }
        eprintln!("== bench {name}");
        let mut extra = vec!["--seconds".to_string(), seconds.clone()];
        if matches!(name, "metrics" | "login-flood" | "orchestration") {
            extra.clear();
        } else if name != "raft" && name != "tls" {
            extra.extend(python.iter().cloned());
        }
        let report = match bench_args(name, &extra)? {
            BenchCommand::Raft(a) => raft(a).await?,
            BenchCommand::Http(a) => http::run(a).await?,
            BenchCommand::Services(a) => services(a).await?.0,
            BenchCommand::Metrics(a) => metrics::run(a).await?,
            BenchCommand::LoginFlood(a) => login_flood::run(a).await?,
            BenchCommand::Orchestration(a) => orchestration::run(a).await?,
            BenchCommand::Tls(a) => tls::run(a).await?,
            BenchCommand::All(_) => unreachable!("not requested"),
        };
        println!("\n{}", report.markdown());
        reports.push(report);
    }
    let date = panal_actors::time::rfc3339(panal_actors::time::wall_ms());
    let machine = report::machine();
    let mut md = format!(
        "# Benchmarks\n\nWritten by `panal bench all --seconds {}` (`scripts/bench-all.sh` installs the baselines — \
         etcd from Debian, FastAPI and uvicorn from PyPI — and runs it) on {date}.\n\nMachine: {machine}. \
         Everything, load generator included, runs on this one machine, so absolute numbers depend on it and vary \
         between runs: compare the rows of one run, side by side.\n",
        args.seconds
    );
    for r in &reports {
        md.push('\n');
        md.push_str(&r.markdown());
    }
    std::fs::write(&args.out, md).map_err(|e| Error::Fatal(format!("cannot write {}: {e}", args.out.display())))?;
    report::write_json(&args.json, &serde_json::json!({ "date": date, "machine": machine, "reports": reports }))?;
    eprintln!("wrote {} and {}", args.out.display(), args.json.display());
    Ok(())
}

/// Latencies and counts of one load run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    pub system: String,
    pub writers: usize,
    pub ok: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs `writers` loops for `duration`, each issuing `request(seq)` and awaiting it.
/// The one load generator every benchmark uses.
pub async fn load<F, Fut>(system: &str, writers: usize, duration: Duration, request: F) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut seq = (w as u64) << 40;
                while start.elapsed() < duration {
                    let t = Instant::now();
                    if request(seq).await {
                        lat.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                    seq += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    LoadResult {
        system: system.into(),
        writers,
        ok: all.len() as u64,
        errors,
        per_second: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

async fn raft(args: RaftBench) -> Result<Report> {
    let writers: Vec<usize> = args
        .writers
        .split(',')
        .map(|w| w.trim().parse().map_err(|_| Error::Fatal(format!("--writers: {w:?} is not a number"))))
        .collect::<Result<_>>()?;
    let duration = Duration::from_secs(args.seconds);
    let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    // PANAL_BENCH_KEEP=1 keeps the cluster's data dirs and logs for inspection.
    let dir_path = if std::env::var_os("PANAL_BENCH_KEEP").is_some() { dir.keep() } else { dir.path().to_path_buf() };
    eprintln!("starting a 3-manager panal cluster in {}", dir_path.display());
    let mut cluster = LocalCluster::up(LaunchConfig::base_port(&dir_path, args.base_port)?, 3, 0).await?;
    let admin = cluster.admin_client().await?;
    let token = admin.token().unwrap_or_default();
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(512).build().map_err(|e| Error::Fatal(e.to_string()))?;
    let urls: Arc<Vec<String>> = Arc::new(if args.target == "leader" {
        vec![cluster.nodes[leader_index(&cluster, &admin).await?].api_url.clone()]
    } else {
        cluster.nodes.iter().map(|n| n.api_url.clone()).collect()
    });

    let mut results = Vec::new();
    for &w in &writers {
        let (http, urls, token) = (http.clone(), urls.clone(), token.clone());
        let r = load("panal", w, duration, move |seq| {
            let url = format!("{}/api/v1/cluster/kv/k{}", urls[(seq as usize) % urls.len()], seq % 10_000);
            let req = http.put(url).bearer_auth(&token).body(format!("value-{seq}"));
            async move { matches!(req.send().await, Ok(r) if r.status().is_success()) }
        })
        .await;
        eprintln!(
            "panal  writers={w:<4} {:>8.0} writes/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            r.per_second, r.p50_ms, r.p99_ms, r.errors
        );
        results.push(r);
    }

    if !args.no_etcd {
        match Etcd::start(args.base_port + 500).await {
            Ok(etcd) => {
                for &w in &writers {
                    let (http, urls) = (http.clone(), Arc::new(etcd.client_urls.clone()));
                    let r = load("etcd", w, duration, move |seq| {
                        let b64 = base64::engine::general_purpose::STANDARD;
                        let body = serde_json::json!({ "key": b64.encode(format!("k{}", seq % 10_000)), "value": b64.encode(format!("value-{seq}")) });
                        let req = http.post(format!("{}/v3/kv/put", urls[(seq as usize) % urls.len()])).json(&body);
                        async move { matches!(req.send().await, Ok(r) if r.status().is_success()) }
                    })
                    .await;
                    eprintln!(
                        "etcd   writers={w:<4} {:>8.0} writes/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                        r.per_second, r.p50_ms, r.p99_ms, r.errors
                    );
                    results.push(r);
                }
                etcd.stop().await;
            }
            Err(e) => eprintln!("etcd skipped: {e}"),
        }
    }

    let failovers = measure_failover(&mut cluster, &admin, &http, &token, args.failovers).await?;
    cluster.stop().await;

    let mut table = Table::new(&["<system", "writers", "writes/s", "p50 ms", "p99 ms", "errors"]);
    for r in &results {
        table.row(vec![
            r.system.clone(),
            r.writers.to_string(),
            num(Some(r.per_second), 0),
            num(Some(r.p50_ms), 2),
            num(Some(r.p99_ms), 2),
            r.errors.to_string(),
        ]);
    }
    let mut notes = Vec::new();
    for &w in &writers {
        let p = results.iter().find(|r| r.system == "panal" && r.writers == w);
        let e = results.iter().find(|r| r.system == "etcd" && r.writers == w);
        if let (Some(p), Some(e)) = (p, e) {
            notes.push(format!("panal/etcd throughput at {w} writers: {:.2}x", p.per_second / e.per_second.max(1e-9)));
        }
    }
    if !results.iter().any(|r| r.system == "etcd") {
        notes.push("etcd not measured (not installed, or --no-etcd); scripts/bench-raft.sh installs it".into());
    }
    let mut sorted = failovers.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    notes.push(format!(
        "leader SIGKILL → first acknowledged write (ms): {:?}; median {} ms",
        failovers.iter().map(|f| f.round()).collect::<Vec<_>>(),
        num(Some(median), 0)
    ));
    Ok(Report {
        title: "Replicated writes and leader failover".into(),
        command: format!(
            "scripts/bench-raft.sh --seconds {} --writers {} --failovers {}",
            args.seconds, args.writers, args.failovers
        ),
        method: format!(
            "Acknowledged writes (`PUT /api/v1/cluster/kv/{{key}}`, admin JWT, fsync on) sent to {} of a local \
             3-manager cluster, and the same load against a 3-member etcd on loopback through its v3 JSON gateway, \
             by the same load generator; then the leader is killed {} times.",
            if args.target == "leader" { "the leader" } else { "every node (followers forward to the leader)" },
            args.failovers
        ),
        tables: vec![table],
        notes,
        data: serde_json::json!({ "writes": results, "failover_ms": failovers, "failover_median_ms": median }),
    })
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Pings through the client's first node until workers on `nodes` distinct nodes answered
/// (the mesh is connected).
pub(crate) async fn wait_for_mesh(client: &Client, nodes: usize) -> Result<()> {
    let first = client.pinned(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < nodes {
        if let Ok(node) = first.ping("auth").await {
            seen.insert(node);
        }
        if Instant::now() > deadline {
            return Err(Error::Fatal(format!("{} reached only {} of {nodes} nodes", first.current_node(), seen.len())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Position in `cluster.nodes` of the current leader.
async fn leader_index(cluster: &LocalCluster, admin: &Client) -> Result<usize> {
    let status = admin.cluster_status().await?;
    let name = status.leader.map(|l| l.name).unwrap_or_default();
    cluster.nodes.iter().position(|n| n.name == name).ok_or_else(|| Error::Fatal("no leader".into()))
}

/// Kills the leader `trials` times; each figure is the time from SIGKILL to the first
/// write acknowledged by a survivor.
async fn measure_failover(
    cluster: &mut LocalCluster,
    admin: &Client,
    http: &reqwest::Client,
    token: &str,
    trials: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for trial in 0..trials {
        let victim = leader_index(cluster, admin).await?;
        let leader_name = cluster.nodes[victim].name.clone();
        let survivors: Vec<String> =
            cluster.nodes.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, n)| n.api_url.clone()).collect();
        let killed = Instant::now();
        cluster.kill(victim);
        let mut seq = 0u64;
        loop {
            let url = format!("{}/api/v1/cluster/kv/failover", survivors[(seq as usize) % survivors.len()]);
            seq += 1;
            let ok = http
                .put(url)
                .bearer_auth(token)
                .timeout(Duration::from_millis(500))
                .header("idempotency-key", format!("failover-{trial}-{seq}"))
                .body(format!("{trial}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                return Err(Error::Fatal("no write succeeded within 30 s of the leader kill".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        eprintln!("failover trial {trial}: {ms:.0} ms (killed {leader_name})");
        out.push(ms);
        cluster.restart(victim)?;
        cluster.wait_ready(victim).await?;
    }
    Ok(out)
}

/// A 3-member etcd on loopback, in a temp dir, with fsync on (etcd's default).
struct Etcd {
    children: Vec<tokio::process::Child>,
    client_urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start(base: u16) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
        let peer = |i: u16| format!("http://127.0.0.1:{}", base + 10 * i + 1);
        let client = |i: u16| format!("http://127.0.0.1:{}", base + 10 * i);
        let initial: Vec<String> = (0..3).map(|i| format!("e{i}={}", peer(i))).collect();
        let mut children = Vec::new();
        for i in 0..3u16 {
            let log =
                std::fs::File::create(dir.path().join(format!("e{i}.log"))).map_err(|e| Error::Fatal(e.to_string()))?;
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .args(["--data-dir", &dir.path().join(format!("e{i}")).display().to_string()])
                .args(["--listen-client-urls", &client(i), "--advertise-client-urls", &client(i)])
                .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .stdout(log.try_clone().map_err(|e| Error::Fatal(e.to_string()))?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::Fatal(format!("cannot run etcd (install etcd-server): {e}")))?;
            children.push(child);
        }
        let client_urls: Vec<String> = (0..3).map(client).collect();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &client_urls {
            loop {
                if let Ok(r) = http.get(format!("{url}/health")).send().await {
                    if r.status().is_success() {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(Error::Fatal("etcd did not become healthy".into()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(Self { children, client_urls, _dir: dir })
    }

    async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.kill().await;
        }
    }
}
