//! Orchestration on a running node: the leader's scheduler loop, which records the task
//! assignment through Raft whenever specs, node settings, membership or reachability
//! change it, and every node's reconciler, which sets its service supervisors' worker
//! counts to match its tasks and reports what runs.
//!
//! Both poll the local replica (a cheap SQLite read) rather than subscribe: a missed
//! change is picked up on the next tick, and a write that failed is simply tried again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panal_actors::orchestration::{self, Assignment, NodeView, ObservedState, OrchestrationCommand, ServiceSpec};
use panal_actors::services::{NodeSupervisorMsg, Service, ServiceContext, ServiceHealth};
use panal_actors::{Command, Replica};
use panal_raft::Consistency;
use ractor::ActorRef;

/// How often the scheduler and the reconciler look at the replicated state.
const TICK: Duration = Duration::from_millis(200);
/// How long a node whose mesh session is gone stays eligible (its tasks move after this).
pub const NODE_DOWN_AFTER: Duration = Duration::from_secs(1);
/// Most time a node waits for another node's instances to appear before stopping its own
/// (drain and scale-down start the new instances before the old ones stop).
const HANDOVER_WAIT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the reconciler and scheduler of one node need.
pub struct Orchestrator {
    pub replica: Replica,
    pub supervisor: ActorRef<NodeSupervisorMsg>,
    pub services: Arc<ServiceContext>,
    /// `--pool-size`: workers per task when the spec sets none.
    pub pool_size: usize,
}

/// Starts the scheduler loop (active on the leader only) and the reconciler.
pub fn start(o: Orchestrator) {
    let o = Arc::new(o);
    tokio::spawn(schedule_loop(o.clone()));
    tokio::spawn(reconcile_loop(o));
}

/// Specs, node settings and the assignment, from the local replica as it is.
async fn read_state(
    replica: &Replica,
) -> Option<(BTreeMap<Service, ServiceSpec>, BTreeMap<u64, orchestration::NodeSettings>, Vec<Assignment>)> {
    let read = replica
        .read(Consistency::Stale, 0, WRITE_TIMEOUT, |db| {
            Ok::<_, panal_raft::rusqlite::Error>((
                orchestration::specs(db)?,
                orchestration::node_settings(db)?,
                orchestration::assignments(db)?,
            ))
        })
        .await;
    match read {
        Ok((Ok(state), _)) => Some(state),
        Ok((Err(e), _)) => {
            tracing::warn!(error = %e, "cannot read the orchestration state");
            None
        }
        Err(_) => None,
    }
}

/// Whether node `name`'s mesh session is up: its metrics instance (which runs on every
/// node whatever the specs say) is in the node's process group.
fn mesh_connected(name: &str) -> bool {
    !ractor::pg::get_members(&panal_actors::metrics::ops::node_group(name)).is_empty()
}

