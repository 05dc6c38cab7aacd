//! Supervision: a node supervisor → one supervisor per service → a pool of workers.
//!
//! Workers are restarted one-for-one with exponential backoff. Past the restart-intensity
//! limit (default 10 restarts in 10 s) the service is marked failed on this node: its
//! workers stop, which takes them out of the process group so no gateway routes to them,
//! and the whole pool is started again after a cooldown. Every restart is counted in
//! `panal_actor_restarts_total{service}` and logged with the panic message.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::worker::WorkerArgs;

/// HELP text of the series the supervisors publish.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("panal_actor_pool_size", "Workers of a service running on this node.");
    describe_counter!("panal_actor_restarts_total", "Restarts of a service's workers (and of the metrics collector).");
    describe_counter!(
        "panal_service_failures_total",
        "Times a service was marked failed on this node (past its restart-intensity limit)."
    );
    super::answers::describe_metrics();
}
use super::{Service, ServiceContext, ServiceHealth, ServiceWorker};

/// When and how often a service's workers are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Most restarts tolerated within `window` before the service is marked failed.
    pub max_restarts: usize,
    pub window: Duration,
    /// First restart delay; doubles with each recent restart up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a failed service stays down before it is tried again.
    pub cooldown: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            window: Duration::from_secs(10),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_secs(1),
            cooldown: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// Delay before the restart that follows `recent` restarts in the window.
    pub fn backoff(&self, recent: usize) -> Duration {
        let factor = 1u32 << recent.saturating_sub(1).min(16);
        self.backoff_base.saturating_mul(factor).min(self.backoff_max)
    }
}

/// Local-only messages a service supervisor sends itself (timers).
#[derive(ractor_cluster::RactorMessage)]
pub enum SupervisorMsg {
    Respawn(usize),
    Retry,
    /// Run this many workers from now on (0: none; the supervisor stays, ready to grow).
    Resize(usize),
    /// Replace every worker: each new one joins the process group before the old one
    /// leaves it, so the service never has fewer instances.
    Restart,
}

/// How long a worker taken out of its process group keeps answering before it stops:
/// gateways that chose it just before the group change reached them still get an answer.
pub const RETIRE_GRACE: Duration = Duration::from_secs(3);

pub struct ServiceSupervisor;

pub struct SupervisorArgs {
    pub ctx: Arc<ServiceContext>,
    pub service: Service,
    pub pool_size: usize,
    pub policy: RestartPolicy,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    /// Live workers and the pool slot each fills.
    workers: HashMap<ActorId, (usize, ActorCell)>,
    restarts: VecDeque<Instant>,
    failed: bool,
}

impl SupervisorState {
    fn publish_health(&self) {
        if !self.failed {
            let health = ServiceHealth::Running { workers: self.workers.len() };
            self.args.ctx.set_health(self.args.service, health);
        }
        metrics::gauge!("panal_actor_pool_size", "service" => self.args.service.name()).set(self.workers.len() as f64);
    }
}

async fn spawn_worker(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    slot: usize,
) -> Result<(), ActorProcessingErr> {
    let args = WorkerArgs { ctx: state.args.ctx.clone(), service: state.args.service, slot };
    let (worker, _) = Actor::spawn_linked(None, ServiceWorker, args, myself.get_cell()).await?;
    state.workers.insert(worker.get_id(), (slot, worker.get_cell()));
    Ok(())
}

/// Starts the missing slots below `pool_size` and retires the workers above it.
async fn resize(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
    let size = state.args.pool_size;
    let retiring: Vec<ActorId> =
        state.workers.iter().filter(|(_, (slot, _))| *slot >= size).map(|(id, _)| *id).collect();
    for id in retiring {
        // No longer tracked, so its stop is not taken for a crash.
        let Some((_, cell)) = state.workers.remove(&id) else { continue };
        retire(state.args.service, &state.args.ctx.node_name, cell);
    }
    let used: Vec<usize> = state.workers.values().map(|(slot, _)| *slot).collect();
    for slot in (0..size).filter(|s| !used.contains(s)) {
        spawn_worker(myself, state, slot).await?;
    }
    Ok(())
}

