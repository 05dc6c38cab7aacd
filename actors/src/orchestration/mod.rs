//! Built-in orchestration: replicated service specs and node settings, the task
//! assignment the leader's scheduler records, and each node's observed state.
//!
//! Tables: `orch_specs` (a service without a row has the default spec: global),
//! `orch_nodes` (a node without a row is active and unlabelled), `orch_tasks` (the
//! assignment; empty until the leader first schedules, and then nodes keep running
//! everything as before orchestration existed) and `orch_observed` (what each node's
//! reconciler reports running).

pub mod scheduler;
pub mod spec;

use std::collections::BTreeMap;

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

pub use scheduler::{my_turn_to_restart, schedule, successor_of_drained_leader, tasks_on, Assignment, NodeView};
pub use spec::{Availability, Constraint, Mode, NodePatch, NodeSettings, ServiceSpec, SpecPatch};

use crate::command::{commands, Proposal};
use crate::services::Service;
use crate::Rejection;

/// What a node's reconciler saw its service doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObservedState {
    Running,
    Failed,
    Shutdown,
}

commands! {
    pub enum OrchestrationCommand {
        UpdateService {
            pub service: Service,
            pub patch: SpecPatch,
        },
        UpdateNode {
            pub node_id: u64,
            pub patch: NodePatch,
        },
        /// The leader's scheduler output: the whole assignment.
        SetAssignments {
            pub assignments: Vec<Assignment>,
        },
        /// A node's reconciler reports one service.
        /// `generation`: the service's `restarts` this node's instances are up to date with.
        Observe {
            pub node_id: u64,
            pub service: Service,
            pub state: ObservedState,
            pub workers: u32,
            pub error: Option<String>,
            #[serde(default)]
            pub generation: u64,
        },
    }
}

/// One task as the API shows it: where it should run and what its node reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    #[schema(value_type = String)]
    pub service: Service,
    pub slot: u64,
    pub node_id: Option<u64>,
    /// `assigned` or `pending`.
    pub desired_state: String,
    /// `pending`, `assigned` (its node has not reported yet), or the node's report:
    /// `running`, `failed`, `shutdown`.
    pub current_state: String,
    /// Why it is pending, or the node's error.
    pub error: Option<String>,
    /// RFC 3339 time of the last change of this slot's assignment.
    pub since: String,
    /// Workers of this service on the node (all its tasks of this service together).
    pub workers: Option<u32>,
    /// The rolling restart (`restarts` of the spec) the node's instances are up to date with.
    pub generation: Option<u64>,
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS orch_specs (service TEXT PRIMARY KEY, spec TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS orch_nodes (node_id INTEGER PRIMARY KEY, settings TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS orch_tasks (service TEXT NOT NULL, slot INTEGER NOT NULL, node_id INTEGER,
             pending TEXT, since_ms INTEGER NOT NULL, PRIMARY KEY (service, slot));
         CREATE TABLE IF NOT EXISTS orch_observed (node_id INTEGER NOT NULL, service TEXT NOT NULL,
             state TEXT NOT NULL, workers INTEGER NOT NULL, error TEXT, since_ms INTEGER NOT NULL,
             generation INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (node_id, service));",
    )
}

fn to_sql(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(to_sql)
}

fn json<T: Serialize>(v: &T) -> rusqlite::Result<String> {
    serde_json::to_string(v).map_err(to_sql)
}

fn service_of(name: &str) -> rusqlite::Result<Service> {
    name.parse().map_err(|e: String| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

/// Drops what belongs to the old cluster's nodes (settings, assignment, reports) from a
/// state restored from a backup; the service specs stay. Node ids of the new cluster
/// would otherwise inherit another cluster's drains and labels.
pub fn forget_nodes(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch("DELETE FROM orch_nodes; DELETE FROM orch_tasks; DELETE FROM orch_observed;")
}

/// Every service's spec (defaults included).
pub fn specs(db: &Connection) -> rusqlite::Result<BTreeMap<Service, ServiceSpec>> {
    let mut out: BTreeMap<Service, ServiceSpec> = Service::ALL.into_iter().map(|s| (s, Default::default())).collect();
    let mut stmt = db.prepare_cached("SELECT service, spec FROM orch_specs")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (service, spec) = row?;
        out.insert(service_of(&service)?, from_json(&spec)?);
    }
    Ok(out)
}

/// Settings of every node that has any (others are active and unlabelled).
pub fn node_settings(db: &Connection) -> rusqlite::Result<BTreeMap<u64, NodeSettings>> {
    let mut stmt = db.prepare_cached("SELECT node_id, settings FROM orch_nodes")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (id, settings) = row?;
        Ok((id as u64, from_json(&settings)?))
    })
    .collect()
}

