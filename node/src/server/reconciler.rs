//! Orchestration on a running node: the leader's scheduler loop, which records the task
//! assignment through Raft whenever specs, node settings, membership or reachability
//! change it, and every node's reconciler, which sets its service supervisors' worker
//! counts to match its tasks and reports what runs.
//!
//! A drained leader hands leadership over: the lowest-id active manager that is reachable
//! campaigns (every follower makes the same choice, so only one does).
//!
//! Both poll the local replica (a cheap SQLite read) rather than subscribe: a missed
//! change is picked up on the next tick, and a write that failed is simply tried again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panal_actors::orchestration::{self, command, Assignment, NodeView, ObservedState, ServiceSpec};
use panal_actors::services::{NodeSupervisorMsg, Service, ServiceContext, ServiceHealth};
use panal_actors::{Command, Replica};
use panal_raft::Consistency;
use ractor::ActorRef;

/// How often the scheduler and the reconciler look at the replicated state.
const TICK: Duration = Duration::from_millis(200);
/// Most time a node waits for another node's instances to appear before stopping its own
/// (drain and scale-down start the new instances before the old ones stop).
const HANDOVER_WAIT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two campaigns of a successor to a drained leader.
const CAMPAIGN_EVERY: Duration = Duration::from_secs(2);

/// HELP text of the series orchestration publishes.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "panal_service_tasks_desired",
        "Tasks of a service in the assignment, pending ones included (published by the leader)."
    );
    describe_gauge!("panal_service_tasks_pending", "Tasks of a service no node can take (published by the leader).");
    describe_gauge!(
        "panal_service_tasks_running",
        "Tasks of a service this node runs (sum over nodes: running replicas)."
    );
    describe_counter!(
        "panal_orchestration_reschedules_total",
        "New task assignments recorded by the leader, by cause (node_lost, change)."
    );
}

