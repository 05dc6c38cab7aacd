//! Service specs, placement constraints and node settings: the declarative, replicated
//! half of orchestration. Parsing and validation are pure and unit-tested.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::services::Service;
use crate::Rejection;

/// Most replicas a replicated service may ask for: far above any real cluster of this
/// kind, low enough that a typo cannot make the scheduler allocate millions of slots.
pub const MAX_REPLICAS: u32 = 1000;
/// Most workers per task (the pool size of one task).
pub const MAX_WORKERS: u32 = 256;
/// Most constraints on one service, and most labels on one node.
pub const MAX_CONSTRAINTS: usize = 32;
pub const MAX_LABELS: usize = 64;
/// Most nodes restarted at once by a rolling restart, and longest pause between batches.
pub const MAX_UPDATE_PARALLELISM: u32 = 100;
pub const MAX_UPDATE_DELAY_MS: u64 = 600_000;
/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 128;

/// How a service's tasks are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One task on every eligible node (today's behaviour, and the default).
    #[default]
    Global,
    /// `replicas` tasks spread over the eligible nodes.
    Replicated,
}

/// The node property a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Role,
    Name,
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    Eq,
    Ne,
}

/// `node.role==manager`, `node.name!=node3`, `node.labels.cpu==big`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Constraint {
    pub field: Field,
    pub op: Operator,
    pub value: String,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = match &self.field {
            Field::Role => "node.role".to_string(),
            Field::Name => "node.name".to_string(),
            Field::Label(k) => format!("node.labels.{k}"),
        };
        let op = match self.op {
            Operator::Eq => "==",
            Operator::Ne => "!=",
        };
        write!(f, "{field}{op}{}", self.value)
    }
}

fn valid_label_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// Checks a label key or value; the error names what is wrong.
pub fn check_label(what: &str, s: &str) -> Result<(), String> {
    if valid_label_part(s) {
        Ok(())
    } else {
        Err(format!("{what} {s:?} must be 1 to {MAX_LABEL_LEN} characters of letters, digits, '-', '_', '.', '/'"))
    }
}

impl std::str::FromStr for Constraint {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        // The operator is the first run of operator characters.
        let is_op = |c: char| matches!(c, '=' | '!' | '<' | '>' | '~');
        let Some(start) = text.find(is_op) else {
            return Err(format!(
                "constraint {text:?} has no operator: use FIELD==VALUE or FIELD!=VALUE (e.g. node.labels.cpu==big)"
            ));
        };
        let end = text[start..].find(|c: char| !is_op(c)).map_or(text.len(), |n| start + n);
        let op = match &text[start..end] {
            "==" => Operator::Eq,
            "!=" => Operator::Ne,
            other => {
                return Err(format!("constraint {text:?}: unknown operator {other:?} (use == or !=)"));
            }
        };
        let (lhs, rhs) = (text[..start].trim(), text[end..].trim());
        if rhs.contains(is_op) {
            return Err(format!("constraint {text:?}: one operator only (use == or !=)"));
        }
        let field = match lhs {
            "node.role" => Field::Role,
            "node.name" => Field::Name,
            other => match other.strip_prefix("node.labels.") {
                Some(key) => {
                    check_label("label key", key).map_err(|e| format!("constraint {text:?}: {e}"))?;
                    Field::Label(key.to_string())
                }
                None => {
                    return Err(format!(
                        "constraint {text:?}: unknown field {other:?} (use node.role, node.name or node.labels.KEY)"
                    ))
                }
            },
        };
        check_label("value", rhs).map_err(|e| format!("constraint {text:?}: {e}"))?;
        if field == Field::Role && rhs != "manager" && rhs != "worker" {
            return Err(format!("constraint {text:?}: node.role is manager or worker"));
        }
        Ok(Constraint { field, op, value: rhs.to_string() })
    }
}

impl TryFrom<String> for Constraint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Constraint> for String {
    fn from(c: Constraint) -> String {
        c.to_string()
    }
}

/// What a node offers the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Runs no tasks: they move to other nodes.
    Drain,
}

