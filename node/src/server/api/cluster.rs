//! Cluster administration (admin only): members, status, tokens, the debug key-value
//! endpoint, state checksum and on-demand snapshots.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use panal_actors::cluster::{ClusterCommand, JoinRole};
use panal_actors::kv::KvCommand;
use panal_actors::{Command, Reply};
use serde::Serialize;

use super::extract::ReadOptions;
use super::{Admin, AppState, READ_TIMEOUT, WRITE_TIMEOUT};
use crate::error::{Error, Result};

/// How long `nodes` waits for each member's own report.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(700);

/// Proposes `command` and returns its reply, mapping rejections to 4xx.
pub async fn propose(s: &AppState, command: Command, idempotency_key: Option<String>) -> Result<(Reply, u64)> {
    let out = s.replica.write(&command, idempotency_key, WRITE_TIMEOUT).await?;
    Ok((out.response?, out.index))
}

/// Adds `X-Panal-Index` to a response.
pub fn with_index(index: u64, resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    resp.headers_mut().insert("x-panal-index", HeaderValue::from(index));
    resp
}

pub async fn status(State(s): State<AppState>, _: Admin) -> Json<serde_json::Value> {
    let m = s.replica.metrics();
    let replication = m.replication.as_ref().map(|r| {
        r.iter().map(|(id, l)| (id.to_string(), l.map(|l| l.index))).collect::<std::collections::BTreeMap<_, _>>()
    });
    Json(serde_json::json!({
        "node": s.replica.status(),
        "members": s.replica.members().into_iter().map(|(id, n, role)| serde_json::json!({"id": id, "name": n.name, "role": role, "api_addr": n.api_addr, "peer_addr": n.peer_addr})).collect::<Vec<_>>(),
        "leader": s.replica.leader().map(|(id, n)| serde_json::json!({"id": id, "name": n.name})),
        "replication": replication,
        "ready": s.caught_up.load(std::sync::atomic::Ordering::Acquire),
        "services": s.services.health(),
        "balance": format!("{:?}", s.gateway.policy),
    }))
}

#[derive(Serialize)]
pub struct NodeRow {
    id: u64,
    name: String,
    role: panal_raft::MemberRole,
    state: Option<String>,
    leader: Option<u64>,
    api_addr: String,
    reachable: bool,
    applied_index: Option<u64>,
    term: Option<u64>,
    /// Orchestration: `active`, `pause` or `drain`, and the node's labels.
    availability: panal_actors::orchestration::Availability,
    labels: std::collections::BTreeMap<String, String>,
}

pub async fn nodes(State(s): State<AppState>, _: Admin) -> Result<Json<Vec<NodeRow>>> {
    let members = s.replica.members();
    let (settings, _) = s
        .replica
        .read(panal_raft::Consistency::Stale, 0, READ_TIMEOUT, |db| panal_actors::orchestration::node_settings(db))
        .await?;
    let settings = settings?;
    let rows = futures::future::join_all(members.into_iter().map(|(id, node, role)| {
        let replica = s.replica.clone();
        let node_settings = settings.get(&id).cloned().unwrap_or_default();
        async move {
            let report = if id == replica.id() {
                Some(replica.status())
            } else {
                replica.peer_status(&node, PEER_STATUS_TIMEOUT).await.ok()
            };
            NodeRow {
                id,
                name: node.name.clone(),
                role,
                state: report.as_ref().map(|r| r.state.clone()),
                leader: report.as_ref().and_then(|r| r.leader),
                api_addr: node.api_addr.clone(),
                reachable: report.is_some(),
                applied_index: report.as_ref().map(|r| r.applied_index),
                term: report.as_ref().map(|r| r.term),
                availability: node_settings.availability,
                labels: node_settings.labels,
            }
        }
    }))
    .await;
    Ok(Json(rows))
}

fn parse_id(id: &str) -> Result<u64> {
    id.parse().map_err(|_| Error::BadRequest("invalid_node_id", format!("{id:?} is not a node id")))
}

/// A membership change requested through the API.
#[derive(Debug, Clone, Copy)]
enum MemberChange {
    Promote,
    Demote,
    Remove,
}

/// Checks the id, logs who asked, applies the change (forwarded to the leader).
async fn change_member(s: &AppState, who: &str, id: &str, change: MemberChange) -> Result<Json<serde_json::Value>> {
    let id = parse_id(id)?;
    if !s.replica.members().iter().any(|(m, _, _)| *m == id) {
        return Err(Error::NotFound(format!("node {id} is not a member of this cluster")));
    }
    tracing::info!(by = %who, node = id, ?change, "membership change requested");
    let body = match change {
        MemberChange::Promote => {
            s.replica.promote(id).await?;
            serde_json::json!({ "id": id, "role": "manager" })
        }
        MemberChange::Demote => {
            s.replica.demote(id).await?;
            serde_json::json!({ "id": id, "role": "worker" })
        }
        MemberChange::Remove => {
            s.replica.remove(id).await?;
            serde_json::json!({ "id": id, "removed": true })
        }
    };
    Ok(Json(body))
}

pub async fn promote(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    change_member(&s, &who.username, &id, MemberChange::Promote).await
}

pub async fn demote(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    change_member(&s, &who.username, &id, MemberChange::Demote).await
}

pub async fn remove(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    change_member(&s, &who.username, &id, MemberChange::Remove).await
}