/// What the reconciler and scheduler of one node need.
pub struct Orchestrator {
    pub replica: Replica,
    pub supervisor: ActorRef<NodeSupervisorMsg>,
    pub services: Arc<ServiceContext>,
    /// `--pool-size`: workers per task when the spec sets none.
    pub pool_size: usize,
    /// `--node-down-after-ms`: how long a member off the mesh keeps its tasks.
    pub node_down_after: Duration,
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

/// The restart generation every node reported for `service`.
async fn read_generations(replica: &Replica, service: Service) -> Option<BTreeMap<u64, u64>> {
    match replica
        .read(Consistency::Stale, 0, WRITE_TIMEOUT, move |db| orchestration::observed_generations(db, service))
        .await
    {
        Ok((Ok(generations), _)) => Some(generations),
        _ => None,
    }
}

/// Whether node `name`'s mesh session is up: its metrics instance (which runs on every
/// node whatever the specs say) is in the node's process group.
fn mesh_connected(name: &str) -> bool {
    !ractor::pg::get_members(&panal_actors::metrics::ops::node_group(name)).is_empty()
}

async fn schedule_loop(o: Arc<Orchestrator>) {
    // When each member was last seen on the mesh; a member never seen yet (still joining,
    // or this leader just took over) counts as reachable until `node_down_after` has passed.
    let mut last_seen: HashMap<u64, Instant> = HashMap::new();
    // Each service's `rebalances` this leader has acted on (a new leader starts from the
    // specs it first reads: a rebalance asked for before it led is not repeated).
    let mut rebalanced: BTreeMap<Service, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let me = o.replica.id();
        if o.replica.leader().map(|(id, _)| id) != Some(me) {
            last_seen.clear();
            rebalanced.clear();
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
                    reachable: now.duration_since(*seen) <= o.node_down_after,
                    name: node.name,
                    role: format!("{role:?}").to_lowercase(),
                    settings: settings.get(&id).cloned().unwrap_or_default(),
                }
            })
            .collect();
        // A service to rebalance is placed as if it had no tasks yet.
        let to_rebalance: Vec<Service> = specs
            .iter()
            .filter(|(service, spec)| *rebalanced.entry(**service).or_insert(spec.rebalances) < spec.rebalances)
            .map(|(service, _)| *service)
            .collect();
        let kept: Vec<Assignment> = current.iter().filter(|a| !to_rebalance.contains(&a.service)).cloned().collect();
        let next = orchestration::schedule(&specs, &nodes, &kept);
        for service in Service::ALL {
            let slots = next.iter().filter(|a| a.service == service);
            let (all, pending) = slots.fold((0, 0), |(all, p), a| (all + 1, p + usize::from(a.node_id.is_none())));
            // A global service with nothing eligible has one pending row and no task.
            let desired = if specs.get(&service).is_some_and(|s| s.mode == orchestration::Mode::Replicated) {
                all
            } else {
                all - pending
            };
            metrics::gauge!("panal_service_tasks_desired", "service" => service.name()).set(desired as f64);
            metrics::gauge!("panal_service_tasks_pending", "service" => service.name()).set(pending as f64);
        }
        if next != current {
            let lost: Vec<&str> = nodes.iter().filter(|n| !n.reachable).map(|n| n.name.as_str()).collect();
            let cause = if lost.is_empty() { "change" } else { "node_lost" };
            metrics::counter!("panal_orchestration_reschedules_total", "cause" => cause).increment(1);
            tracing::info!(tasks = next.len(), ?lost, "recording a new task assignment");
            let command = Command::from(command::SetAssignments { assignments: next });
            if let Err(e) = o.replica.write(&command, None, WRITE_TIMEOUT).await {
                tracing::warn!(error = %e, "cannot record the task assignment");
                continue;
            }
        }
        for service in to_rebalance {
            tracing::info!(service = service.name(), "rebalanced");
            rebalanced.insert(service, specs.get(&service).map_or(0, |s| s.rebalances));
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
    let mut reported: BTreeMap<Service, (ObservedState, u32, Option<String>, u64)> = BTreeMap::new();
    // The rolling restart each service's instances here are up to date with (a node that
    // starts has fresh instances: up to date), and a restart under way: its target and
    // when it counts as done (after the spec's update delay).
    let mut generation: BTreeMap<Service, u64> = BTreeMap::new();
    let mut restarting: HashMap<Service, (u64, Instant)> = HashMap::new();
    let mut last_campaign: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some((specs, settings, tasks)) = read_state(&o.replica).await else { continue };
        if last_campaign.is_none_or(|t| t.elapsed() >= CAMPAIGN_EVERY)
            && is_successor_of_drained_leader(&o.replica, &settings)
        {
            last_campaign = Some(Instant::now());
            tracing::info!("the leader is drained: campaigning to take over");
            if let Err(e) = o.replica.raft().trigger().elect().await {
                tracing::warn!(error = %e, "cannot campaign");
            }
        }
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
        for service in Service::ALL {
            let spec = specs.get(&service).cloned().unwrap_or_default();
            let target = spec.restarts;
            let current = *generation.entry(service).or_insert(target);
            if current >= target {
                continue;
            }
            if let Some((t, done_at)) = restarting.get(&service).copied() {
                if t == target && Instant::now() < done_at {
                    continue;
                }
                restarting.remove(&service);
                if t == target {
                    generation.insert(service, target);
                    continue;
                }
            }
            if running.get(&service).copied().unwrap_or(0) == 0 {
                // Nothing to restart here.
                generation.insert(service, target);
                continue;
            }
            let holders: Vec<u64> = tasks.iter().filter(|a| a.service == service).filter_map(|a| a.node_id).collect();
            let Some(reported_generations) = read_generations(&o.replica, service).await else { continue };
            if orchestration::my_turn_to_restart(me, &holders, &reported_generations, target, spec.update_parallelism) {
                tracing::info!(service = service.name(), target, "rolling restart: restarting this node's instances");
                if o.supervisor.send_message(NodeSupervisorMsg::Restart(service)).is_ok() {
                    let done_at = Instant::now() + Duration::from_millis(spec.update_delay_ms);
                    restarting.insert(service, (target, done_at));
                }
            }
        }
        let on_me = orchestration::tasks_on(&tasks, me);
        let health = o.services.health();
        for service in Service::ALL {
            let (state, workers, error) = match health.get(&service) {
                _ if stopped.contains(&service) => (ObservedState::Shutdown, 0, None),
                Some(ServiceHealth::Failed { reason, .. }) => (ObservedState::Failed, 0, Some(reason.clone())),
                Some(ServiceHealth::Running { workers }) if *workers > 0 => {
                    (ObservedState::Running, *workers as u32, None)
                }
                _ => (ObservedState::Shutdown, 0, None),
            };
            let observed = (state, workers, error, generation.get(&service).copied().unwrap_or(0));
            let running_tasks =
                if observed.0 == ObservedState::Running { on_me.get(&service).copied().unwrap_or(0) } else { 0 };
            metrics::gauge!("panal_service_tasks_running", "service" => service.name()).set(running_tasks as f64);
            if reported.get(&service) == Some(&observed) {
                continue;
            }
            let (state, workers, error, generation) = observed.clone();
            let command = Command::from(command::Observe { node_id: me, service, state, workers, error, generation });
            if o.replica.write(&command, None, WRITE_TIMEOUT).await.is_ok() {
                reported.insert(service, observed);
            }
        }
    }
}

/// Whether the leader is drained and this node is the manager that should replace it.
fn is_successor_of_drained_leader(replica: &Replica, settings: &BTreeMap<u64, orchestration::NodeSettings>) -> bool {
    let me = replica.id();
    let Some((leader, _)) = replica.leader() else { return false };
    if leader == me {
        return false;
    }
    let nodes: Vec<NodeView> = replica
        .members()
        .into_iter()
        .map(|(id, node, role)| NodeView {
            id,
            reachable: id == me || mesh_connected(&node.name),
            name: node.name,
            role: format!("{role:?}").to_lowercase(),
            settings: settings.get(&id).cloned().unwrap_or_default(),
        })
        .collect();
    orchestration::successor_of_drained_leader(leader, &nodes) == Some(me)
}