/// Takes a worker out of its process groups at once, so no new request is routed to it,
/// and stops it after [`RETIRE_GRACE`]. Its in-flight calls run in their own tasks and
/// finish either way.
fn retire(service: Service, node_name: &str, cell: ActorCell) {
    leave_groups(service, node_name, &cell);
    tokio::spawn(async move {
        tokio::time::sleep(RETIRE_GRACE).await;
        cell.stop(Some("scaled down".into()));
    });
}

/// Takes a worker out of the process groups gateways route by. A stopping actor leaves them
/// only once it has stopped; this makes it unreachable at once.
fn leave_groups(service: Service, node_name: &str, cell: &ActorCell) {
    ractor::pg::leave(service.group(), vec![cell.clone()]);
    if service == Service::Metrics {
        ractor::pg::leave(crate::metrics::ops::node_group(node_name), vec![cell.clone()]);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Actor for ServiceSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState { args, workers: HashMap::new(), restarts: VecDeque::new(), failed: false };
        for slot in 0..state.args.pool_size {
            spawn_worker(&myself, &mut state, slot).await?;
        }
        state.publish_health();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Respawn(slot) if !state.failed && slot < state.args.pool_size => {
                spawn_worker(&myself, state, slot).await?
            }
            SupervisorMsg::Respawn(_) => {}
            SupervisorMsg::Restart if !state.failed => {
                let old: Vec<(usize, ActorCell)> = std::mem::take(&mut state.workers).into_values().collect();
                for (slot, cell) in old {
                    spawn_worker(&myself, state, slot).await?;
                    retire(state.args.service, &state.args.ctx.node_name, cell);
                }
            }
            SupervisorMsg::Restart => {}
            SupervisorMsg::Resize(size) => {
                state.args.pool_size = size;
                if !state.failed {
                    resize(&myself, state).await?;
                }
            }
            SupervisorMsg::Retry => {
                tracing::info!(service = state.args.service.name(), "cooldown over; starting the service again");
                state.failed = false;
                state.restarts.clear();
                for slot in 0..state.args.pool_size {
                    spawn_worker(&myself, state, slot).await?;
                }
            }
        }
        state.publish_health();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason): (ActorCell, String) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_else(|| "stopped".into())),
            _ => return Ok(()),
        };
        state.args.ctx.set_slot(cell.get_id(), None);
        // Workers we stopped ourselves (service marked failed) are no longer tracked.
        let Some((slot, _)) = state.workers.remove(&cell.get_id()) else { return Ok(()) };
        let service = state.args.service;
        let policy = state.args.policy;
        metrics::counter!("panal_actor_restarts_total", "service" => service.name()).increment(1);
        let now = Instant::now();
        state.restarts.push_back(now);
        while state.restarts.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
            state.restarts.pop_front();
        }
        if state.restarts.len() > policy.max_restarts {
            tracing::error!(service = service.name(), restarts = state.restarts.len(), window = ?policy.window, cooldown = ?policy.cooldown, last_error = %reason,
                "restart intensity exceeded: service marked failed on this node");
            state.failed = true;
            // Out of the process groups before the health says failed: no gateway routes here any more.
            for (_, worker) in std::mem::take(&mut state.workers).into_values() {
                leave_groups(service, &state.args.ctx.node_name, &worker);
                worker.stop(Some("service marked failed".into()));
            }
            state.args.ctx.set_health(
                service,
                ServiceHealth::Failed {
                    reason: format!("{} restarts within {:?}; last: {reason}", state.restarts.len(), policy.window),
                    retry_at_ms: now_ms() + policy.cooldown.as_millis() as i64,
                },
            );
            metrics::counter!("panal_service_failures_total", "service" => service.name()).increment(1);
            myself.send_after(policy.cooldown, || SupervisorMsg::Retry);
        } else {
            let delay = policy.backoff(state.restarts.len());
            tracing::warn!(service = service.name(), slot, error = %reason, ?delay, "worker died; restarting");
            myself.send_after(delay, move || SupervisorMsg::Respawn(slot));
        }
        state.publish_health();
        Ok(())
    }
}

