//! Orchestration administration (admin only): service specs and their tasks, and node
//! availability and labels. Changes go through Raft; the leader's scheduler and every
//! node's reconciler (`server::reconciler`) act on them.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use panal_actors::orchestration::{
    self, Availability, Constraint, Mode, NodePatch, NodeSettings, ServiceSpec, SpecPatch, TaskView,
};
use panal_actors::services::Service;
use panal_raft::Consistency;
use serde::{Deserialize, Serialize};

use super::cluster::{propose, propose_and_apply, with_index};
use super::extract::JsonBody;
use super::openapi::ApiErrors;
use super::{Admin, AppState};
use crate::error::{Error, Result};
use panal_actors::services::READ_TIMEOUT;

/// A service, its spec and how many of its tasks run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub spec: ServiceSpec,
    /// Tasks assigned to a node.
    pub assigned: usize,
    /// Tasks whose node reports them running.
    pub running: usize,
    /// Tasks no node can take.
    pub pending: usize,
}

/// A change to a service's spec; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdate {
    pub mode: Option<Mode>,
    /// Replicated mode: how many tasks (0 to 1000).
    pub replicas: Option<u32>,
    /// `node.role|node.name|node.labels.KEY` `==|!=` VALUE.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub constraint_add: Vec<Constraint>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub constraint_rm: Vec<Constraint>,
    /// Most tasks per node; 0 removes the limit.
    pub max_per_node: Option<u32>,
    /// Workers per task; 0 goes back to the nodes' `--pool-size`.
    pub workers: Option<u32>,
    /// Start a rolling restart: the nodes running the service replace their instances,
    /// `update_parallelism` nodes at a time, `update_delay_ms` apart.
    #[serde(default)]
    pub restart: bool,
    /// Place the tasks afresh over every eligible node (tasks otherwise stay where they
    /// are, e.g. off a node that came back).
    #[serde(default)]
    pub rebalance: bool,
    /// 1 to 100.
    pub update_parallelism: Option<u32>,
    /// 0 to 600000.
    pub update_delay_ms: Option<u64>,
}

/// A change to a node's availability and labels.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    pub availability: Option<Availability>,
    /// Labels to add or replace.
    #[serde(default)]
    pub label_add: BTreeMap<String, String>,
    /// Label keys to remove.
    #[serde(default)]
    pub label_rm: Vec<String>,
}

/// A node's orchestration settings after a change.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeSettingsView {
    pub id: u64,
    pub name: String,
    pub settings: NodeSettings,
}

fn parse_service(name: &str) -> Result<Service> {
    name.parse().map_err(|_| Error::NotFound(format!("there is no service {name:?}")))
}

async fn view(s: &AppState, service: Service) -> Result<(ServiceView, Vec<TaskView>)> {
    let (read, _) = s
        .replica
        .read(Consistency::Session, 0, READ_TIMEOUT, move |db| {
            Ok::<_, panal_raft::rusqlite::Error>((
                orchestration::specs(db)?.remove(&service).unwrap_or_default(),
                orchestration::tasks(db, service)?,
            ))
        })
        .await?;
    let (spec, tasks) = read?;
    let count = |f: &dyn Fn(&TaskView) -> bool| tasks.iter().filter(|t| f(t)).count();
    let view = ServiceView {
        name: service.name().into(),
        assigned: count(&|t| t.node_id.is_some()),
        running: count(&|t| t.current_state == "running"),
        pending: count(&|t| t.node_id.is_none()),
        spec,
    };
    Ok((view, tasks))
}

/// Every service with its spec and task counts.
#[utoipa::path(get, path = "/api/v1/services", tag = "orchestration", security(("bearer" = [])),
    responses((status = 200, body = Vec<ServiceView>), ApiErrors))]
pub async fn list_services(State(s): State<AppState>, _: Admin) -> Result<Json<Vec<ServiceView>>> {
    let mut out = Vec::new();
    for service in Service::ALL {
        out.push(view(&s, service).await?.0);
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "orchestration", security(("bearer" = [])),
    params(("name" = String, Path)), responses((status = 200, body = ServiceView), ApiErrors))]
pub async fn get_service(State(s): State<AppState>, _: Admin, Path(name): Path<String>) -> Result<Json<ServiceView>> {
    Ok(Json(view(&s, parse_service(&name)?).await?.0))
}

/// Changes a service's spec (scale, mode, constraints, workers). A spec that cannot be
/// placed is accepted: its tasks show `pending` with the reason.
#[utoipa::path(patch, path = "/api/v1/services/{name}", tag = "orchestration", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = ServiceUpdate,
    responses((status = 200, body = ServiceView), ApiErrors))]
pub async fn update_service(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    JsonBody(update): JsonBody<ServiceUpdate>,
) -> Result<Response> {
    let service = parse_service(&name)?;
    let patch = SpecPatch {
        mode: update.mode,
        replicas: update.replicas,
        constraint_add: update.constraint_add,
        constraint_rm: update.constraint_rm,
        max_per_node: update.max_per_node,
        workers: update.workers,
        restart: update.restart,
        rebalance: update.rebalance,
        update_parallelism: update.update_parallelism,
        update_delay_ms: update.update_delay_ms,
    };
    // Checked here for a 400 that names the problem; `apply` checks again against the
    // spec current when the change commits.
    let current = view(&s, service).await?.0.spec;
    current.patched(service, &patch).map_err(|r| Error::BadRequest("validation_failed", r.message))?;
    tracing::info!(by = %who.username, service = service.name(), ?patch, "service update requested");
    let (_, index) = propose_and_apply(&s, orchestration::command::UpdateService { service, patch }).await?;
    Ok(with_index(index, Json(view(&s, service).await?.0)))
}

/// The service's tasks: node, desired and current state, since when, error.
#[utoipa::path(get, path = "/api/v1/services/{name}/tasks", tag = "orchestration", security(("bearer" = [])),
    params(("name" = String, Path)), responses((status = 200, body = Vec<TaskView>), ApiErrors))]
pub async fn service_tasks(
    State(s): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<Vec<TaskView>>> {
    Ok(Json(view(&s, parse_service(&name)?).await?.1))
}

/// Sets a node's availability (`active`, `pause`, `drain`) and labels.
#[utoipa::path(patch, path = "/api/v1/cluster/nodes/{id}", tag = "orchestration", security(("bearer" = [])),
    params(("id" = u64, Path)), request_body = NodeUpdate,
    responses((status = 200, body = NodeSettingsView), ApiErrors))]
pub async fn update_node(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    JsonBody(update): JsonBody<NodeUpdate>,
) -> Result<Response> {
    let id: u64 = id.parse().map_err(|_| Error::BadRequest("invalid_node_id", format!("{id:?} is not a node id")))?;
    let Some((_, node, _)) = s.replica.members().into_iter().find(|(m, _, _)| *m == id) else {
        return Err(Error::NotFound(format!("node {id} is not a member of this cluster")));
    };
    let patch = NodePatch { availability: update.availability, label_add: update.label_add, label_rm: update.label_rm };
    let (current, _) =
        s.replica.read(Consistency::Session, 0, READ_TIMEOUT, move |db| orchestration::node_settings(db)).await?;
    let current = current?.remove(&id).unwrap_or_default();
    let settings = current.patched(&patch).map_err(|r| Error::BadRequest("validation_failed", r.message))?;
    tracing::info!(by = %who.username, node = id, ?patch, "node update requested");
    let (_, index) = propose(&s, orchestration::command::UpdateNode { node_id: id, patch }, None).await?;
    Ok(with_index(index, Json(NodeSettingsView { id, name: node.name, settings })))
}
