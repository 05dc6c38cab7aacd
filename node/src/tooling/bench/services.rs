//! `bench services`: realistic service mixes (browsing the catalog, placing orders,
//! ingesting meter readings) through a local 3-node cluster, requests spread over every
//! node, beside a single-process FastAPI + SQLite service doing the same work
//! (`scripts/baseline/fastapi_services.py`; `scripts/bench-services.sh` runs both).

use super::*;
use crate::tooling::seed;
use panal_actors::catalog::NewBook;
use panal_actors::energy::{DeviceKind, NewDevice};

#[derive(Debug, Args)]
pub struct ServicesBench {
    /// Concurrent connections per mix.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds per mix and system.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Mixes to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "browse,purchase,ingest")]
    pub mixes: Vec<Mix>,
    /// Books in the seeded catalog.
    #[arg(long, default_value_t = 1000)]
    pub books: usize,
    /// Readings per ingest request (1 to 10,000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// First port: the cluster's nodes use base..base+22, the baseline base+400.
    #[arg(long, default_value_t = 19700)]
    pub base_port: u16,
    /// Python with fastapi and uvicorn installed, for the baseline (scripts/bench-services.sh
    /// makes one); without it the baseline is skipped.
    #[arg(long)]
    pub baseline_python: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A service mix of `bench services`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// GET /api/v1/books?limit=20 over the seeded catalog (public, no token).
    Browse,
    /// POST /api/v1/orders, quantity 1, on books whose stock never runs out, from a few buyers.
    Purchase,
    /// POST /api/v1/devices/{id}/readings in batches with new timestamps, one device per connection.
    Ingest,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Browse => "browse",
            Mix::Purchase => "purchase",
            Mix::Ingest => "ingest",
        }
    }

    /// What the items/s column counts for this mix.
    fn item(self) -> &'static str {
        match self {
            Mix::Browse => "books",
            Mix::Purchase => "orders",
            Mix::Ingest => "readings",
        }
    }
}

/// Books per page of the browse mix.
const PAGE: u64 = 20;
/// Distinct buyers of the purchase mix.
const BUYERS: usize = 4;
/// Books with the largest stock allowed, bought by the purchase mix.
const HOT_BOOKS: usize = 8;
/// Stock of a hot book (Panal's maximum): far more than a run can sell.
const HOT_STOCK: i64 = 1_000_000;
/// First reading timestamp of the ingest mix, 2020-01-01T00:00:00Z.
const READINGS_FROM_MS: i64 = 1_577_836_800_000;
const BENCH_PASSWORD: &str = "bench-password";

/// One mix run against one system.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MixResult {
    pub mix: Mix,
    /// What `items_per_second` counts: books listed, orders placed or readings stored.
    pub item: &'static str,
    pub items_per_request: u64,
    pub items_per_second: f64,
    pub result: LoadResult,
}

/// What seeding created on one system, used by the mixes (and by `bench http`'s routes).
pub(super) struct Seed {
    pub(super) buyer_tokens: Vec<String>,
    pub(super) hot_books: Vec<i64>,
    pub(super) meter_token: String,
    pub(super) devices: Vec<i64>,
}