/// The recorded assignment in (service, slot) order (the order `schedule` returns); empty
/// until the leader has scheduled once.
pub fn assignments(db: &Connection) -> rusqlite::Result<Vec<Assignment>> {
    let mut stmt =
        db.prepare_cached("SELECT service, slot, node_id, pending FROM orch_tasks ORDER BY service, slot")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?, r.get::<_, Option<String>>(3)?))
    })?;
    rows.map(|row| {
        let (service, slot, node_id, pending) = row?;
        Ok(Assignment {
            service: service_of(&service)?,
            slot: slot as u64,
            node_id: node_id.map(|n| n as u64),
            pending,
        })
    })
    .collect::<rusqlite::Result<Vec<_>>>()
    .map(|mut all| {
        // Services sort by declaration, not by name as SQL would.
        all.sort();
        all
    })
}

/// The tasks of `service` with their nodes' reports.
pub fn tasks(db: &Connection, service: Service) -> rusqlite::Result<Vec<TaskView>> {
    let mut stmt = db.prepare_cached(
        "SELECT t.slot, t.node_id, t.pending, t.since_ms, o.state, o.workers, o.error, o.generation
         FROM orch_tasks t LEFT JOIN orch_observed o ON o.node_id = t.node_id AND o.service = t.service
         WHERE t.service = ?1 ORDER BY t.slot",
    )?;
    let rows = stmt.query_map([service.name()], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, Option<i64>>(7)?,
        ))
    })?;
    rows.map(|row| {
        let (slot, node_id, pending, since_ms, observed, workers, error, generation) = row?;
        let (desired, current, error) = match (node_id, pending) {
            (None, reason) => ("pending", "pending".to_string(), reason),
            (Some(_), _) => ("assigned", observed.unwrap_or_else(|| "assigned".into()), error),
        };
        Ok(TaskView {
            service,
            slot: slot as u64,
            node_id: node_id.map(|n| n as u64),
            desired_state: desired.into(),
            current_state: current,
            error,
            since: crate::time::rfc3339(since_ms),
            workers: workers.map(|w| w as u32),
            generation: generation.map(|g| g as u64),
        })
    })
    .collect()
}

/// The restart generation each node reported for `service`.
pub fn observed_generations(db: &Connection, service: Service) -> rusqlite::Result<BTreeMap<u64, u64>> {
    let mut stmt = db.prepare_cached("SELECT node_id, generation FROM orch_observed WHERE service = ?1")?;
    let rows = stmt.query_map([service.name()], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

impl Proposal for command::UpdateService {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Self { service, patch } = self;
        let current = specs(db)?.remove(&service).unwrap_or_default();
        let next = match current.patched(service, &patch) {
            Ok(next) => next,
            Err(r) => return Ok(Err(r)),
        };
        db.execute(
            "INSERT INTO orch_specs (service, spec) VALUES (?1, ?2) ON CONFLICT(service) DO UPDATE SET spec = excluded.spec",
            params![service.name(), json(&next)?],
        )?;
        Ok(Ok(()))
    }
}

impl Proposal for command::UpdateNode {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Self { node_id, patch } = self;
        let current = node_settings(db)?.remove(&node_id).unwrap_or_default();
        let next = match current.patched(&patch) {
            Ok(next) => next,
            Err(r) => return Ok(Err(r)),
        };
        db.execute(
            "INSERT INTO orch_nodes (node_id, settings) VALUES (?1, ?2) ON CONFLICT(node_id) DO UPDATE SET settings = excluded.settings",
            params![node_id as i64, json(&next)?],
        )?;
        Ok(Ok(()))
    }
}

impl Proposal for command::SetAssignments {
    type Reply = ();

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Self { assignments: next } = self;
        if next.len() > Service::ALL.len() * (spec::MAX_REPLICAS as usize + 1) {
            return Ok(Err(Rejection::new("validation_failed", "too many tasks")));
        }
        let current = assignments(db)?;
        let key = |a: &Assignment| (a.service, a.slot);
        let kept: BTreeMap<_, _> = current.iter().map(|a| (key(a), a)).collect();
        let wanted: BTreeMap<_, _> = next.iter().map(|a| (key(a), a)).collect();
        for (service, slot) in kept.keys().filter(|k| !wanted.contains_key(*k)) {
            db.execute(
                "DELETE FROM orch_tasks WHERE service = ?1 AND slot = ?2",
                params![service.name(), *slot as i64],
            )?;
        }
        // Unchanged slots keep their `since`.
        for (k, a) in wanted {
            if kept.get(&k) == Some(&a) {
                continue;
            }
            db.execute(
                "INSERT INTO orch_tasks (service, slot, node_id, pending, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(service, slot) DO UPDATE SET node_id = excluded.node_id, pending = excluded.pending, since_ms = excluded.since_ms",
                params![k.0.name(), k.1 as i64, a.node_id.map(|n| n as i64), a.pending, ctx.now_ms],
            )?;
        }
        Ok(Ok(()))
    }
}

