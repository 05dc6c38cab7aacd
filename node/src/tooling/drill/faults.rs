//! Scenarios: which faults a drill injects, when, and how each is undone. Every fault is
//! logged with its start and heal times; the current one is shown on the progress line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use rand::rngs::StdRng;
use rand::Rng;

use super::history::{FaultEvent, Ms};
use super::target::Target;
use crate::error::Result;

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
    /// Faults drawn from all of the above for the whole duration, reproducible from --seed.
    Random,
}

/// The scenarios `random` draws from.
const SINGLE: [Scenario; 7] = [
    Scenario::LeaderKill,
    Scenario::LeaderPause,
    Scenario::WorkerKill,
    Scenario::PartitionMinority,
    Scenario::PartitionLeader,
    Scenario::RollingRestart,
    Scenario::ActorPanicStorm,
];

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
            Scenario::Random => "random",
        }
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

    fn now(&self) -> Ms {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    /// Records the start of a fault; returns its position for [`FaultLog::healed`].
    fn begin(&self, kind: &str, nodes: Vec<String>, hit_leader: bool) -> usize {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = format!("{kind} {}", nodes.join(","));
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push(FaultEvent { kind: kind.into(), nodes, start: self.now(), healed: None, hit_leader });
        events.len() - 1
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
            Scenario::Random => SINGLE[rng.random_range(0..SINGLE.len())],
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
            tokio::time::sleep(PAUSE_FOR).await;
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
        Scenario::Random => unreachable!("random draws single scenarios"),
    }
    Ok(())
}
