//! Scenarios: which faults a drill injects, when, and how each is undone. Every fault is
//! logged with its start and heal times; the current one is shown on the progress line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use rand::rngs::StdRng;
use rand::Rng;

use panal_actors::orchestration::{Availability, Mode};
use panal_actors::services::Service;

use super::history::{FaultEvent, Ms};
use super::target::Target;
use crate::error::{Error, Result};
use crate::tooling::client::ServiceUpdate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// SIGKILL the leader (remote: crash hook), restart it, again until the end.
    LeaderKill,
    /// SIGSTOP the leader for a few seconds, then SIGCONT (remote: isolate it).
    LeaderPause,
    /// SIGKILL a worker (or a follower when there is none), restart it.
    WorkerKill,
    /// Cut one follower off from its peers for a few seconds.
    PartitionMinority,
    /// Cut the leader off from its peers for a few seconds.
    PartitionLeader,
    /// Stop (SIGTERM) and restart every node in turn, the leader last.
    RollingRestart,
    /// Make service workers panic on every node, several per second.
    ActorPanicStorm,
    /// Remove a live worker (or a follower when there is none) with the admin API; it must
    /// serve nothing from then on. It joins again afresh (local clusters only).
    RemoveNode,
    /// Cut the leader off and measure how soon its side refuses writes (503) and reports
    /// not ready.
    IsolateLeader,
    /// Node by node, the leader last: drain, stop, start the same binary again, activate.
    RollingUpgrade,
    /// Drain a node, wait until its tasks moved, activate it again.
    Drain,
    /// Scale catalog or energy down to a few replicated tasks, then back.
    Scale,
    /// Faults drawn from all of the above for the whole duration, reproducible from --seed.
    Random,
}

/// The scenarios `random` draws from.
const SINGLE: [Scenario; 12] = [
    Scenario::LeaderKill,
    Scenario::LeaderPause,
    Scenario::WorkerKill,
    Scenario::PartitionMinority,
    Scenario::PartitionLeader,
    Scenario::RollingRestart,
    Scenario::ActorPanicStorm,
    Scenario::RemoveNode,
    Scenario::IsolateLeader,
    Scenario::RollingUpgrade,
    Scenario::Drain,
    Scenario::Scale,
];

/// Services a `scale` fault scales: the ones the workload calls.
const SCALED: [Service; 2] = [Service::Catalog, Service::Energy];

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderKill => "leader-kill",
            Scenario::LeaderPause => "leader-pause",
            Scenario::WorkerKill => "worker-kill",
            Scenario::PartitionMinority => "partition-minority",
            Scenario::PartitionLeader => "partition-leader",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::ActorPanicStorm => "actor-panic-storm",
            Scenario::RemoveNode => "remove-node",
            Scenario::IsolateLeader => "isolate-leader",
            Scenario::RollingUpgrade => "rolling-upgrade",
            Scenario::Drain => "drain",
            Scenario::Scale => "scale",
            Scenario::Random => "random",
        }
    }

    /// Whether the scenario can run on this target (joining a removed node again afresh
    /// needs its data directory).
    pub fn runs_on(self, target: &Target) -> bool {
        self != Scenario::RemoveNode || target.is_local()
    }
}

/// How long a killed node stays down, a frozen node frozen, an isolated node isolated.
const DOWN_FOR: Duration = Duration::from_secs(2);
const PAUSE_FOR: Duration = Duration::from_secs(4);
const ISOLATE_SECONDS: u64 = 5;
/// Calm between two faults, so that each failover is measured from a healthy cluster.
const SETTLE: Duration = Duration::from_secs(2);
/// One panic-storm burst: this many panics, one every `STORM_EVERY`.
const STORM_PANICS: usize = 12;
const STORM_EVERY: Duration = Duration::from_millis(250);
const STORM_SERVICES: [&str; 3] = ["catalog", "energy", "auth"];
/// How long a scaled-down service stays scaled down.
const SCALED_FOR: Duration = Duration::from_secs(3);
/// Probes of the isolated side: one every this often, each with this deadline.
const PROBE_EVERY: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The fault log and the progress line's "current fault".
pub struct FaultLog {
    t0: Instant,
    pub events: Mutex<Vec<FaultEvent>>,
    pub current: Mutex<String>,
}

impl FaultLog {
    pub fn new(t0: Instant) -> Arc<Self> {
        Arc::new(Self { t0, events: Mutex::new(Vec::new()), current: Mutex::new("none".into()) })
    }

