//! `bench login-flood`: a node's resident memory before, during and after a flood of wrong
//! logins from concurrent clients (issue 13: each argon2 check used to keep its 19 MiB).

use super::*;

#[derive(Debug, Args)]
pub struct LoginFloodBench {
    /// Wrong logins in the flood.
    #[arg(long, default_value_t = 2000)]
    pub attempts: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Failures allowed before the throttle starts (high, so that the hashing pool is
    /// really loaded; the node's default is 5).
    #[arg(long, default_value_t = 200)]
    pub free_failures: u32,
    /// First port for the benchmark's node.
    #[arg(long, default_value_t = 16700)]
    pub base_port: u16,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error::Fatal(format!("cannot read the node's memory: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| Error::Fatal("no VmRSS in /proc/PID/status".into()))
}

pub async fn run(args: LoginFloodBench) -> Result<Report> {
    let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    let mut config = LaunchConfig::base_port(dir.path(), args.base_port)?;
    config.node_args = vec!["--login-free-failures".to_string(), args.free_failures.to_string()];
    let cluster = LocalCluster::up(config, 1, 0).await?;
    let node = &cluster.nodes[0];
    let pid = node.pid().ok_or_else(|| Error::Fatal("the node is not running".into()))?;
    // `panal up` logged in as admin: let the hashing threads release that block first.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let idle = rss_mib(pid)?;

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let mut peak = 0f64;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid).unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    });
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/auth/login", node.api_url);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let statuses: Vec<[u64; 4]> = futures::future::join_all((0..args.clients).map(|_| {
        let (http, url, next) = (http.clone(), url.clone(), next.clone());
        async move {
            // 401, 429, 503, other
            let mut seen = [0u64; 4];
            while next.fetch_add(1, Ordering::Relaxed) < args.attempts {
                let body = serde_json::json!({"username": "admin", "password": "not-the-password"});
                let slot = match http.post(&url).json(&body).send().await.map(|r| r.status().as_u16()) {
                    Ok(401) => 0,
                    Ok(429) => 1,
                    Ok(503) => 2,
                    _ => 3,
                };
                seen[slot] += 1;
            }
            seen
        }
    }))
    .await;
    let flood_secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let during = sampler.await.map_err(|e| Error::Fatal(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(pid)?;
    // Idle hashing threads release their blocks after 3 s each, one after the other.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let rested = rss_mib(pid)?;
    let total = |i: usize| statuses.iter().map(|s| s[i]).sum::<u64>();
    let (unauthorized, throttled, overloaded, other) = (total(0), total(1), total(2), total(3));

    let mut table = Table::new(&["<phase", "RSS MiB", "vs idle MiB"]);
    for (phase, rss) in [("idle", idle), ("during (peak)", during), ("after (+2 s)", after), ("after (+15 s)", rested)]
    {
        table.row(vec![phase.into(), num(Some(rss), 1), num(Some(rss - idle), 1)]);
    }
    let mut answers = Table::new(&["401 wrong password", "429 throttled", "503 overloaded", "other"]);
    answers.row(vec![unauthorized.to_string(), throttled.to_string(), overloaded.to_string(), other.to_string()]);
    Ok(Report {
        title: "Memory under a login flood".into(),
        command: format!("panal bench login-flood --attempts {} --clients {}", args.attempts, args.clients),
        method: format!(
            "One node (`panal up`, `--login-free-failures {}`), idle for 15 s; {} wrong logins for `admin` \
             from {} concurrent clients ({flood_secs:.1} s). RSS is VmRSS of the node process, sampled every 20 ms during the flood. \
             Before issue 13 a node went from 21 to 382 MiB after 100 sequential wrong logins.",
            args.free_failures, args.attempts, args.clients
        ),
        tables: vec![table, answers],
        notes: vec![format!(
            "peak − idle: {:.1} MiB; after − idle: {:.1} MiB (+2 s), {:.1} MiB (+15 s)",
            during - idle,
            after - idle,
            rested - idle
        )],
        data: serde_json::json!({
            "idle_mib": idle, "during_peak_mib": during, "after_mib": after, "rested_mib": rested, "flood_seconds": flood_secs,
            "unauthorized": unauthorized, "throttled": throttled, "overloaded": overloaded, "other": other,
        }),
    })
}
