//! `panal drill SCENARIO`: rehearse failures on a cluster and get a verdict. Starts (or
//! takes over) a local cluster, or drives remote nodes started with `--chaos`; runs a
//! recorded workload from several clients while the scenario injects faults; heals the
//! cluster; reads every node back; checks the history (nothing acknowledged lost, nothing
//! applied twice, stock conserved, linearizable reads fresh, nodes converged and ready);
//! prints and writes the report. Exits non-zero when any check fails.

pub mod checker;
pub mod faults;
pub mod figures;
pub mod history;
pub mod observe;
pub mod report;
pub mod target;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::{Error, Result};
use faults::{FaultLog, Scenario};
use history::History;
use target::Target;
use workload::Workload;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// What to break.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// `local` (start a cluster here), or the API URLs of every node of a cluster started
    /// with --chaos.
    #[arg(long, num_args = 1.., default_value = "local")]
    pub cluster: Vec<String>,
    /// How long the workload runs while faults are injected (e.g. 30s, 10m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Target operations per second, over all clients.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub clients: u64,
    /// Seed of the fault plan and of the clients' choices (printed; random when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for report.md, figures.json, timeline.svg and history.json.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Managers of the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Workers of the local cluster, besides the managers.
    #[arg(long, default_value_t = 0)]
    pub workers: u16,
    /// Data directory of the local cluster (a `panal up --dir` directory is taken over);
    /// default: a temporary one, kept when the drill fails.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First API port of the local cluster (node i: base+10·i, +1 peer, +2 mesh).
    #[arg(long, default_value_t = 20700)]
    pub base_port: u16,
    /// Admin password of a remote cluster.
    #[arg(long, env = "PANAL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// PEM file of the CA(s) a remote cluster's HTTPS API certificates chain to (`panal ca
    /// export`); with it, bare HOST:PORT in --cluster means https.
    #[arg(long, env = "PANAL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Unpaid orders release their stock after 15 minutes; the stock checks assume none did.
const MAX_DURATION: Duration = Duration::from_secs(14 * 60);

/// `90`, `90s`, `500ms`, `10m`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration: use 90s, 10m or 500ms"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" | "min" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?}; use s, m or ms")),
    }
}