impl std::fmt::Display for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        })
    }
}

impl std::str::FromStr for Availability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Self::Active),
            "pause" => Ok(Self::Pause),
            "drain" => Ok(Self::Drain),
            other => Err(format!("unknown availability {other:?}: use active, pause or drain")),
        }
    }
}

/// A node's replicated orchestration settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeSettings {
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
}

/// How a service runs across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceSpec {
    pub mode: Mode,
    /// Tasks of a replicated service (ignored in global mode).
    pub replicas: u32,
    /// Every constraint must hold on a node for it to get a task.
    #[schema(value_type = Vec<String>)]
    pub constraints: Vec<Constraint>,
    /// Most tasks of this service on one node (none: no limit).
    pub max_per_node: Option<u32>,
    /// Workers per task (none: the node's `--pool-size`).
    pub workers: Option<u32>,
    /// Rolling restarts asked for so far: a node whose instances are older restarts them.
    #[serde(default)]
    pub restarts: u64,
    /// Rebalances asked for so far: the leader places the service's tasks afresh when this
    /// grows (otherwise tasks stay where they are).
    #[serde(default)]
    pub rebalances: u64,
    /// Nodes restarting at once in a rolling restart.
    #[serde(default = "one")]
    pub update_parallelism: u32,
    /// Pause after a node's restart before the next batch starts, in milliseconds.
    #[serde(default)]
    pub update_delay_ms: u64,
}

fn one() -> u32 {
    1
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            mode: Mode::Global,
            replicas: 1,
            constraints: Vec::new(),
            max_per_node: None,
            workers: None,
            restarts: 0,
            rebalances: 0,
            update_parallelism: 1,
            update_delay_ms: 0,
        }
    }
}

/// A change to a service's spec; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecPatch {
    pub mode: Option<Mode>,
    pub replicas: Option<u32>,
    pub constraint_add: Vec<Constraint>,
    pub constraint_rm: Vec<Constraint>,
    /// `Some(0)` removes the limit.
    pub max_per_node: Option<u32>,
    /// `Some(0)` goes back to the node's `--pool-size`.
    pub workers: Option<u32>,
    /// Start a rolling restart.
    #[serde(default)]
    pub restart: bool,
    /// Place the tasks afresh (spread again over every eligible node).
    #[serde(default)]
    pub rebalance: bool,
    pub update_parallelism: Option<u32>,
    pub update_delay_ms: Option<u64>,
}