async fn schedule_loop(o: Arc<Orchestrator>) {
    // When each member was last seen on the mesh; a member never seen yet (still joining,
    // or this leader just took over) counts as reachable until NODE_DOWN_AFTER has passed.
    let mut last_seen: HashMap<u64, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let me = o.replica.id();
        if o.replica.leader().map(|(id, _)| id) != Some(me) {
            last_seen.clear();
            continue;
        }
        let Some((specs, settings, current)) = read_state(&o.replica).await else { continue };
        let now = Instant::now();
        let nodes: Vec<NodeView> = o
            .replica
            .members()
            .into_iter()
            .map(|(id, node, role)| {
                let seen = last_seen.entry(id).or_insert(now);
                if id == me || mesh_connected(&node.name) {
                    *seen = now;
                }
                NodeView {
                    id,
                    reachable: now.duration_since(*seen) <= NODE_DOWN_AFTER,
                    name: node.name,
                    role: format!("{role:?}").to_lowercase(),
                    settings: settings.get(&id).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let next = orchestration::schedule(&specs, &nodes, &current);
        if next != current {
            let lost: Vec<&str> = nodes.iter().filter(|n| !n.reachable).map(|n| n.name.as_str()).collect();
            tracing::info!(tasks = next.len(), ?lost, "recording a new task assignment");
            let command = Command::Orchestration(OrchestrationCommand::SetAssignments { assignments: next });
            if let Err(e) = o.replica.write(&command, None, WRITE_TIMEOUT).await {
                tracing::warn!(error = %e, "cannot record the task assignment");
            }
        }
    }
}

/// Workers `service` should run here under the assignment.
fn wanted_workers(
    o: &Orchestrator,
    me: u64,
    specs: &BTreeMap<Service, ServiceSpec>,
    tasks: &[Assignment],
) -> BTreeMap<Service, usize> {
    let on_me = orchestration::tasks_on(tasks, me);
    Service::ALL
        .into_iter()
        .map(|service| {
            let per_task = specs.get(&service).and_then(|s| s.workers).map(|w| w as usize).unwrap_or(o.pool_size);
            // Metrics is never stopped: it is this node's own statistics, and how the
            // leader sees the node on the mesh.
            let tasks = if service == Service::Metrics { 1 } else { on_me.get(&service).copied().unwrap_or(0) };
            (service, tasks * per_task)
        })
        .collect()
}

/// Whether another node already runs an instance of `service` (checked before this node
/// stops its own, so that no request finds none).
fn runs_elsewhere(service: Service) -> bool {
    ractor::pg::get_members(&service.group()).iter().any(|c| !c.get_id().is_local())
}

async fn reconcile_loop(o: Arc<Orchestrator>) {
    let me = o.replica.id();
    // start_services started every service with --pool-size workers.
    let mut running: BTreeMap<Service, usize> = Service::ALL.into_iter().map(|s| (s, o.pool_size)).collect();
    let mut waiting_since: HashMap<Service, Instant> = HashMap::new();
    let mut reported: BTreeMap<Service, (ObservedState, u32, Option<String>)> = BTreeMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some((specs, _, tasks)) = read_state(&o.replica).await else { continue };
        if !tasks.iter().any(|a| a.node_id == Some(me)) {
            // Not scheduled with this node yet (every member gets at least its metrics
            // task): keep running everything, as before orchestration.
            continue;
        }
        // Services stopped in this tick: reported as shut down at once, before a later
        // assignment can start them again (a stale `running` would hide the restart).
        let mut stopped = Vec::new();
        for (service, wanted) in wanted_workers(&o, me, &specs, &tasks) {
            let have = running.get(&service).copied().unwrap_or(0);
            if wanted == have {
                waiting_since.remove(&service);
                continue;
            }
            let others_assigned = tasks.iter().any(|a| a.service == service && a.node_id.is_some_and(|n| n != me));
            if wanted == 0 && others_assigned && !runs_elsewhere(service) {
                let since = *waiting_since.entry(service).or_insert_with(Instant::now);
                if since.elapsed() < HANDOVER_WAIT {
                    continue;
                }
                tracing::warn!(service = service.name(), "no other instance appeared in time; stopping anyway");
            }
            waiting_since.remove(&service);
            tracing::info!(service = service.name(), from = have, to = wanted, "reconciling workers");
            if o.supervisor.send_message(NodeSupervisorMsg::SetWorkers(service, wanted)).is_ok() {
                running.insert(service, wanted);
                if wanted == 0 {
                    stopped.push(service);
                }
            }
        }
        let health = o.services.health();
        for service in Service::ALL {
            let observed = match health.get(&service) {
                _ if stopped.contains(&service) => (ObservedState::Shutdown, 0, None),
                Some(ServiceHealth::Failed { reason, .. }) => (ObservedState::Failed, 0, Some(reason.clone())),
                Some(ServiceHealth::Running { workers }) if *workers > 0 => {
                    (ObservedState::Running, *workers as u32, None)
                }
                _ => (ObservedState::Shutdown, 0, None),
            };
            if reported.get(&service) == Some(&observed) {
                continue;
            }
            let (state, workers, error) = observed.clone();
            let command =
                Command::Orchestration(OrchestrationCommand::Observe { node_id: me, service, state, workers, error });
            if o.replica.write(&command, None, WRITE_TIMEOUT).await.is_ok() {
                reported.insert(service, observed);
            }
        }
    }
}