pub async fn run(args: DrillArgs) -> Result<()> {
    if args.duration < Duration::from_secs(5) || args.duration > MAX_DURATION {
        return Err(Error::Fatal(
            "--duration must be 5s to 14m (unpaid orders release their stock after 15 minutes)".into(),
        ));
    }
    let local = args.cluster == ["local"];
    if local && args.nodes < 3 {
        return Err(Error::Fatal("--nodes must be at least 3: a fault must leave a quorum of managers".into()));
    }
    if !local && args.cluster.len() < 3 {
        return Err(Error::Fatal("--cluster needs the URL of every node (at least 3), or `local`".into()));
    }
    if local && args.ca_file.is_some() {
        return Err(Error::Fatal(
            "--ca-file is for a remote --cluster; a local cluster's CA is trusted already".into(),
        ));
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("drill {}: seed {seed} (reproduce the fault plan with --seed {seed})", args.scenario.name());

    let temp = tempfile::Builder::new().prefix("panal-drill-").tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    let mut target = if local {
        let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
        eprintln!(
            "starting a local cluster of {} managers and {} workers in {}",
            args.nodes,
            args.workers,
            dir.display()
        );
        let mut config = crate::tooling::launcher::LaunchConfig::base_port(&dir, args.base_port)?;
        config.node_args = ["--chaos", "--balance", "local"].map(String::from).to_vec();
        let cluster =
            crate::tooling::launcher::LocalCluster::up(config, args.nodes as usize, args.workers as usize).await?;
        Target::local(cluster).await?
    } else {
        let password = args.password.clone().ok_or_else(|| {
            Error::Fatal("a remote drill needs the admin password: --password or PANAL_PASSWORD".into())
        })?;
        let urls = args.cluster.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        let trust = match &args.ca_file {
            Some(file) => crate::tooling::client::Trust::from_pem_file(file)?,
            None => crate::tooling::client::Trust::default(),
        };
        Target::remote(urls, &password, &trust).await?
    };
    let outcome = tokio::select! {
        r = drill(&args, seed, &mut target) => r,
        _ = crate::server::start::shutdown_signal() => Err(Error::Fatal("interrupted".into())),
    };
    target.shut_down().await;
    match &outcome {
        Ok(true) => {}
        _ if local && args.dir.is_none() => eprintln!("cluster data and logs kept in {}", temp.keep().display()),
        _ => {}
    }
    match outcome? {
        true => Ok(()),
        false => Err(Error::Fatal("the drill failed (see the checks above)".into())),
    }
}

/// Seeds, runs the workload and the scenario, heals, checks and reports. True when every
/// check passed.
async fn drill(args: &DrillArgs, seed: u64, target: &mut Target) -> Result<bool> {
    let clients = args.clients as usize;
    let run = crate::server::identity::random_hex(4);
    let expected_units = (args.rate as f64 * 0.4 * 2.0 * args.duration.as_secs_f64()) as i64;
    let seeded = workload::seed(&target.api, &run, clients, expected_units).await?;
    let t0 = Instant::now();
    let stop = t0 + args.duration;
    let w = Arc::new(Workload {
        http: target.http.clone(),
        urls: target.urls.clone(),
        seed: seeded,
        run,
        t0,
        ops: Mutex::new(Vec::new()),
        progress: Default::default(),
    });
    let interval = Duration::from_secs_f64(clients as f64 / args.rate as f64);
    let mut tasks: Vec<_> =
        (0..clients).map(|c| tokio::spawn(workload::client(w.clone(), c, seed, interval, stop))).collect();
    tasks.push(tokio::spawn(workload::restocker(w.clone(), stop)));
    let log = FaultLog::new(t0);
    let progress = tokio::spawn(show_progress(w.clone(), log.clone(), args.duration));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fault_errors = Vec::new();
    if let Err(e) = faults::run(args.scenario, target, &log, &mut rng, stop).await {
        eprintln!("drill: fault injection failed: {e}");
        fault_errors.push(e.to_string());
    }
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    eprintln!("workload stopped; healing the cluster");
    let unready = target.heal().await;
    let ops = std::mem::take(&mut *w.ops.lock().unwrap_or_else(|p| p.into_inner()));
    // The workload ended at `stop`, or with its last operation; faults may go on after it
    // (a rolling upgrade finishes its round), which is no window without writes.
    let end = ops.iter().map(history::Op::end).fold(w.ms(stop), f64::max);
    let faults = std::mem::take(&mut *log.events.lock().unwrap_or_else(|p| p.into_inner()));
    let history = History {
        scenario: args.scenario.name().into(),
        seed,
        nodes: target.names.clone(),
        books: w.seed.books.clone(),
        devices: w.seed.devices.clone(),
        ops,
        faults,
        fault_errors,
        end,
    };
    eprintln!("reading every node back");
    let observed = observe::observe(target, &w.seed, &unready).await;
    let checks = checker::check(&history, &observed);
    let figures = figures::figures(&history);
    println!("{}", report::summary(&history, &figures, &checks));
    if let Some(dir) = &args.report {
        let command: Vec<String> = std::env::args().collect();
        report::write(dir, &history, &figures, &checks, &command.join(" "))?;
        std::fs::write(dir.join("observed.json"), serde_json::to_vec(&observed).unwrap_or_default())
            .map_err(|e| Error::Fatal(format!("cannot write the report: {e}")))?;
        println!("report written to {}", dir.display());
    }
    Ok(checks.iter().all(checker::Check::passed))
}

/// Once a second: elapsed time, current fault, acknowledged ops/s, failed attempts and,
/// apart from them, business rejections (`out_of_stock`…: the cluster worked).
async fn show_progress(w: Arc<Workload>, log: Arc<FaultLog>, duration: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut ok_before, mut err_before, mut rej_before) = (0, 0, 0);
    loop {
        tick.tick().await;
        let ok = w.progress.ok.load(Ordering::Relaxed);
        let errors = w.progress.errors.load(Ordering::Relaxed);
        let rejections = w.progress.rejections.load(Ordering::Relaxed);
        let fault = log.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        eprintln!(
            "[{:>4.0}s/{}s] fault: {fault:<28} {:>5} ops/s  {:>4} errors/s  {:>4} rejected/s  ({errors} errors, {rejections} business rejections in all)",
            w.t0.elapsed().as_secs_f64(),
            duration.as_secs(),
            ok - ok_before,
            errors - err_before,
            rejections - rej_before
        );
        (ok_before, err_before, rej_before) = (ok, errors, rejections);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("").is_err());
    }
}