impl ServiceSpec {
    /// The spec with `patch` applied, or why it is refused. Deterministic: `apply` calls it.
    pub fn patched(&self, service: Service, patch: &SpecPatch) -> Result<ServiceSpec, Rejection> {
        let invalid = |m: String| Err(Rejection::new("validation_failed", m));
        let mut next = self.clone();
        if let Some(mode) = patch.mode {
            next.mode = mode;
        }
        if let Some(replicas) = patch.replicas {
            if replicas > MAX_REPLICAS {
                return invalid(format!("replicas must be between 0 and {MAX_REPLICAS}, not {replicas}"));
            }
            // Scaling a global service makes it replicated, as `docker service scale` would refuse.
            if patch.mode.is_none() && next.mode == Mode::Global {
                return invalid(format!(
                    "{} is global: set mode replicated to give it a replica count",
                    service.name()
                ));
            }
            next.replicas = replicas;
        }
        for c in &patch.constraint_rm {
            if !next.constraints.contains(c) {
                return invalid(format!("{} has no constraint {c}", service.name()));
            }
            next.constraints.retain(|x| x != c);
        }
        for c in &patch.constraint_add {
            if !next.constraints.contains(c) {
                next.constraints.push(c.clone());
            }
        }
        next.constraints.sort();
        if next.constraints.len() > MAX_CONSTRAINTS {
            return invalid(format!("at most {MAX_CONSTRAINTS} constraints per service"));
        }
        match patch.max_per_node {
            Some(0) => next.max_per_node = None,
            Some(n) if n > MAX_REPLICAS => return invalid(format!("max_per_node must be at most {MAX_REPLICAS}")),
            Some(n) => next.max_per_node = Some(n),
            None => {}
        }
        match patch.workers {
            Some(0) => next.workers = None,
            Some(n) if n > MAX_WORKERS => return invalid(format!("workers must be between 1 and {MAX_WORKERS}")),
            Some(n) => next.workers = Some(n),
            None => {}
        }
        match patch.update_parallelism {
            Some(n) if n == 0 || n > MAX_UPDATE_PARALLELISM => {
                return invalid(format!("update_parallelism must be between 1 and {MAX_UPDATE_PARALLELISM}"))
            }
            Some(n) => next.update_parallelism = n,
            None => {}
        }
        match patch.update_delay_ms {
            Some(ms) if ms > MAX_UPDATE_DELAY_MS => {
                return invalid(format!("update_delay_ms must be at most {MAX_UPDATE_DELAY_MS}"))
            }
            Some(ms) => next.update_delay_ms = ms,
            None => {}
        }
        if patch.restart {
            next.restarts += 1;
        }
        if patch.rebalance {
            next.rebalances += 1;
        }
        // Each node's metrics instance reports that node's own kernel statistics: the
        // cluster view needs one on every node.
        let only_workers_changed = ServiceSpec {
            workers: next.workers,
            restarts: next.restarts,
            rebalances: next.rebalances,
            update_parallelism: next.update_parallelism,
            update_delay_ms: next.update_delay_ms,
            ..ServiceSpec::default()
        };
        if service == Service::Metrics && next != only_workers_changed {
            return invalid(
                "metrics reads each node's own statistics: it stays global on every node (only workers can change)"
                    .into(),
            );
        }
        Ok(next)
    }
}

/// A change to a node's settings; labels are added (or replaced) then removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePatch {
    pub availability: Option<Availability>,
    pub label_add: BTreeMap<String, String>,
    pub label_rm: Vec<String>,
}