/// The report, and the baseline's failure if it failed (panal's figures are still
/// reported; the command fails after printing them).
pub(super) async fn services(args: ServicesBench) -> Result<(Report, Option<Error>)> {
    if !(1..=10_000).contains(&args.batch) {
        return Err(Error::Fatal("--batch must be 1 to 10000".into()));
    }
    if args.connections == 0 || args.books < HOT_BOOKS {
        return Err(Error::Fatal(format!("--connections must be at least 1 and --books at least {HOT_BOOKS}")));
    }
    let started = Instant::now();
    let mut results = panal_services(&args).await?;
    let mut baseline_error = None;
    let baseline_note = match &args.baseline_python {
        Some(python) => match baseline_services(python, &args).await {
            Ok(rows) => {
                results.extend(rows);
                None
            }
            // Panal's figures are still worth printing; the run fails at the end.
            Err(e) => {
                let note = format!("baseline failed: {e}");
                baseline_error = Some(e);
                Some(note)
            }
        },
        None => Some("baseline skipped: no --baseline-python given (scripts/bench-services.sh makes one)".into()),
    };
    // One mix after another, panal first (the sort is stable).
    results.sort_by_key(|r| args.mixes.iter().position(|&m| m == r.mix));

    let baseline_of = |mix: Mix| results.iter().find(|r| r.mix == mix && r.result.system == "fastapi+sqlite");
    let ratio_of = |r: &MixResult| match baseline_of(r.mix) {
        Some(b) if r.result.system == "panal" => Some(r.result.per_second / b.result.per_second.max(1e-9)),
        _ => None,
    };
    let mut table =
        Table::new(&["<mix", "<system", "req/s", "items/s", "p50 ms", "p99 ms", "errors", "panal/baseline"]);
    for r in &results {
        table.row(vec![
            r.mix.name().to_string(),
            r.result.system.clone(),
            num(Some(r.result.per_second), 0),
            format!("{:.0} {}", r.items_per_second, r.item),
            num(Some(r.result.p50_ms), 2),
            num(Some(r.result.p99_ms), 2),
            r.result.errors.to_string(),
            ratio_of(r).map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into()),
        ]);
    }
    let total = started.elapsed().as_secs_f64();
    let mut notes: Vec<String> = baseline_note.iter().cloned().collect();
    notes.push(format!("whole run (start, seed, measure, stop): {total:.0} s"));
    let rows: Vec<_> = results
        .iter()
        .map(|r| {
            let mut row = serde_json::to_value(r).unwrap_or_default();
            row["ratio_to_baseline"] = serde_json::json!(ratio_of(r));
            row
        })
        .collect();
    let mixes: Vec<&str> = args.mixes.iter().map(|m| m.name()).collect();
    let report = Report {
        title: "Service mixes: BookStore and GRID".into(),
        command: format!(
            "scripts/bench-services.sh --seconds {} --connections {} --mixes {}",
            args.seconds,
            args.connections,
            mixes.join(",")
        ),
        method: format!(
            "{} connections, {} s per mix. browse: catalog search and book pages; purchase: an order and its \
             payment on {HOT_BOOKS} hot books; ingest: {} meter readings per request. panal: a local 3-node \
             cluster, requests round-robin over every node; baseline: one FastAPI + SQLite process with the same \
             routes (scripts/baseline/fastapi_services.py).",
            args.connections, args.seconds, args.batch
        ),
        tables: vec![table],
        notes,
        data: serde_json::json!({
            "connections": args.connections,
            "seconds": args.seconds,
            "books": args.books,
            "batch": args.batch,
            "results": rows,
            "baseline_note": baseline_note,
            "total_seconds": total,
        }),
    };
    Ok((report, baseline_error))
}

/// The client every mix and every seeding request uses.
fn bench_client(connections: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Fatal(e.to_string()))
}

/// Starts a 3-node cluster, seeds it, runs the mixes and stops it, whatever happened.
async fn panal_services(args: &ServicesBench) -> Result<Vec<MixResult>> {
    let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    // PANAL_BENCH_KEEP=1 keeps the cluster's data dirs and logs for inspection.
    let dir_path = if std::env::var_os("PANAL_BENCH_KEEP").is_some() { dir.keep() } else { dir.path().to_path_buf() };
    eprintln!("starting a 3-node panal cluster in {} (ports from {})", dir_path.display(), args.base_port);
    let mut cluster = LocalCluster::up(LaunchConfig::base_port(&dir_path, args.base_port)?, 3, 0).await?;
    let outcome = async {
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.api_url.clone()).collect();
        // Every node sees the others' service instances before the clock starts.
        wait_for_mesh(&cluster.client()?, urls.len()).await?;
        run_mixes("panal", &urls, args).await
    }
    .await;
    cluster.stop().await;
    outcome
}

