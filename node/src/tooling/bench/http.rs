//! `bench http`: what a request costs through one node, route by route, against the cost of
//! the HTTP layer alone. Per balancing policy a fresh 3-node cluster is seeded with the
//! services benchmark's data, then each route is loaded in turn through node 1: `/health`
//! (the ceiling: HTTP and middleware, no service call), the service ping, a catalog page, a
//! book page and an energy summary. Each row's ratio to `/health` of the same cluster is the
//! figure to compare across runs and machines. The load generator is `wrk` when installed
//! (scripts/bench-http.sh installs it), else the in-process one.

use super::services::{seed, Seed};
use super::*;

#[derive(Debug, Args)]
pub struct HttpBench {
    /// Concurrent connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Seconds per route and policy.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// First port for the benchmark's clusters.
    #[arg(long, default_value_t = 18700)]
    pub base_port: u16,
    /// Balancing policies to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "local,round-robin,p2c")]
    pub policies: Vec<String>,
    /// Python with fastapi and uvicorn installed, for the baseline (scripts/bench-http.sh
    /// makes one); without it the baseline is skipped.
    #[arg(long)]
    pub baseline_python: Option<PathBuf>,
    /// Run the nodes from this `panal` binary instead of this one (to compare two builds
    /// under the same load generator).
    #[arg(long)]
    pub node_binary: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Books in the seeded catalog (a page of 20 is read from its start).
const BOOKS: usize = 100;
/// Meters of the energy owner, each with a week of hourly readings.
const METERS: usize = 4;
const READINGS_PER_METER: usize = 7 * 24;

/// One measured route.
struct Route {
    name: &'static str,
    path: String,
    token: Option<String>,
}

fn routes(seed: &Seed) -> Vec<Route> {
    let route = |name, path: String, token: Option<&String>| Route { name, path, token: token.cloned() };
    vec![
        route("/health", "/health".into(), None),
        route("service ping", "/api/v1/auth/ping".into(), None),
        route("book list", "/api/v1/books?limit=20".into(), None),
        route("book page", format!("/api/v1/books/{}", seed.hot_books[0]), None),
        route("energy summary", "/api/v1/energy/summary".into(), Some(&seed.meter_token)),
    ]
}

/// One row: a route under one policy.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    policy: String,
    route: &'static str,
    result: LoadResult,
    /// Largest node's resident memory right after the run.
    max_rss_bytes: Option<u64>,
    /// Throughput over `/health`'s in the same cluster.
    of_health: Option<f64>,
}