impl NodeSettings {
    pub fn patched(&self, patch: &NodePatch) -> Result<NodeSettings, Rejection> {
        let invalid = |m: String| Err(Rejection::new("validation_failed", m));
        let mut next = self.clone();
        if let Some(a) = patch.availability {
            next.availability = a;
        }
        for (k, v) in &patch.label_add {
            if let Err(e) = check_label("label key", k).and_then(|_| check_label("label value", v)) {
                return invalid(e);
            }
            next.labels.insert(k.clone(), v.clone());
        }
        for k in &patch.label_rm {
            if next.labels.remove(k).is_none() {
                return invalid(format!("the node has no label {k:?}"));
            }
        }
        if next.labels.len() > MAX_LABELS {
            return invalid(format!("at most {MAX_LABELS} labels per node"));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_parse_and_print_back() {
        for text in ["node.role==manager", "node.name!=n3", "node.labels.cpu==big", "node.labels.zone!=eu-1"] {
            let c: Constraint = text.parse().unwrap();
            assert_eq!(c.to_string(), text);
        }
        let c: Constraint = " node.labels.cpu == big ".parse().unwrap();
        assert_eq!(c, Constraint { field: Field::Label("cpu".into()), op: Operator::Eq, value: "big".into() });
    }

    #[test]
    fn bad_constraints_say_what_is_wrong() {
        for (text, needle) in [
            ("node.labels.cpu=big", "unknown operator \"=\""),
            ("node.labels.cpu>=big", "unknown operator \">=\""),
            ("node.labels.cpu<>big", "unknown operator"),
            ("node.labels.cpu", "no operator"),
            ("node.labels.cpu==big==small", "one operator only"),
            ("node.labels.cpu===big", "unknown operator"),
            ("node.labels.cpu!==big", "unknown operator"),
            ("node.cpu==big", "unknown field"),
            ("node.labels.==big", "label key"),
            ("node.labels.cpu==", "value"),
            ("node.role==boss", "manager or worker"),
            ("", "no operator"),
        ] {
            let err = text.parse::<Constraint>().unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    fn patch() -> SpecPatch {
        SpecPatch::default()
    }

    #[test]
    fn scaling_needs_replicated_mode_and_sane_counts() {
        let global = ServiceSpec::default();
        let err = global.patched(Service::Catalog, &SpecPatch { replicas: Some(2), ..patch() }).unwrap_err();
        assert!(err.message.contains("is global"), "{err}");
        let replicated = SpecPatch { mode: Some(Mode::Replicated), replicas: Some(3), ..patch() };
        let spec = global.patched(Service::Catalog, &replicated).unwrap();
        assert_eq!((spec.mode, spec.replicas), (Mode::Replicated, 3));
        let spec = spec.patched(Service::Catalog, &SpecPatch { replicas: Some(0), ..patch() }).unwrap();
        assert_eq!(spec.replicas, 0);
        let err = spec.patched(Service::Catalog, &SpecPatch { replicas: Some(MAX_REPLICAS + 1), ..patch() });
        assert_eq!(err.unwrap_err().code, "validation_failed");
        let err = spec.patched(Service::Catalog, &SpecPatch { workers: Some(MAX_WORKERS + 1), ..patch() });
        assert_eq!(err.unwrap_err().code, "validation_failed");
        let err = spec.patched(Service::Catalog, &SpecPatch { update_parallelism: Some(0), ..patch() });
        assert_eq!(err.unwrap_err().code, "validation_failed");
        let restarted = spec.patched(Service::Catalog, &SpecPatch { restart: true, ..patch() }).unwrap();
        assert_eq!(restarted.restarts, spec.restarts + 1);
        let rebalanced = spec.patched(Service::Catalog, &SpecPatch { rebalance: true, ..patch() }).unwrap();
        assert_eq!((rebalanced.rebalances, rebalanced.restarts), (1, 0));
    }

    #[test]
    fn metrics_stays_global_but_may_change_workers() {
        let spec = ServiceSpec::default();
        let replicated = SpecPatch { mode: Some(Mode::Replicated), replicas: Some(1), ..patch() };
        assert!(spec.patched(Service::Metrics, &replicated).unwrap_err().message.contains("stays global"));
        let constrained = SpecPatch { constraint_add: vec!["node.role==manager".parse().unwrap()], ..patch() };
        assert!(spec.patched(Service::Metrics, &constrained).is_err());
        let workers =
            spec.patched(Service::Metrics, &SpecPatch { workers: Some(2), restart: true, ..patch() }).unwrap();
        assert_eq!((workers.workers, workers.restarts), (Some(2), 1));
    }

    #[test]
    fn constraints_are_added_once_and_removed_only_when_present() {
        let c: Constraint = "node.labels.cpu==big".parse().unwrap();
        let add = SpecPatch { constraint_add: vec![c.clone(), c.clone()], ..patch() };
        let spec = ServiceSpec::default().patched(Service::Prediction, &add).unwrap();
        assert_eq!(spec.constraints, vec![c.clone()]);
        let rm = SpecPatch { constraint_rm: vec![c.clone()], ..patch() };
        let spec = spec.patched(Service::Prediction, &rm).unwrap();
        assert!(spec.constraints.is_empty());
        assert!(spec.patched(Service::Prediction, &rm).unwrap_err().message.contains("has no constraint"));
    }

    #[test]
    fn node_labels_are_checked() {
        let node = NodeSettings::default();
        let bad = NodePatch { label_add: [("cpu".into(), "big one".into())].into(), ..Default::default() };
        assert!(node.patched(&bad).is_err());
        let good = NodePatch {
            availability: Some(Availability::Drain),
            label_add: [("cpu".into(), "big".into())].into(),
            ..Default::default()
        };
        let node = node.patched(&good).unwrap();
        assert_eq!(node.availability, Availability::Drain);
        assert_eq!(node.labels["cpu"], "big");
        let rm = NodePatch { label_rm: vec!["gpu".into()], ..Default::default() };
        assert!(node.patched(&rm).unwrap_err().message.contains("no label"));
    }
}
