//! The scheduler: a pure function from specs, nodes and the current assignment to the next
//! assignment. Deterministic (same input, same output on any leader) and stable: a task
//! stays where it is while its node remains eligible, so re-running it changes nothing and
//! a node that comes back gets tasks again only when something else changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::{Availability, Constraint, Field, Mode, NodeSettings, Operator, ServiceSpec};
use crate::services::Service;

/// What the scheduler knows about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: u64,
    pub name: String,
    /// `manager` or `worker`.
    pub role: String,
    pub settings: NodeSettings,
    pub reachable: bool,
}

/// One slot of a service: on a node, or pending with the reason.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Assignment {
    pub service: Service,
    /// Replicated: 0..replicas. Global: the node id.
    pub slot: u64,
    pub node_id: Option<u64>,
    /// Why the slot has no node.
    pub pending: Option<String>,
}

fn holds(c: &Constraint, node: &NodeView) -> bool {
    let actual = match &c.field {
        Field::Role => Some(node.role.as_str()),
        Field::Name => Some(node.name.as_str()),
        Field::Label(k) => node.settings.labels.get(k).map(String::as_str),
    };
    match c.op {
        Operator::Eq => actual == Some(c.value.as_str()),
        Operator::Ne => actual != Some(c.value.as_str()),
    }
}

fn satisfies(spec: &ServiceSpec, node: &NodeView) -> bool {
    spec.constraints.iter().all(|c| holds(c, node))
}

/// Why no node can take a new task of `spec`.
fn pending_reason(spec: &ServiceSpec, nodes: &[NodeView]) -> String {
    let up: Vec<&NodeView> =
        nodes.iter().filter(|n| n.reachable && n.settings.availability == Availability::Active).collect();
    if up.is_empty() {
        return "no active, reachable node".into();
    }
    for c in &spec.constraints {
        if !up.iter().any(|n| holds(c, n)) {
            return format!("no node satisfies {c}");
        }
    }
    if !up.iter().any(|n| satisfies(spec, n)) {
        let all: Vec<String> = spec.constraints.iter().map(|c| c.to_string()).collect();
        return format!("no node satisfies {}", all.join(" and "));
    }
    format!("max_per_node {} reached on every eligible node", spec.max_per_node.unwrap_or(0))
}