pub(super) async fn run(args: HttpBench) -> Result<Report> {
    let duration = Duration::from_secs(args.seconds);
    let generator = if wrk_installed().await { "wrk" } else { "in-process" };
    let mut rows: Vec<Row> = Vec::new();
    let mut notes = Vec::new();
    for policy in &args.policies {
        let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
        let mut config = LaunchConfig::base_port(dir.path(), args.base_port)?;
        config.node_args = vec!["--balance".to_string(), policy.clone()];
        if let Some(exe) = &args.node_binary {
            config.exe = exe.clone();
        }
        let mut cluster = LocalCluster::up(config, 3, 0).await?;
        let outcome = async {
            let client = cluster.client()?;
            wait_for_mesh(&client, if policy == "local" { 1 } else { 3 }).await?;
            let seed = seed_routes(&client).await?;
            let idle: Vec<String> = cluster
                .nodes
                .iter()
                .map(|n| num(n.pid().and_then(rss_bytes).map(|b| b as f64 / 1_048_576.0), 1))
                .collect();
            notes.push(format!("{policy}: RSS per node after seeding, before the load (MB): {}", idle.join(", ")));
            let mut health = None;
            for route in routes(&seed) {
                let url = format!("{}{}", cluster.nodes[0].api_url, route.path);
                let system = format!("panal {policy}");
                let result =
                    measure(generator, &system, &url, route.token.as_deref(), args.connections, duration).await;
                let max_rss_bytes = cluster.nodes.iter().filter_map(|n| n.pid().and_then(rss_bytes)).max();
                if route.name == "/health" {
                    health = Some(result.per_second);
                }
                let of_health = health.map(|h| result.per_second / h.max(1e-9));
                eprintln!(
                    "panal {policy:<12} {:<15} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  ×/health {}",
                    route.name,
                    result.per_second,
                    result.p50_ms,
                    result.p99_ms,
                    result.errors,
                    num(of_health, 2)
                );
                rows.push(Row { policy: policy.clone(), route: route.name, result, max_rss_bytes, of_health });
            }
            Ok::<_, Error>(())
        }
        .await;
        cluster.stop().await;
        outcome?;
    }
    if let Some(python) = &args.baseline_python {
        let (result, rss) = baseline(python, &args, generator, duration).await?;
        rows.push(Row {
            policy: "fastapi+sqlite".into(),
            route: "service ping",
            result,
            max_rss_bytes: rss,
            of_health: None,
        });
    } else {
        notes.push("FastAPI baseline skipped: no --baseline-python (scripts/bench-http.sh makes one)".to_string());
    }
    // Policies against `local`, route by route.
    for route in ["book list", "book page", "energy summary"] {
        let of =
            |policy: &str| rows.iter().find(|r| r.policy == policy && r.route == route).map(|r| r.result.per_second);
        if let Some(local) = of("local") {
            for policy in ["round-robin", "p2c"] {
                if let Some(other) = of(policy) {
                    notes.push(format!("{route}: {policy} / local = {:.2}", other / local.max(1e-9)));
                }
            }
        }
    }
    let baseline = rows.iter().find(|r| r.policy == "fastapi+sqlite").map(|r| r.result.per_second);
    let mut table = Table::new(&[
        "<system",
        "<route",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "max RSS MB",
        "× /health",
        "× FastAPI ping",
    ]);
    for r in &rows {
        let system = if r.policy == "fastapi+sqlite" { r.policy.clone() } else { format!("panal {}", r.policy) };
        table.row(vec![
            system,
            format!("`{}`", r.route),
            num(Some(r.result.per_second), 0),
            num(Some(r.result.p50_ms), 2),
            num(Some(r.result.p99_ms), 2),
            r.result.errors.to_string(),
            num(r.max_rss_bytes.map(|b| b as f64 / 1_048_576.0), 1),
            num(r.of_health, 2),
            num(baseline.map(|b| r.result.per_second / b.max(1e-9)), 1),
        ]);
    }
    Ok(Report {
        title: "HTTP through the gateway, per route and balancing policy".into(),
        command: format!("scripts/bench-http.sh --seconds {} --connections {}", args.seconds, args.connections),
        method: format!(
            "{} connections ({generator} load generator) through node 1 of a local 3-node cluster, once per balancing \
             policy (a fresh cluster each, seeded with {BOOKS} books and {METERS} meters × {READINGS_PER_METER} \
             readings), route by route: `/health` (HTTP and middleware only: the ceiling), the service ping \
             (`/api/v1/auth/ping`), a catalog page (`/api/v1/books?limit=20`), a book page (`/api/v1/books/{{id}}`) \
             and the meter owner's energy summary (`/api/v1/energy/summary`, with its token). × /health is the \
             row's throughput over `/health`'s in the same cluster. Beside them a single-process FastAPI + SQLite \
             service answers the ping route. Max RSS is the largest node's resident memory right after the run.",
            args.connections
        ),
        tables: vec![table],
        notes,
        data: serde_json::json!({ "generator": generator, "rows": rows }),
    })
}

/// The services benchmark's seed, smaller, plus readings for the energy summary.
async fn seed_routes(client: &Client) -> Result<Seed> {
    let seed = seed(client, BOOKS, METERS).await?;
    let owner = client.new_session();
    owner.set_token(Some(seed.meter_token.clone()));
    for (i, device) in seed.devices.iter().enumerate() {
        // A week of hourly readings from 2020-01-01.
        let hourly: Vec<serde_json::Value> = (0..READINGS_PER_METER)
            .map(|k| {
                let ts = panal_actors::time::rfc3339(1_577_836_800_000 + k as i64 * 3_600_000);
                serde_json::json!({ "ts": ts, "consumption_kwh": 0.2 + (k * 37 % 100) as f64 / 50.0 + i as f64 })
            })
            .collect();
        owner.post::<_, serde_json::Value>(&format!("/api/v1/devices/{device}/readings"), &hourly).await?;
    }
    Ok(seed)
}

async fn wrk_installed() -> bool {
    Command::new("wrk").arg("--version").output().await.is_ok()
}