async fn cluster_config(s: &AppState) -> Result<panal_actors::cluster::ClusterConfig> {
    s.replica
        .state_machine()
        .read(|db| panal_actors::cluster::config(db))
        .await??
        .ok_or(Error::Actors(panal_actors::Error::NotInitialized))
}

pub async fn tokens(State(s): State<AppState>, _: Admin) -> Result<Json<serde_json::Value>> {
    let cfg = cluster_config(&s).await?;
    Ok(Json(serde_json::json!({
        "cluster_id": cfg.cluster_id,
        "manager": cfg.token(JoinRole::Manager).to_string(),
        "worker": cfg.token(JoinRole::Worker).to_string(),
    })))
}

pub async fn rotate_token(State(s): State<AppState>, _: Admin, Path(role): Path<String>) -> Result<Response> {
    let role: JoinRole = role.parse().map_err(|e| Error::BadRequest("invalid_role", e))?;
    let secret = crate::server::identity::random_hex(16);
    let (_, index) = propose(&s, Command::Cluster(ClusterCommand::RotateJoinSecret { role, secret }), None).await?;
    let cfg = cluster_config(&s).await?;
    Ok(with_index(index, Json(serde_json::json!({ "role": role, "token": cfg.token(role).to_string() }))))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    seconds: i64,
}

/// `POST /api/v1/admin/clock/advance` (nodes started with `--chaos`): moves the replicated
/// application clock forward, so that time-driven behaviour (reservations, shipping) can be
/// rehearsed without waiting.
pub async fn advance_clock(
    State(s): State<AppState>,
    Admin(who): Admin,
    super::extract::JsonBody(req): super::extract::JsonBody<AdvanceClock>,
) -> Result<Response> {
    if !s.chaos {
        return Err(Error::NotFound("the clock can only be advanced on nodes started with --chaos".into()));
    }
    if !(1..=365 * 24 * 3600).contains(&req.seconds) {
        return Err(Error::BadRequest("invalid_body", "seconds must be 1 to 31536000".into()));
    }
    tracing::warn!(by = %who.username, seconds = req.seconds, "advancing the application clock");
    let (reply, index) =
        propose(&s, Command::Cluster(ClusterCommand::AdvanceClock { ms: req.seconds * 1000 }), None).await?;
    let offset = match reply {
        Reply::Count(ms) => ms,
        _ => 0,
    };
    Ok(with_index(index, Json(serde_json::json!({ "offset_ms": offset }))))
}

pub async fn kv_put(
    State(s): State<AppState>,
    Admin(_): Admin,
    Path(key): Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Result<Response> {
    panal_actors::kv::validate(&key, &body)?;
    let idem = super::extract::idempotency_key(&headers)?;
    let (reply, index) = propose(&s, Command::Kv(KvCommand::Put { key, value: body }), idem).await?;
    Ok(with_index(index, Json(reply_json(reply))))
}

pub async fn kv_get(
    State(s): State<AppState>,
    Admin(_): Admin,
    Path(key): Path<String>,
    opts: ReadOptions,
) -> Result<Response> {
    let (entry, index) = s
        .replica
        .read(opts.consistency, opts.min_index, READ_TIMEOUT, move |db| panal_actors::kv::get(db, &key))
        .await?;
    match entry? {
        Some(e) => Ok(with_index(index, Json(e))),
        None => Err(Error::NotFound("no such key".into())),
    }
}

pub async fn checksum(State(s): State<AppState>, _: Admin) -> Result<Json<serde_json::Value>> {
    let (index, sum) = s.replica.state_machine().checksum().await?;
    Ok(Json(serde_json::json!({ "applied_index": index, "checksum": sum })))
}

/// `GET /api/v1/admin/backup`: a consistent SQLite copy of the replicated state, taken
/// after a linearizable barrier so it holds every write acknowledged before the request.
pub async fn backup(State(s): State<AppState>, _: Admin) -> Result<Response> {
    let index = s.replica.read_barrier(panal_raft::Consistency::Linearizable, 0, super::READ_TIMEOUT).await?;
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(format!("temporary directory: {e}")))?;
    let file = dir.path().join("backup.db");
    s.replica.state_machine().backup_to(file.clone()).await?;
    strip_backup(file.clone()).await?;
    let bytes = tokio::fs::read(&file).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/vnd.sqlite3".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"panal-backup.db\"".to_string()),
            (axum::http::HeaderName::from_static("x-panal-index"), index.to_string()),
        ],
        bytes,
    )
        .into_response())
}

/// Backups carry no signing keys or cluster secrets (restore makes new ones): a stolen
/// backup cannot mint tokens or join the cluster.
async fn strip_backup(file: std::path::PathBuf) -> Result<()> {
    use panal_raft::rusqlite::Connection;
    tokio::task::spawn_blocking(move || {
        let db = Connection::open(&file)?;
        panal_actors::auth::strip_secrets(&db)?;
        db.execute_batch("VACUUM")
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(format!("cannot strip secrets from the backup: {e}")))
}

pub async fn snapshot(State(s): State<AppState>, _: Admin) -> Result<Json<serde_json::Value>> {
    let index = s.replica.snapshot_now().await?;
    Ok(Json(serde_json::json!({ "snapshot_index": index, "status": s.replica.status() })))
}

fn reply_json(reply: Reply) -> serde_json::Value {
    match reply {
        Reply::KvEntry(e) => serde_json::to_value(e).unwrap_or_default(),
        other => serde_json::to_value(other).unwrap_or_default(),
    }
}