    pub fn now(&self) -> Ms {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    /// Records the start of a fault; returns its position for [`FaultLog::healed`].
    fn begin(&self, kind: &str, nodes: Vec<String>, hit_leader: bool) -> usize {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = format!("{kind} {}", nodes.join(","));
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push(FaultEvent { kind: kind.into(), nodes, start: self.now(), hit_leader, ..Default::default() });
        events.len() - 1
    }

    /// Records what was measured during fault `at`.
    fn measure(&self, at: usize, update: impl FnOnce(&mut FaultEvent)) {
        if let Some(e) = self.events.lock().unwrap_or_else(|p| p.into_inner()).get_mut(at) {
            update(e);
        }
    }

    fn healed(&self, at: usize) {
        let now = self.now();
        if let Some(e) = self.events.lock().unwrap_or_else(|p| p.into_inner()).get_mut(at) {
            e.healed = Some(now);
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = "none".into();
    }
}

/// Runs `scenario` until `stop`, then returns (the caller heals whatever is left).
pub async fn run(
    scenario: Scenario,
    target: &mut Target,
    log: &FaultLog,
    rng: &mut StdRng,
    stop: Instant,
) -> Result<()> {
    // Let the workload reach its pace before the first fault.
    tokio::time::sleep(SETTLE.min(stop.saturating_duration_since(Instant::now()))).await;
    while Instant::now() + SETTLE < stop {
        let once = match scenario {
            Scenario::Random => {
                let fits: Vec<Scenario> = SINGLE.into_iter().filter(|s| s.runs_on(target)).collect();
                fits[rng.random_range(0..fits.len())]
            }
            s if !s.runs_on(target) => {
                return Err(Error::Fatal(format!("{} needs a local cluster (--cluster local)", s.name())))
            }
            s => s,
        };
        inject(once, target, log, rng).await?;
        let calm = match scenario {
            Scenario::Random => Duration::from_millis(rng.random_range(1000..3000)),
            _ => SETTLE,
        };
        tokio::time::sleep(calm.min(stop.saturating_duration_since(Instant::now()))).await;
    }
    Ok(())
}

/// Injects one fault of `scenario` and undoes it, waiting until the nodes hit are ready.
async fn inject(scenario: Scenario, target: &mut Target, log: &FaultLog, rng: &mut StdRng) -> Result<()> {
    let name = scenario.name();
    let leader = target.wait_leader().await?;
    let n = target.urls.len();
    let follower = |rng: &mut StdRng| {
        let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
        others.get(rng.random_range(0..others.len().max(1))).copied().unwrap_or(leader)
    };
    match scenario {
        Scenario::LeaderKill | Scenario::WorkerKill => {
            let victim = if scenario == Scenario::LeaderKill {
                leader
            } else {
                let workers = target.workers().await;
                if workers.is_empty() {
                    follower(rng)
                } else {
                    workers[rng.random_range(0..workers.len())]
                }
            };
            let at = log.begin(name, vec![target.names[victim].clone()], victim == leader);
            target.kill(victim).await?;
            if target.is_local() {
                tokio::time::sleep(DOWN_FOR).await;
            }
            target.restart(victim).await?;
            log.healed(at);
        }
        Scenario::LeaderPause if target.is_local() => {
            let at = log.begin(name, vec![target.names[leader].clone()], true);
            target.pause(leader)?;
            let paused = Instant::now();
            if let Some(t) = new_leader_within(target, leader, PAUSE_FOR).await {
                log.measure(at, |e| e.new_leader_after = Some(ms(t)));
            }
            tokio::time::sleep(PAUSE_FOR.saturating_sub(paused.elapsed())).await;
            target.resume(leader)?;
            target.wait_ready(leader).await?;
            log.healed(at);
        }
        Scenario::LeaderPause | Scenario::PartitionLeader | Scenario::PartitionMinority => {
            let victim = if scenario == Scenario::PartitionMinority { follower(rng) } else { leader };
            let seconds = if scenario == Scenario::LeaderPause { PAUSE_FOR.as_secs() } else { ISOLATE_SECONDS };
            let at = log.begin(name, vec![target.names[victim].clone()], victim == leader);
            target.isolate(victim, seconds).await?;
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            target.isolated_until[victim] = None;
            target.wait_rejoined(victim).await?;
            log.healed(at);
        }
        Scenario::RollingRestart => {
            let mut order: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
            order.push(leader);
            for i in order {
                let at = log.begin(name, vec![target.names[i].clone()], i == leader);
                target.terminate(i).await?;
                target.restart(i).await?;
                log.healed(at);
            }
        }
        Scenario::ActorPanicStorm => {
            let at = log.begin(name, target.names.clone(), false);
            for _ in 0..STORM_PANICS {
                let node = rng.random_range(0..n);
                let service = STORM_SERVICES[rng.random_range(0..STORM_SERVICES.len())];
                // A worker may be between restarts, or its service past its restart limit:
                // the storm goes on.
                if let Err(e) = target.panic_worker(node, service).await {
                    tracing::debug!(error = %e, "panic refused");
                }
                tokio::time::sleep(STORM_EVERY).await;
            }
            log.healed(at);
        }
        Scenario::RemoveNode => {
            let workers = target.workers().await;
            let victim = if workers.is_empty() { follower(rng) } else { workers[rng.random_range(0..workers.len())] };
            let at = log.begin(name, vec![target.names[victim].clone()], false);
            target.remove(victim).await?;
            let removed_at = log.now();
            log.measure(at, |e| e.removed_at = Some(removed_at));
            // Long enough for the workload to knock on the removed node's door many times.
            tokio::time::sleep(DOWN_FOR).await;
            log.healed(at);
            target.rejoin(victim).await?;
        }
        Scenario::IsolateLeader => {
            let at = log.begin(name, vec![target.names[leader].clone()], true);
            target.isolate(leader, ISOLATE_SECONDS).await?;
            let window = Duration::from_secs(ISOLATE_SECONDS);
            let (refused, unready, elected) = tokio::join!(
                first_refusal(target, leader, window),
                first_unready(target, leader, window),
                new_leader_within(target, leader, window)
            );
            log.measure(at, |e| {
                e.refused_after = refused.map(ms);
                e.unready_after = unready.map(ms);
                e.new_leader_after = elected.map(ms);
            });
            let left = target.isolated_until[leader].map(|u| u.saturating_duration_since(Instant::now()));
            tokio::time::sleep(left.unwrap_or_default()).await;
            target.isolated_until[leader] = None;
            target.wait_rejoined(leader).await?;
            log.healed(at);
        }
        Scenario::RollingUpgrade => {
            let mut order: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
            order.push(leader);
            for i in order {
                let at = log.begin(name, vec![target.names[i].clone()], i == leader);
                drain(target, log, at, i).await?;
                target.terminate(i).await?;
                target.restart(i).await?;
                target.set_availability(i, Availability::Active).await?;
                target.wait_serving(i).await?;
                log.healed(at);
            }
        }
        Scenario::Drain => {
            let victim = rng.random_range(0..n);
            let at = log.begin(name, vec![target.names[victim].clone()], victim == leader);
            drain(target, log, at, victim).await?;
            tokio::time::sleep(SETTLE).await;
            target.set_availability(victim, Availability::Active).await?;
            target.wait_serving(victim).await?;
            log.healed(at);
        }
        Scenario::Scale => {
            let service = SCALED[rng.random_range(0..SCALED.len())];
            let replicas = rng.random_range(1..n.max(2));
            let at = log.begin(name, vec![format!("{}={replicas}", service.name())], false);
            let before = target.service_scale(service).await?;
            let scaled = ServiceUpdate {
                mode: Some(Mode::Replicated),
                replicas: Some(u32::try_from(replicas).unwrap_or(1)),
                ..Default::default()
            };
            target.update_service(service, &scaled).await?;
            target.wait_replicas(service, replicas).await?;
            tokio::time::sleep(SCALED_FOR).await;
            target.update_service(service, &before).await?;
            log.healed(at);
        }
        Scenario::Random => unreachable!("random draws single scenarios"),
    }
    Ok(())
}

fn ms(d: Duration) -> Ms {
    d.as_secs_f64() * 1000.0
}

/// Drains node `i` and records how long until it ran no task (but its own metrics).
async fn drain(target: &mut Target, log: &FaultLog, at: usize, i: usize) -> Result<()> {
    let began = Instant::now();
    target.set_availability(i, Availability::Drain).await?;
    target.wait_drained(i).await?;
    log.measure(at, |e| e.drained_after = Some(ms(began.elapsed())));
    Ok(())
}

/// How long until the nodes other than `old` agree on a leader other than `old` (None:
/// not within `window`).
async fn new_leader_within(target: &Target, old: usize, window: Duration) -> Option<Duration> {
    let began = Instant::now();
    let others: Vec<usize> = target.running().into_iter().filter(|&i| i != old).collect();
    while began.elapsed() < window {
        for &i in &others {
            if let Some(name) = target.leader_seen_by(i).await {
                if name != target.names[old] {
                    return Some(began.elapsed());
                }
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    None
}

/// How long until isolated node `i` answered a write with 503 (it knows it cannot reach a
/// quorum), probing with idempotent key-value writes.
async fn first_refusal(target: &Target, i: usize, window: Duration) -> Option<Duration> {
    let began = Instant::now();
    let node = target.api.pinned(i);
    let mut n = 0;
    while began.elapsed() < window {
        n += 1;
        let key = format!("isolate-probe-{}-{n}", crate::server::identity::random_hex(4));
        let put = tokio::time::timeout(PROBE_TIMEOUT, node.kv_put("drill-isolate-probe", "x", Some(&key))).await;
        if matches!(put, Ok(Err(ref e)) if e.status() == Some(503)) {
            return Some(began.elapsed());
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    None
}

/// How long until isolated node `i`'s `/ready` answered anything but 200.
async fn first_unready(target: &Target, i: usize, window: Duration) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() < window {
        if !target.api.is_ready(i, PROBE_TIMEOUT).await {
            return Some(began.elapsed());
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    None
}