/// Starts the FastAPI + SQLite baseline, seeds it, runs the mixes and stops it, whatever
/// happened.
async fn baseline_services(python: &Path, args: &ServicesBench) -> Result<Vec<MixResult>> {
    let python = std::path::absolute(python).map_err(|e| Error::Fatal(format!("{}: {e}", python.display())))?;
    let app_dir = std::env::current_dir().map_err(|e| Error::Fatal(e.to_string()))?.join("scripts/baseline");
    if !app_dir.join("fastapi_services.py").exists() {
        return Err(Error::Fatal(format!(
            "{} has no fastapi_services.py: run from the repository root",
            app_dir.display()
        )));
    }
    let port = args.base_port + 400;
    let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    let log_path = dir.path().join("baseline.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::Fatal(e.to_string()))?;
    eprintln!("starting the FastAPI + SQLite baseline on port {port}");
    let mut child = Command::new(&python)
        .args(["-m", "uvicorn", "fastapi_services:app", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--workers", "1", "--log-level", "warning", "--no-access-log"])
        .current_dir(&app_dir)
        .env("BASELINE_DB", dir.path().join("baseline.db"))
        .stdout(log.try_clone().map_err(|e| Error::Fatal(e.to_string()))?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Fatal(format!("cannot start the FastAPI baseline with {}: {e}", python.display())))?;
    let url = format!("http://127.0.0.1:{port}");
    let outcome = async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(Error::Fatal(format!("the FastAPI baseline exited ({status}):\n{log}")));
            }
            if http.get(format!("{url}/api/v1/books?limit=1")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!("the FastAPI baseline did not answer; see {}", log_path.display())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run_mixes("fastapi+sqlite", std::slice::from_ref(&url), args).await
    }
    .await;
    let _ = child.kill().await;
    outcome
}

/// Seeds one system through its HTTP API and runs every mix against it, requests spread
/// round-robin over `urls`.
async fn run_mixes(system: &str, urls: &[String], args: &ServicesBench) -> Result<Vec<MixResult>> {
    let http = bench_client(args.connections)?;
    let t = Instant::now();
    let seed = Arc::new(seed(&Client::new(urls)?, args.books, args.connections).await?);
    eprintln!(
        "{system}: seeded {} books, {} users, {} devices in {:.1} s",
        args.books,
        BUYERS + 2,
        args.connections,
        t.elapsed().as_secs_f64()
    );
    let urls = Arc::new(urls.to_vec());
    let mut out = Vec::new();
    for &mix in &args.mixes {
        let r = run_mix(system, mix, &http, &urls, &seed, args).await;
        eprintln!(
            "{system:<15} {:<9} {:>8.0} req/s {:>10.0} {}/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            mix.name(),
            r.result.per_second,
            r.items_per_second,
            r.item,
            r.result.p50_ms,
            r.result.p99_ms,
            r.result.errors
        );
        out.push(r);
    }
    Ok(out)
}

async fn run_mix(
    system: &str,
    mix: Mix,
    http: &reqwest::Client,
    urls: &Arc<Vec<String>>,
    seed: &Arc<Seed>,
    args: &ServicesBench,
) -> MixResult {
    let duration = Duration::from_secs(args.seconds);
    let (http, urls, seed) = (http.clone(), urls.clone(), seed.clone());
    let shown = Arc::new(AtomicU64::new(0));
    // The load generator numbers requests `(connection << 40) + n`.
    let conn = |seq: u64| (seq >> 40) as usize;
    let nth = |seq: u64| seq & ((1 << 40) - 1);
    let (items_per_request, result) = match mix {
        Mix::Browse => {
            let r = load(system, args.connections, duration, move |seq| {
                let url = format!("{}/api/v1/books?limit={PAGE}", urls[seq as usize % urls.len()]);
                succeeded(http.get(url), mix, shown.clone())
            })
            .await;
            (PAGE, r)
        }
        Mix::Purchase => {
            let r = load(system, args.connections, duration, move |seq| {
                let token = &seed.buyer_tokens[conn(seq) % seed.buyer_tokens.len()];
                let book = seed.hot_books[nth(seq) as usize % seed.hot_books.len()];
                let req = http
                    .post(format!("{}/api/v1/orders", urls[seq as usize % urls.len()]))
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "book_id": book, "quantity": 1 }));
                succeeded(req, mix, shown.clone())
            })
            .await;
            (1, r)
        }
        Mix::Ingest => {
            let batch = args.batch;
            let r = load(system, args.connections, duration, move |seq| {
                let device = seed.devices[conn(seq) % seed.devices.len()];
                // Each request of a connection covers the next `batch` seconds of its device.
                let body = readings_body(nth(seq) as i64 * batch as i64, batch);
                let req = http
                    .post(format!("{}/api/v1/devices/{device}/readings", urls[seq as usize % urls.len()]))
                    .bearer_auth(&seed.meter_token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                succeeded(req, mix, shown.clone())
            })
            .await;
            (batch as u64, r)
        }
    };
    MixResult {
        mix,
        item: mix.item(),
        items_per_request,
        items_per_second: result.per_second * items_per_request as f64,
        result,
    }
}