/// Keeps every service supervisor running, each with the number of workers the node's
/// orchestration reconciler asks for (`--pool-size` until it asks).
pub struct NodeSupervisor;

/// What the reconciler tells the node supervisor.
#[derive(ractor_cluster::RactorMessage)]
pub enum NodeSupervisorMsg {
    /// Run `workers` workers of `service` on this node (0: none).
    SetWorkers(Service, usize),
    /// Replace every worker of `service` (a rolling restart's step on this node).
    Restart(Service),
}

pub struct NodeSupervisorState {
    args: (Arc<ServiceContext>, usize, RestartPolicy),
    supervisors: HashMap<ActorId, Service>,
    refs: HashMap<Service, ActorRef<SupervisorMsg>>,
    /// Workers asked for per service; a restarted service supervisor starts with these.
    sizes: HashMap<Service, usize>,
}

async fn spawn_service(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
    service: Service,
) -> Result<(), ActorProcessingErr> {
    let (ctx, default_size, policy) = state.args.clone();
    let pool_size = state.sizes.get(&service).copied().unwrap_or(default_size);
    let args = SupervisorArgs { ctx, service, pool_size, policy };
    let (sup, _) = Actor::spawn_linked(None, ServiceSupervisor, args, myself.get_cell()).await?;
    state.supervisors.insert(sup.get_id(), service);
    state.refs.insert(service, sup);
    Ok(())
}

impl Actor for NodeSupervisor {
    type Msg = NodeSupervisorMsg;
    type State = NodeSupervisorState;
    type Arguments = (Arc<ServiceContext>, usize, RestartPolicy);

    async fn pre_start(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        args: Self::Arguments,
    ) -> Result<NodeSupervisorState, ActorProcessingErr> {
        let mut state =
            NodeSupervisorState { args, supervisors: HashMap::new(), refs: HashMap::new(), sizes: HashMap::new() };
        for service in Service::ALL {
            spawn_service(&myself, &mut state, service).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NodeSupervisorMsg>,
        msg: NodeSupervisorMsg,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeSupervisorMsg::SetWorkers(service, workers) => {
                state.sizes.insert(service, workers);
                if let Some(sup) = state.refs.get(&service) {
                    // A dead supervisor is restarted with `sizes`: a lost message loses nothing.
                    let _ = sup.send_message(SupervisorMsg::Resize(workers));
                }
            }
            NodeSupervisorMsg::Restart(service) => {
                if let Some(sup) = state.refs.get(&service) {
                    let _ = sup.send_message(SupervisorMsg::Restart);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let cell = match event {
            SupervisionEvent::ActorFailed(cell, _) | SupervisionEvent::ActorTerminated(cell, _, _) => cell,
            _ => return Ok(()),
        };
        if let Some(service) = state.supervisors.remove(&cell.get_id()) {
            tracing::error!(service = service.name(), "service supervisor died; starting a new one");
            spawn_service(&myself, state, service).await?;
        }
        Ok(())
    }
}

/// Starts the node's supervision tree, every service with `pool_size` workers. Returns the
/// node supervisor, which takes [`NodeSupervisorMsg::SetWorkers`].
pub async fn start_services(
    ctx: Arc<ServiceContext>,
    pool_size: usize,
    policy: RestartPolicy,
) -> Result<ActorRef<NodeSupervisorMsg>, ActorProcessingErr> {
    let (node, _) = Actor::spawn(None, NodeSupervisor, (ctx, pool_size.max(1), policy)).await?;
    Ok(node)
}