/// Loads `url` with `connections` for `duration`, with wrk when installed.
async fn measure(
    generator: &str,
    system: &str,
    url: &str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
) -> LoadResult {
    if generator == "wrk" {
        match wrk(system, url, token, connections, duration).await {
            Ok(r) => return r,
            Err(e) => eprintln!("wrk failed ({e}); using the in-process load generator"),
        }
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(connections).build().unwrap_or_default();
    let (url, token) = (url.to_string(), token.map(String::from));
    load(system, connections, duration, move |_| {
        let mut req = http.get(&url);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await
}

async fn wrk(
    system: &str,
    url: &str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<LoadResult> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(connections.max(1));
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", &threads.to_string(), "-c", &connections.to_string()]).args([
        "-d",
        &format!("{}s", duration.as_secs().max(1)),
        "--latency",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().await.map_err(|e| Error::Fatal(format!("cannot run wrk: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Fatal(format!("wrk: {}{}", text, String::from_utf8_lossy(&out.stderr))));
    }
    parse_wrk(system, connections, &text)
}

/// Reads wrk's `--latency` report: requests, errors (non-2xx/3xx answers and socket
/// errors), requests/s, p50 and p99.
fn parse_wrk(system: &str, connections: usize, text: &str) -> Result<LoadResult> {
    let field = |prefix: &str| {
        text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix)).map(|rest| rest.trim().to_string())
    };
    let bad = || Error::Fatal(format!("unexpected wrk output:\n{text}"));
    let total: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(bad)?;
    let per_second: f64 = field("Requests/sec:").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let socket_errors: u64 = field("Socket errors:")
        .map(|v| v.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let latency = |pct: &str| field(pct).and_then(|v| duration_ms(&v)).ok_or_else(bad);
    let errors = non_2xx + socket_errors;
    let ok = total.saturating_sub(non_2xx);
    Ok(LoadResult {
        system: system.into(),
        writers: connections,
        ok,
        errors,
        per_second: per_second * ok as f64 / total.max(1) as f64,
        p50_ms: latency("50%")?,
        p99_ms: latency("99%")?,
    })
}

/// `812.00us`, `1.25ms`, `2.00s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * scale)
}

/// The FastAPI + SQLite baseline answering the ping route.
async fn baseline(
    python: &Path,
    args: &HttpBench,
    generator: &str,
    duration: Duration,
) -> Result<(LoadResult, Option<u64>)> {
    let python = std::path::absolute(python).map_err(|e| Error::Fatal(format!("{}: {e}", python.display())))?;
    let port = args.base_port + 400;
    let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    let app_dir = std::env::current_dir().map_err(|e| Error::Fatal(e.to_string()))?.join("scripts/baseline");
    let mut child = Command::new(&python)
        .args(["-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-level", "warning"])
        .current_dir(&app_dir)
        .env("BASELINE_DB", dir.path().join("baseline.db"))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Fatal(format!("cannot start the FastAPI baseline: {e}")))?;
    wait_for_mesh(&Client::new(&[format!("127.0.0.1:{port}")])?, 1).await?;
    let url = format!("http://127.0.0.1:{port}/api/v1/auth/ping");
    let r = measure(generator, "fastapi+sqlite", &url, None, args.connections, duration).await;
    let rss = child.id().and_then(rss_bytes);
    eprintln!(
        "fastapi+sqlite service ping    {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
        r.per_second, r.p50_ms, r.p99_ms, r.errors
    );
    let _ = child.kill().await;
    Ok((r, rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 2s test @ http://127.0.0.1:18700/health
  2 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.31ms  506.12us  12.01ms   80.10%
    Req/Sec    38.50k     2.10k   42.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.50ms
     90%    2.00ms
     99%    3.25ms
  153200 requests in 2.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 200
Requests/sec:  76600.00
Transfer/sec:     10.00MB
";

    #[test]
    fn wrk_reports_are_read_with_their_units_and_errors() {
        let r = parse_wrk("panal local", 100, WRK).unwrap();
        assert_eq!((r.ok, r.errors, r.writers), (153_000, 203, 100));
        assert!((r.p50_ms - 0.812).abs() < 1e-9 && (r.p99_ms - 3.25).abs() < 1e-9, "{r:?}");
        assert!((r.per_second - 76_600.0 * 153_000.0 / 153_200.0).abs() < 1e-6);
        assert!(parse_wrk("x", 1, "no report").is_err());
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("fast"), None);
    }
}