/// The next assignment of every service.
pub fn schedule(specs: &BTreeMap<Service, ServiceSpec>, nodes: &[NodeView], current: &[Assignment]) -> Vec<Assignment> {
    let mut nodes = nodes.to_vec();
    nodes.sort_by_key(|n| n.id);
    let mut out = Vec::new();
    // Tasks per node over every service, for spreading the load of new tasks.
    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
    for service in Service::ALL {
        let spec = specs.get(&service).cloned().unwrap_or_default();
        // A node keeps a task while it can run it: reachable, not drained, constraints hold.
        let keeps = |n: &NodeView| n.reachable && n.settings.availability != Availability::Drain && satisfies(&spec, n);
        // A node takes a new task only when active.
        let takes =
            |n: &NodeView| n.reachable && n.settings.availability == Availability::Active && satisfies(&spec, n);
        if service == Service::Metrics {
            // Each node's metrics instance reports that node's own statistics (and is how
            // the mesh sees the node): it runs on every member, drained or unreachable too.
            for n in &nodes {
                out.push(Assignment { service, slot: n.id, node_id: Some(n.id), pending: None });
            }
            continue;
        }
        match spec.mode {
            Mode::Global => {
                // An unreachable node keeps its global tasks: no other node could take them,
                // routing already skips it, and dropping and re-adding them on every network
                // blip would only write to the log.
                let keeps_global = |n: &NodeView| n.settings.availability != Availability::Drain && satisfies(&spec, n);
                for n in &nodes {
                    let had = current.iter().any(|a| a.service == service && a.node_id == Some(n.id));
                    if takes(n) || (had && keeps_global(n)) {
                        *load.entry(n.id).or_default() += 1;
                        out.push(Assignment { service, slot: n.id, node_id: Some(n.id), pending: None });
                    }
                }
                if !out.iter().any(|a| a.service == service) {
                    // The one pending row tells the operator why nothing runs.
                    let pending = Some(pending_reason(&spec, &nodes));
                    out.push(Assignment { service, slot: 0, node_id: None, pending });
                }
            }
            Mode::Replicated => {
                let limit = spec.max_per_node.map(|m| m as usize).unwrap_or(usize::MAX);
                let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
                let mut slots: Vec<Option<u64>> = vec![None; spec.replicas as usize];
                // Keep what can stay, slot by slot, in slot order.
                for (slot, placed) in slots.iter_mut().enumerate() {
                    let previous = current
                        .iter()
                        .find(|a| a.service == service && a.slot == slot as u64)
                        .and_then(|a| a.node_id)
                        .and_then(|id| nodes.iter().find(|n| n.id == id));
                    if let Some(n) = previous {
                        let count = per_node.entry(n.id).or_default();
                        if keeps(n) && *count < limit {
                            *count += 1;
                            *load.entry(n.id).or_default() += 1;
                            *placed = Some(n.id);
                        }
                    }
                }
                // Place the rest where this service has fewest tasks, then fewest overall.
                for placed in slots.iter_mut().filter(|p| p.is_none()) {
                    let best = nodes
                        .iter()
                        .filter(|n| takes(n) && per_node.get(&n.id).copied().unwrap_or(0) < limit)
                        .min_by_key(|n| {
                            (per_node.get(&n.id).copied().unwrap_or(0), load.get(&n.id).copied().unwrap_or(0), n.id)
                        });
                    if let Some(n) = best {
                        *per_node.entry(n.id).or_default() += 1;
                        *load.entry(n.id).or_default() += 1;
                        *placed = Some(n.id);
                    }
                }
                let reason = slots.iter().any(Option::is_none).then(|| pending_reason(&spec, &nodes));
                for (slot, node_id) in slots.into_iter().enumerate() {
                    let pending = if node_id.is_none() { reason.clone() } else { None };
                    out.push(Assignment { service, slot: slot as u64, node_id, pending });
                }
            }
        }
    }
    // In (service, slot) order, as `assignments` reads them back: equal means unchanged.
    out.sort();
    out
}

/// The manager that should take over from a drained leader: the lowest-id manager, other
/// than the leader, that is reachable and not drained. None when the leader is not
/// drained (or no node qualifies). Every node computes the same answer, so only one
/// campaigns.
pub fn successor_of_drained_leader(leader: u64, nodes: &[NodeView]) -> Option<u64> {
    let drained = |n: &NodeView| n.settings.availability == Availability::Drain;
    if !nodes.iter().any(|n| n.id == leader && drained(n)) {
        return None;
    }
    nodes.iter().filter(|n| n.id != leader && n.role == "manager" && n.reachable && !drained(n)).map(|n| n.id).min()
}

/// Whether node `me` may restart its instances of a service now, in a rolling restart to
/// `target`: the nodes holding tasks restart in id order, `parallelism` at a time; a node
/// is done once it reported `target` (`generations`: what each node reported).
pub fn my_turn_to_restart(
    me: u64,
    holders: &[u64],
    generations: &BTreeMap<u64, u64>,
    target: u64,
    parallelism: u32,
) -> bool {
    let mut waiting: Vec<u64> =
        holders.iter().copied().filter(|n| generations.get(n).copied().unwrap_or(0) < target).collect();
    waiting.sort_unstable();
    waiting.dedup();
    waiting.iter().take(parallelism.max(1) as usize).any(|n| *n == me)
}