impl Proposal for command::Observe {
    type Reply = ();

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Self { node_id, service, state, workers, error, generation } = self;
        let state_text = json(&state)?.trim_matches('"').to_string();
        let unchanged: Option<i64> = db
            .query_row(
                "SELECT 1 FROM orch_observed WHERE node_id = ?1 AND service = ?2 AND state = ?3 AND workers = ?4 AND error IS ?5
                 AND generation = ?6",
                params![node_id as i64, service.name(), state_text, workers as i64, error, generation as i64],
                |r| r.get(0),
            )
            .optional()?;
        if unchanged.is_none() {
            db.execute(
                "INSERT INTO orch_observed (node_id, service, state, workers, error, since_ms, generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(node_id, service) DO UPDATE SET state = excluded.state, workers = excluded.workers,
                   error = excluded.error, since_ms = excluded.since_ms, generation = excluded.generation",
                params![
                    node_id as i64,
                    service.name(),
                    state_text,
                    workers as i64,
                    error,
                    ctx.now_ms,
                    generation as i64
                ],
            )?;
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(
        db: &Connection,
        ctx: &ApplyContext,
        c: impl Into<OrchestrationCommand>,
    ) -> rusqlite::Result<crate::Response> {
        c.into().apply(db, ctx)
    }

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        panal_raft::Application::migrate(&crate::PanalApp, &c).unwrap();
        c
    }

    #[test]
    fn specs_default_to_global_and_bad_patches_change_nothing() {
        let db = db();
        let ctx = ApplyContext { index: 1, now_ms: 1000 };
        assert!(specs(&db).unwrap().values().all(|s| *s == ServiceSpec::default()));
        let scale_metrics = command::UpdateService {
            service: Service::Metrics,
            patch: SpecPatch { mode: Some(Mode::Replicated), replicas: Some(1), ..Default::default() },
        };
        assert_eq!(apply(&db, &ctx, scale_metrics).unwrap().unwrap_err().code, "validation_failed");
        assert_eq!(specs(&db).unwrap()[&Service::Metrics], ServiceSpec::default());
        let scale = command::UpdateService {
            service: Service::Catalog,
            patch: SpecPatch { mode: Some(Mode::Replicated), replicas: Some(2), ..Default::default() },
        };
        apply(&db, &ctx, scale).unwrap().unwrap();
        assert_eq!(specs(&db).unwrap()[&Service::Catalog].replicas, 2);
    }

    #[test]
    fn assignments_keep_since_for_unchanged_slots_and_join_reports() {
        let db = db();
        let a = |slot, node| Assignment { service: Service::Catalog, slot, node_id: node, pending: None };
        let set = |v: Vec<Assignment>| command::SetAssignments { assignments: v };
        apply(&db, &ApplyContext { index: 1, now_ms: 1000 }, set(vec![a(0, Some(1)), a(1, Some(2))])).unwrap().unwrap();
        apply(&db, &ApplyContext { index: 2, now_ms: 5000 }, set(vec![a(0, Some(1)), a(1, Some(3))])).unwrap().unwrap();
        let observe = command::Observe {
            node_id: 1,
            service: Service::Catalog,
            state: ObservedState::Running,
            workers: 2,
            error: None,
            generation: 1,
        };
        apply(&db, &ApplyContext { index: 3, now_ms: 6000 }, observe).unwrap().unwrap();
        let tasks = tasks(&db, Service::Catalog).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!((tasks[0].current_state.as_str(), tasks[0].workers), ("running", Some(2)));
        assert_eq!(tasks[0].generation, Some(1));
        assert_eq!(observed_generations(&db, Service::Catalog).unwrap(), BTreeMap::from([(1, 1)]));
        assert_eq!(tasks[0].since, crate::time::rfc3339(1000));
        assert_eq!((tasks[1].node_id, tasks[1].current_state.as_str()), (Some(3), "assigned"));
        assert_eq!(tasks[1].since, crate::time::rfc3339(5000));
        apply(&db, &ApplyContext { index: 4, now_ms: 7000 }, set(vec![a(0, Some(1))])).unwrap().unwrap();
        assert_eq!(assignments(&db).unwrap(), vec![a(0, Some(1))]);
        // Read back in the order `schedule` produces (metrics after prediction), so that an
        // unchanged assignment compares equal and is not written again.
        let nodes = [NodeView {
            id: 1,
            name: "n1".into(),
            role: "manager".into(),
            settings: Default::default(),
            reachable: true,
        }];
        let scheduled = schedule(&specs(&db).unwrap(), &nodes, &[]);
        apply(&db, &ApplyContext { index: 5, now_ms: 8000 }, set(scheduled.clone())).unwrap().unwrap();
        assert_eq!(assignments(&db).unwrap(), scheduled);
    }

    #[test]
    fn node_patches_persist_and_refuse_bad_labels() {
        let db = db();
        let ctx = ApplyContext { index: 1, now_ms: 0 };
        let patch = NodePatch { label_add: [("cpu".into(), "big".into())].into(), ..Default::default() };
        apply(&db, &ctx, command::UpdateNode { node_id: 2, patch }).unwrap().unwrap();
        let bad = NodePatch { label_rm: vec!["nope".into()], ..Default::default() };
        assert!(apply(&db, &ctx, command::UpdateNode { node_id: 2, patch: bad }).unwrap().is_err());
        assert_eq!(node_settings(&db).unwrap()[&2].labels["cpu"], "big");
        forget_nodes(&db).unwrap();
        assert!(node_settings(&db).unwrap().is_empty());
    }
}