/// Sends a request and reads the whole answer: true on a 2xx. The first few failures of a
/// mix are printed with their status and body.
async fn succeeded(req: reqwest::RequestBuilder, mix: Mix, shown: Arc<AtomicU64>) -> bool {
    let failure = match req.send().await {
        Ok(r) if r.status().is_success() => return r.bytes().await.is_ok(),
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            format!("{status} {}", body.chars().take(300).collect::<String>())
        }
        Err(e) => e.to_string(),
    };
    if shown.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("  {} error: {failure}", mix.name());
    }
    false
}

/// `{"readings": [...]}` with `n` readings one second apart from second `first` of the ingest
/// range (seconds, not hours: millions of readings must stay in the past, where readings are
/// accepted).
pub(super) fn readings_body(first: i64, n: usize) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(16 + n * 64);
    body.push_str("{\"readings\":[");
    for k in 0..n as i64 {
        if k > 0 {
            body.push(',');
        }
        let second = first + k;
        let ts = panal_actors::time::rfc3339(READINGS_FROM_MS + second * 1000);
        let kwh = 0.2 + (second * 37 % 100) as f64 / 50.0;
        let _ = write!(body, "{{\"ts\":\"{ts}\",\"consumption_kwh\":{kwh:.3}}}");
    }
    body.push_str("]}");
    body
}

/// Registers `username` and logs in on node `i` with a session of its own; returns the
/// access token.
async fn account(api: &Client, i: usize, username: &str) -> Result<String> {
    let node = api.new_session().pinned(i % api.nodes().len());
    Ok(seed::account(&node, username, BENCH_PASSWORD, None).await?.token)
}

/// Creates the same data on any system through its HTTP API: a seller with `books` listings
/// (the first few with huge stock), a few buyers, and a meter owner with one device per
/// connection.
pub(super) async fn seed(api: &Client, books: usize, devices: usize) -> Result<Seed> {
    let seller = account(api, 0, "seller").await?;
    let mut buyer_tokens = Vec::new();
    for i in 0..BUYERS {
        buyer_tokens.push(account(api, i + 1, &format!("buyer{i}")).await?);
    }
    let meter_token = account(api, BUYERS + 1, "meter").await?;
    let currencies = ["EUR", "USD", "GBP"];
    let listings: Vec<NewBook> = (0..books)
        .map(|i| NewBook {
            title: format!("Book {i}: a field guide to distributed bookshops, volume {}", i % 7 + 1),
            author: format!("Author {}", i % 100),
            description: format!("Listing {i}. A well kept copy with a few notes in the margins; ships within two days from the seller's shelf."),
            price_cents: 500 + (i as i64 * 37) % 5000,
            currency: currencies[i % currencies.len()].into(),
            stock: if i < HOT_BOOKS { HOT_STOCK } else { 1 + i as i64 % 50 },
        })
        .collect();
    let seller_session = api.new_session();
    seller_session.set_token(Some(seller));
    let book_ids = seed::books(&seller_session, &listings, 16).await?;
    let meters: Vec<NewDevice> =
        (0..devices).map(|i| NewDevice { name: format!("meter {i}"), kind: DeviceKind::Meter }).collect();
    let owner = api.new_session();
    owner.set_token(Some(meter_token.clone()));
    let device_ids = seed::devices(&owner, &meters, 16).await?;
    Ok(Seed { buyer_tokens, hot_books: book_ids[..HOT_BOOKS].to_vec(), meter_token, devices: device_ids })
}