/// Tasks per service on node `id` (a node runs `count × workers` workers of a service).
pub fn tasks_on(assignments: &[Assignment], id: u64) -> BTreeMap<Service, usize> {
    let mut out = BTreeMap::new();
    for a in assignments.iter().filter(|a| a.node_id == Some(id)) {
        *out.entry(a.service).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestration::spec::SpecPatch;

    fn node(id: u64, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            id,
            name: format!("n{id}"),
            role: if id == 1 { "manager".into() } else { "worker".into() },
            settings: NodeSettings {
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            },
            reachable: true,
        }
    }

    fn replicated(n: u32) -> ServiceSpec {
        ServiceSpec { mode: Mode::Replicated, replicas: n, ..Default::default() }
    }

    fn nodes_of(out: &[Assignment], service: Service) -> Vec<Option<u64>> {
        out.iter().filter(|a| a.service == service).map(|a| a.node_id).collect()
    }

    #[test]
    fn defaults_run_every_service_on_every_node() {
        let nodes = [node(1, &[]), node(2, &[]), node(3, &[])];
        let out = schedule(&BTreeMap::new(), &nodes, &[]);
        for service in Service::ALL {
            assert_eq!(nodes_of(&out, service), vec![Some(1), Some(2), Some(3)]);
        }
        for id in 1..=3 {
            assert_eq!(tasks_on(&out, id).len(), Service::ALL.len());
        }
    }

    #[test]
    fn replicas_spread_and_scale_down_keeps_the_first_slots() {
        let nodes = [node(1, &[]), node(2, &[]), node(3, &[])];
        let mut specs = BTreeMap::from([(Service::Catalog, replicated(3))]);
        let three = schedule(&specs, &nodes, &[]);
        assert_eq!(nodes_of(&three, Service::Catalog), vec![Some(1), Some(2), Some(3)]);
        specs.insert(Service::Catalog, replicated(1));
        let one = schedule(&specs, &nodes, &three);
        assert_eq!(nodes_of(&one, Service::Catalog), vec![Some(1)]);
        specs.insert(Service::Catalog, replicated(4));
        let four = schedule(&specs, &nodes, &one);
        let placed = nodes_of(&four, Service::Catalog);
        assert_eq!(placed[0], Some(1), "the surviving task stays");
        let mut sorted = placed.clone();
        sorted.sort();
        assert_eq!(sorted, vec![Some(1), Some(1), Some(2), Some(3)], "spread before doubling up");
        // Stable: scheduling again changes nothing.
        assert_eq!(schedule(&specs, &nodes, &four), four);
        assert!(four.windows(2).all(|w| (w[0].service, w[0].slot) < (w[1].service, w[1].slot)), "sorted");
    }

    #[test]
    fn constraints_and_pending_reasons() {
        let nodes = [node(1, &[("cpu", "big")]), node(2, &[]), node(3, &[("cpu", "big")])];
        let spec = replicated(2)
            .patched(
                Service::Prediction,
                &SpecPatch { constraint_add: vec!["node.labels.cpu==big".parse().unwrap()], ..Default::default() },
            )
            .unwrap();
        let specs = BTreeMap::from([(Service::Prediction, spec)]);
        let out = schedule(&specs, &nodes, &[]);
        assert_eq!(nodes_of(&out, Service::Prediction), vec![Some(1), Some(3)]);
        let unlabelled = [node(1, &[]), node(2, &[]), node(3, &[])];
        let out = schedule(&specs, &unlabelled, &out);
        let pending: Vec<_> = out.iter().filter(|a| a.service == Service::Prediction).collect();
        assert!(pending.iter().all(|a| a.node_id.is_none()));
        assert_eq!(pending[0].pending.as_deref(), Some("no node satisfies node.labels.cpu==big"));
    }

    #[test]
    fn max_per_node_limits_and_explains() {
        let nodes = [node(1, &[]), node(2, &[])];
        let spec = ServiceSpec { max_per_node: Some(1), ..replicated(3) };
        let out = schedule(&BTreeMap::from([(Service::Energy, spec)]), &nodes, &[]);
        assert_eq!(nodes_of(&out, Service::Energy), vec![Some(1), Some(2), None]);
        assert_eq!(
            out.iter().find(|a| a.node_id.is_none()).unwrap().pending.as_deref(),
            Some("max_per_node 1 reached on every eligible node")
        );
    }

    #[test]
    fn drain_moves_tasks_pause_keeps_them_and_lost_nodes_lose_them() {
        let mut nodes = vec![node(1, &[]), node(2, &[]), node(3, &[])];
        let specs = BTreeMap::from([(Service::Catalog, replicated(3))]);
        let before = schedule(&specs, &nodes, &[]);
        nodes[1].settings.availability = Availability::Pause;
        assert_eq!(schedule(&specs, &nodes, &before), before, "pause keeps running tasks");
        nodes[1].settings.availability = Availability::Drain;
        let drained = schedule(&specs, &nodes, &before);
        assert!(!nodes_of(&drained, Service::Catalog).contains(&Some(2)));
        assert_eq!(nodes_of(&drained, Service::Catalog).len(), 3);
        let on_drained: Vec<Service> = tasks_on(&drained, 2).into_keys().collect();
        assert_eq!(on_drained, vec![Service::Metrics], "a drained node runs only its own metrics");
        nodes[1].settings.availability = Availability::Active;
        nodes[2].reachable = false;
        let lost = schedule(&specs, &nodes, &drained);
        assert!(!nodes_of(&lost, Service::Catalog).contains(&Some(3)));
        assert!(nodes_of(&lost, Service::Catalog).iter().all(Option::is_some));
        assert!(nodes_of(&lost, Service::Auth).contains(&Some(3)), "an unreachable node keeps its global tasks");
        nodes.push(NodeView { reachable: false, ..node(4, &[]) });
        assert!(!nodes_of(&schedule(&specs, &nodes, &lost), Service::Auth).contains(&Some(4)), "but gets no new one");
    }

    #[test]
    fn a_drained_leader_is_replaced_by_the_lowest_active_reachable_manager() {
        let mut nodes: Vec<NodeView> = (1..=4).map(|id| node(id, &[])).collect();
        for n in &mut nodes[..3] {
            n.role = "manager".into();
        }
        assert_eq!(successor_of_drained_leader(1, &nodes), None, "an active leader keeps leading");
        nodes[0].settings.availability = Availability::Drain;
        assert_eq!(successor_of_drained_leader(1, &nodes), Some(2));
        nodes[1].reachable = false;
        assert_eq!(successor_of_drained_leader(1, &nodes), Some(3));
        nodes[2].settings.availability = Availability::Drain;
        assert_eq!(successor_of_drained_leader(1, &nodes), None, "workers never campaign");
    }

    #[test]
    fn rolling_restarts_go_in_id_order_a_batch_at_a_time() {
        let holders = [3, 1, 2, 1];
        let reported = |pairs: &[(u64, u64)]| pairs.iter().copied().collect::<BTreeMap<u64, u64>>();
        let none = reported(&[]);
        assert!(my_turn_to_restart(1, &holders, &none, 1, 1));
        assert!(!my_turn_to_restart(2, &holders, &none, 1, 1));
        assert!(my_turn_to_restart(2, &holders, &none, 1, 2));
        let first_done = reported(&[(1, 1)]);
        assert!(my_turn_to_restart(2, &holders, &first_done, 1, 1));
        assert!(!my_turn_to_restart(3, &holders, &first_done, 1, 1));
        assert!(!my_turn_to_restart(1, &holders, &first_done, 1, 1), "done nodes do not restart again");
    }

    #[test]
    fn nothing_eligible_leaves_a_reasoned_pending_row_for_global_services() {
        let mut n = node(1, &[]);
        n.settings.availability = Availability::Drain;
        let out = schedule(&BTreeMap::new(), &[n], &[]);
        let auth: Vec<_> = out.iter().filter(|a| a.service == Service::Auth).collect();
        assert_eq!(auth.len(), 1);
        assert_eq!(auth[0].pending.as_deref(), Some("no active, reachable node"));
        assert_eq!(tasks_on(&out, 1).into_keys().collect::<Vec<_>>(), vec![Service::Metrics]);
    }
}
