//! `bench orchestration`: how fast the built-in orchestration reacts, on a local 3-manager
//! cluster: a node holding the only replica of a service killed with SIGKILL → the first
//! request served by the rescheduled instance (several trials), a drain until the node runs
//! no task (but its own metrics), and a rolling restart of one service under a stream of requests with its
//! failed-request count.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use panal_actors::orchestration::{Availability, Constraint, Mode, TaskView};
use panal_actors::services::Service;
use serde_json::json;

use super::report::{num, Report, Table};
use crate::error::{Error, Result};
use crate::tooling::client::{Client, NodeUpdate, ServiceUpdate};
use crate::tooling::launcher::{LaunchConfig, LocalCluster};

#[derive(Debug, Args)]
pub struct OrchestrationBench {
    /// Node kills to time (at least 5 for a median worth the name).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub trials: u64,
    /// Concurrent request streams during the drain and the rolling restart.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// First port of the benchmark's cluster.
    #[arg(long, default_value_t = 16700)]
    pub base_port: u16,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// How long any one step may take before the benchmark gives up.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline of one probe request.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The service the benchmark moves around: the workload's busiest.
const SERVICE: &str = "catalog";

pub async fn run(args: OrchestrationBench) -> Result<Report> {
    let dir = tempfile::tempdir().map_err(|e| Error::Fatal(e.to_string()))?;
    eprintln!("starting a 3-manager panal cluster in {}", dir.path().display());
    let mut config = LaunchConfig::base_port(dir.path(), args.base_port)?;
    config.node_args = ["--pool-size", "2"].map(String::from).to_vec();
    let mut cluster = LocalCluster::up(config, 3, 0).await?;
    let outcome = measure(&mut cluster, &args).await;
    cluster.stop().await;
    let (kills, drain, restart) = outcome?;

    let mut sorted = kills.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied();
    let max = sorted.last().copied();
    let mut table = Table::new(&["<figure", "median ms", "max ms", "<detail"]);
    table.row(vec![
        "node kill → first request served by the rescheduled instance".into(),
        num(median, 0),
        num(max, 0),
        format!("{} trials: {}", kills.len(), kills.iter().map(|k| format!("{k:.0}")).collect::<Vec<_>>().join(", ")),
    ]);
    table.row(vec![
        "drain → the node runs no task".into(),
        num(Some(drain.ms), 0),
        "-".into(),
        format!("{} requests during the drain, {} failed", drain.sent, drain.failed),
    ]);
    table.row(vec![
        format!("rolling restart of {SERVICE} (3 nodes, one at a time, 300 ms apart)"),
        num(Some(restart.ms), 0),
        "-".into(),
        format!("{} requests during the restart, {} failed", restart.sent, restart.failed),
    ]);
    let notes = vec![
        "Docker Swarm for comparison (documented defaults, not measured here): a node is marked down after \
         about 3 missed 5 s heartbeats, and its tasks restart elsewhere after the 5 s restart delay, ≈15–20 s."
            .to_string(),
        "Aims: rescheduling < 2 s; no failed request during a drain or a rolling restart.".to_string(),
    ];
    Ok(Report {
        title: "Orchestration: rescheduling, drain, rolling restart".into(),
        command: format!("panal bench orchestration --trials {}", args.trials),
        method: format!(
            "A local 3-manager cluster (`--pool-size 2`). Rescheduling: `{SERVICE}` scaled to one replica kept off \
             the leader; the node holding it is killed with SIGKILL and requests to `/api/v1/{SERVICE}/ping` \
             through the leader (one every 5 ms, {} ms deadline each) time the first answer from another node; the \
             killed node is restarted between trials. Drain: `{SERVICE}` global again, a follower drained \
             (`PATCH /api/v1/cluster/nodes/{{id}}`) until no task is assigned to it but its own metrics, with {} request streams \
             through the other nodes. Rolling restart: `PATCH /api/v1/services/{SERVICE}` with `restart`, \
             parallelism 1 and 300 ms delay, until every task runs the new generation, under the same streams.",
            PROBE_TIMEOUT.as_millis(),
            args.connections
        ),
        tables: vec![table],
        notes,
        data: json!({
            "reschedule_ms": kills,
            "reschedule_median_ms": median,
            "reschedule_max_ms": max,
            "drain": { "ms": drain.ms, "requests": drain.sent, "failed": drain.failed },
            "rolling_restart": { "ms": restart.ms, "requests": restart.sent, "failed": restart.failed },
        }),
    })
}

/// A timed operation under a request stream.
struct UnderLoad {
    ms: f64,
    sent: u64,
    failed: u64,
}

async fn measure(cluster: &mut LocalCluster, args: &OrchestrationBench) -> Result<(Vec<f64>, UnderLoad, UnderLoad)> {
    let admin = cluster.admin_client().await?;
    super::wait_for_mesh(&admin, cluster.nodes.len()).await?;
    let mut kills = Vec::new();
    let mut constraint: Option<String> = None;
    for trial in 0..args.trials {
        let leader = super::leader_index(cluster, &admin).await?;
        let keep_off = format!("node.name!={}", cluster.nodes[leader].name);
        let mut patch = ServiceUpdate {
            mode: Some(Mode::Replicated),
            replicas: Some(1),
            constraint_add: vec![parse_constraint(&keep_off)?],
            ..Default::default()
        };
        if let Some(old) = constraint.replace(keep_off.clone()).filter(|old| *old != keep_off) {
            patch.constraint_rm = vec![parse_constraint(&old)?];
        }
        admin.update_service(SERVICE, &patch).await?;
        let via = admin.pinned(leader);
        let holder = until("one instance serving every request", || async {
            let tasks: Vec<TaskView> = admin.get(&format!("/api/v1/services/{SERVICE}/tasks")).await.ok()?;
            let [task] = tasks.as_slice() else { return None };
            if task.current_state != "running" {
                return None;
            }
            let first = served_by(&via).await?;
            for _ in 0..20 {
                if served_by(&via).await.as_ref() != Some(&first) {
                    return None;
                }
            }
            Some(first)
        })
        .await?;
        let victim = cluster
            .nodes
            .iter()
            .position(|n| n.name == holder)
            .ok_or_else(|| Error::Fatal(format!("{holder} is not a node of this cluster")))?;
        let killed = Instant::now();
        cluster.kill(victim);
        let moved_to = until("another node to serve", || async {
            let node = served_by(&via).await?;
            if node == holder {
                return None;
            }
            Some(node)
        })
        .await?;
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        eprintln!("trial {trial}: killed {holder}; served by {moved_to} after {ms:.0} ms");
        kills.push(ms);
        cluster.restart(victim)?;
        cluster.wait_ready(victim).await?;
        super::wait_for_mesh(&admin, cluster.nodes.len()).await?;
    }
    let mut back = ServiceUpdate { mode: Some(Mode::Global), ..Default::default() };
    if let Some(c) = constraint {
        back.constraint_rm = vec![parse_constraint(&c)?];
    }
    admin.update_service(SERVICE, &back).await?;
    until("every node serving again", || async {
        let tasks: Vec<TaskView> = admin.get(&format!("/api/v1/services/{SERVICE}/tasks")).await.ok()?;
        (tasks.len() == cluster.nodes.len() && tasks.iter().all(|t| t.current_state == "running")).then_some(())
    })
    .await?;

    // Drain a follower under load through the other nodes.
    let leader = super::leader_index(cluster, &admin).await?;
    let drained = (0..cluster.nodes.len()).find(|&i| i != leader).unwrap_or(0);
    let others: Vec<String> =
        cluster.nodes.iter().enumerate().filter(|(i, _)| *i != drained).map(|(_, n)| n.api_url.clone()).collect();
    let rows = admin.cluster_nodes().await?;
    let id = rows
        .iter()
        .find(|r| r.name == cluster.nodes[drained].name)
        .map(|r| r.id)
        .ok_or_else(|| Error::Fatal("the drained node is not listed".into()))?;
    let stream = Stream::start(&others, args.connections)?;
    let began = Instant::now();
    admin.update_node(id, &NodeUpdate { availability: Some(Availability::Drain), ..Default::default() }).await?;
    until("the drained node to run no task", || async {
        let tasks = all_tasks(&admin).await?;
        // Its own metrics stays: it reads that node's kernel statistics.
        tasks.iter().all(|t| t.node_id != Some(id) || t.service == Service::Metrics).then_some(())
    })
    .await?;
    let drain_ms = began.elapsed().as_secs_f64() * 1000.0;
    let (sent, failed) = stream.stop().await;
    let drain = UnderLoad { ms: drain_ms, sent, failed };
    eprintln!("drain: {drain_ms:.0} ms, {sent} requests, {failed} failed");
    admin.update_node(id, &NodeUpdate { availability: Some(Availability::Active), ..Default::default() }).await?;
    until("the activated node to run tasks again", || async {
        let tasks = all_tasks(&admin).await?;
        let serving = |t: &TaskView| t.node_id == Some(id) && t.service != Service::Metrics;
        tasks.iter().any(|t| serving(t) && t.current_state == "running").then_some(())
    })
    .await?;

    // A rolling restart under load through every node.
    let every: Vec<String> = cluster.nodes.iter().map(|n| n.api_url.clone()).collect();
    let stream = Stream::start(&every, args.connections)?;
    let began = Instant::now();
    let view = admin
        .update_service(
            SERVICE,
            &ServiceUpdate {
                restart: true,
                update_parallelism: Some(1),
                update_delay_ms: Some(300),
                ..Default::default()
            },
        )
        .await?;
    let generation = view.spec.restarts;
    until("every task restarted", || async {
        let tasks: Vec<TaskView> = admin.get(&format!("/api/v1/services/{SERVICE}/tasks")).await.ok()?;
        let done =
            !tasks.is_empty() && tasks.iter().all(|t| t.generation == Some(generation) && t.current_state == "running");
        done.then_some(())
    })
    .await?;
    let restart_ms = began.elapsed().as_secs_f64() * 1000.0;
    let (sent, failed) = stream.stop().await;
    eprintln!("rolling restart: {restart_ms:.0} ms, {sent} requests, {failed} failed");
    Ok((kills, drain, UnderLoad { ms: restart_ms, sent, failed }))
}

/// The node whose instance answered a ping of [`SERVICE`] through `via` (None: no answer
/// within [`PROBE_TIMEOUT`]).
async fn served_by(via: &Client) -> Option<String> {
    tokio::time::timeout(PROBE_TIMEOUT, via.ping(SERVICE)).await.ok()?.ok()
}

async fn all_tasks(admin: &Client) -> Option<Vec<TaskView>> {
    let mut all = Vec::new();
    for service in Service::ALL {
        all.extend(admin.get::<Vec<TaskView>>(&format!("/api/v1/services/{}/tasks", service.name())).await.ok()?);
    }
    Some(all)
}

/// Polls `probe` every 5 ms until it yields a value, for at most [`STEP_DEADLINE`].
async fn until<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(Error::Fatal(format!("bench orchestration: timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Idempotent requests (pings of [`SERVICE`]) from `connections` loops over `urls`, until
/// stopped; every failure counted.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Stream {
    fn start(urls: &[String], connections: usize) -> Result<Self> {
        let api = Client::with_timeout(urls, Duration::from_secs(5))?;
        let (stop, sent, failed) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let loops = (0..connections.max(1))
            .map(|c| {
                let node = api.pinned(c % urls.len());
                let (stop, sent, failed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
                    (stop.clone(), Arc::clone(&sent), Arc::clone(&failed));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        if node.ping(SERVICE).await.is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Ok(Self { stop, sent, failed, loops })
    }

    /// Stops the loops: (requests sent, failed).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.loops {
            let _ = l.await;
        }
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn parse_constraint(expr: &str) -> Result<Constraint> {
    Constraint::try_from(expr.to_string()).map_err(|why| Error::Fatal(format!("constraint {expr}: {why}")))
}
