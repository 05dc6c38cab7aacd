//! Cluster administration (admin only): members, status, tokens, the debug key-value
//! endpoint, state checksum, on-demand snapshots, backups and the application clock.
//! Typed and documented like the service routes, behind the same `Admin` extractor.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use panal_actors::cluster::{self, JoinRole};
use panal_actors::kv::{self, KvEntry};
use panal_actors::Proposal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{CallMeta, JsonBody, Path, TextBody};
use super::openapi::AdminErrors;
use super::{Admin, AppState};
use crate::error::{Error, Result};

/// How long `nodes` waits for each member's own report.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(700);
/// Longest clock advance one request may ask for: a year.
const MAX_ADVANCE_SECONDS: i64 = 365 * 24 * 3600;

/// Proposes `proposal` and returns the reply its command declares with the entry's index,
/// mapping rejections to 4xx. The deadline is the replica's own (the one write timeout of
/// the node). A write forwarded by a follower is answered once the leader applied it.
pub async fn propose<P: Proposal>(
    s: &AppState,
    proposal: P,
    idempotency_key: Option<String>,
) -> Result<(P::Reply, u64)> {
    let out =
        panal_actors::propose(&s.replica, proposal, idempotency_key, panal_actors::services::WRITE_TIMEOUT).await?;
    Ok((out.response, out.index))
}

/// [`propose`], answered once this node applied the write too: for routes that answer
/// with state read back from this node's replica.
pub async fn propose_and_apply<P: Proposal>(s: &AppState, proposal: P) -> Result<(P::Reply, u64)> {
    let (reply, index) = propose(s, proposal, None).await?;
    s.replica.wait_applied(index, panal_actors::services::READ_TIMEOUT).await?;
    Ok((reply, index))
}

/// Adds `X-Panal-Index` to a response.
pub fn with_index(index: u64, resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    resp.headers_mut().insert("x-panal-index", HeaderValue::from(index));
    resp
}

/// A member as the replicated membership lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: u64,
    pub name: String,
    #[schema(value_type = String, pattern = "^(manager|worker)$")]
    pub role: panal_raft::MemberRole,
    pub api_addr: String,
    pub peer_addr: String,
}

/// The leader this node knows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaderRef {
    pub id: u64,
    pub name: String,
}

/// This node's own Raft state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RaftStatus {
    pub id: u64,
    pub name: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

impl From<panal_raft::MemberStatus> for RaftStatus {
    fn from(m: panal_raft::MemberStatus) -> Self {
        RaftStatus {
            id: m.id,
            name: m.name,
            state: m.state,
            term: m.term,
            leader: m.leader,
            last_log_index: m.last_log_index,
            applied_index: m.applied_index,
            snapshot_index: m.snapshot_index,
            purged_index: m.purged_index,
        }
    }
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    pub node: RaftStatus,
    pub members: Vec<Member>,
    pub leader: Option<LeaderRef>,
    /// On the leader: each member's last replicated log index, by node id.
    pub replication: Option<BTreeMap<String, Option<u64>>>,
    /// Whether this node knows a leader and has caught up with it.
    pub ready: bool,
    /// Each service's health on this node, by service name.
    #[schema(value_type = Object)]
    pub services: BTreeMap<panal_actors::services::Service, panal_actors::services::ServiceHealth>,
    /// The gateway's balancing policy.
    pub balance: String,
}

/// `GET /api/v1/cluster/status`
#[utoipa::path(get, path = "/api/v1/cluster/status", operation_id = "cluster_status", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = ClusterStatus), AdminErrors))]
pub async fn status(State(s): State<AppState>, _: Admin) -> Json<ClusterStatus> {
    let m = s.replica.metrics();
    let replication =
        m.replication.as_ref().map(|r| r.iter().map(|(id, l)| (id.to_string(), l.map(|l| l.index))).collect());
    Json(ClusterStatus {
        node: s.replica.status().into(),
        members: s
            .replica
            .members()
            .into_iter()
            .map(|(id, n, role)| Member { id, name: n.name, role, api_addr: n.api_addr, peer_addr: n.peer_addr })
            .collect(),
        leader: s.replica.leader().map(|(id, n)| LeaderRef { id, name: n.name }),
        replication,
        ready: s.caught_up.load(std::sync::atomic::Ordering::Acquire),
        services: s.services.health(),
        balance: format!("{:?}", s.gateway.policy),
    })
}

/// One member with its own report, when it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeRow {
    pub id: u64,
    pub name: String,
    #[schema(value_type = String, pattern = "^(manager|worker)$")]
    pub role: panal_raft::MemberRole,
    pub state: Option<String>,
    pub leader: Option<u64>,
    pub api_addr: String,
    pub reachable: bool,
    pub applied_index: Option<u64>,
    pub term: Option<u64>,
    /// Orchestration: `active`, `pause` or `drain`, and the node's labels.
    pub availability: panal_actors::orchestration::Availability,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Each service's supervisor on that node (`running` with its worker count, 0 once
    /// stopped there, or `failed` with the reason), asked live; absent when it did not answer.
    #[schema(value_type = Option<Object>)]
    pub services: Option<BTreeMap<panal_actors::services::Service, panal_actors::services::ServiceHealth>>,
}

/// `GET /api/v1/cluster/nodes`: every member, each asked for its own state.
#[utoipa::path(get, path = "/api/v1/cluster/nodes", operation_id = "cluster_nodes", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = Vec<NodeRow>), AdminErrors))]
pub async fn nodes(State(s): State<AppState>, _: Admin) -> Result<Json<Vec<NodeRow>>> {
    let members = s.replica.members();
    let (settings, _) = s
        .replica
        .read(panal_raft::Consistency::Stale, 0, panal_actors::services::READ_TIMEOUT, |db| {
            panal_actors::orchestration::node_settings(db)
        })
        .await?;
    let settings = settings?;
    let rows = futures::future::join_all(members.into_iter().map(|(id, node, role)| {
        let s = s.clone();
        let node_settings = settings.get(&id).cloned().unwrap_or_default();
        async move {
            let replica = &s.replica;
            let (report, services) = if id == replica.id() {
                (Some(replica.status()), Some(s.services.health()))
            } else {
                let (report, services) = futures::future::join(
                    replica.peer_status(&node, PEER_STATUS_TIMEOUT),
                    super::cluster_view::ask_typed(&s, &node.name, panal_actors::metrics::ops::Health),
                )
                .await;
                (report.ok(), services.ok())
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
                services,
            }
        }
    }))
    .await;
    Ok(Json(rows))
}

/// How long a revocation after a removal waits for a leader: removing the leader causes
/// an election, and the removal it follows has already been committed.
const REVOKE_WAIT: Duration = Duration::from_secs(15);

/// Records that node `id`'s certificates are refused from now on, retrying while the
/// cluster has no leader (as a membership change does).
async fn revoke_node(s: &AppState, id: u64) -> Result<()> {
    let deadline = std::time::Instant::now() + REVOKE_WAIT;
    let key = panal_raft::auto_idempotency_key();
    loop {
        let revoke = panal_actors::cluster::command::RevokeNode { node_id: id };
        match panal_actors::propose(&s.replica, revoke, Some(key.clone()), panal_actors::services::WRITE_TIMEOUT).await
        {
            Ok(_) => {
                tracing::info!(node = id, "the removed node's certificates are revoked");
                return Ok(());
            }
            // This node removed itself: it can no longer write to the log.
            Err(e) if e.code() == "node_removed" => {
                tracing::warn!(
                    node = id,
                    "this node removed itself and cannot record the revocation of its certificates: remove \
                     nodes through another member to revoke them"
                );
                return Ok(());
            }
            Err(e) if e.code() == "no_leader" && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A membership change requested through the API.
#[derive(Debug, Clone, Copy)]
enum MemberChange {
    Promote,
    Demote,
    Remove,
}

/// What a membership change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberChanged {
    pub id: u64,
    /// The member's role now; absent once removed.
    #[schema(pattern = "^(manager|worker)$")]
    pub role: Option<String>,
    pub removed: bool,
}

/// Checks the id, logs who asked, applies the change (forwarded to the leader).
async fn change_member(s: &AppState, who: &str, id: u64, change: MemberChange) -> Result<Json<MemberChanged>> {
    if !s.replica.members().iter().any(|(m, _, _)| *m == id) {
        return Err(Error::NotFound(format!("node {id} is not a member of this cluster")));
    }
    tracing::info!(by = %who, node = id, ?change, "membership change requested");
    let (role, removed) = match change {
        MemberChange::Promote => (s.replica.promote(id).await.map(|_| Some("manager"))?, false),
        MemberChange::Demote => (s.replica.demote(id).await.map(|_| Some("worker"))?, false),
        MemberChange::Remove => {
            let removal = s.replica.remove(id).await;
            // A removal retried across an election may fail after its first attempt was
            // applied: the node is gone all the same, and revoked all the same.
            if removal.is_ok() || !s.replica.members().iter().any(|(m, _, _)| *m == id) {
                // Its certificates are refused from now on, wherever it connects from.
                revoke_node(s, id).await?;
            }
            (removal.map(|_| None)?, true)
        }
    };
    Ok(Json(MemberChanged { id, role: role.map(String::from), removed }))
}

/// Makes a worker a manager (a Raft voter).
#[utoipa::path(post, path = "/api/v1/cluster/nodes/{id}/promote", operation_id = "cluster_promote", tag = "cluster", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Node id", minimum = 0)),
    responses((status = 200, body = MemberChanged), AdminErrors))]
pub async fn promote(State(s): State<AppState>, Admin(who): Admin, Path(id): Path<u64>) -> Result<Json<MemberChanged>> {
    change_member(&s, &who.username, id, MemberChange::Promote).await
}

/// Makes a manager a worker (a non-voting learner).
#[utoipa::path(post, path = "/api/v1/cluster/nodes/{id}/demote", operation_id = "cluster_demote", tag = "cluster", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Node id", minimum = 0)),
    responses((status = 200, body = MemberChanged), AdminErrors))]
pub async fn demote(State(s): State<AppState>, Admin(who): Admin, Path(id): Path<u64>) -> Result<Json<MemberChanged>> {
    change_member(&s, &who.username, id, MemberChange::Demote).await
}

/// Removes a member from the cluster.
#[utoipa::path(delete, path = "/api/v1/cluster/nodes/{id}", operation_id = "cluster_remove", tag = "cluster", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Node id", minimum = 0)),
    responses((status = 200, body = MemberChanged), AdminErrors))]
pub async fn remove(State(s): State<AppState>, Admin(who): Admin, Path(id): Path<u64>) -> Result<Json<MemberChanged>> {
    change_member(&s, &who.username, id, MemberChange::Remove).await
}

async fn cluster_config(s: &AppState) -> Result<panal_actors::cluster::ClusterConfig> {
    s.replica
        .state_machine()
        .read(|db| panal_actors::cluster::config(db))??
        .ok_or(Error::Actors(panal_actors::Error::NotInitialized))
}

/// The cluster's join tokens (the typed client reads the same type).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct JoinTokens {
    pub cluster_id: String,
    /// `PANAL-2-<CA fingerprint>-<cluster id>-<secret>-manager` (`PANAL-1-…` without peer TLS)
    pub manager: String,
    /// `PANAL-2-<CA fingerprint>-<cluster id>-<secret>-worker`
    pub worker: String,
}

impl JoinTokens {
    /// The token for `role` (`manager` or anything else: worker).
    pub fn for_role(&self, role: &str) -> &str {
        if role == "manager" {
            &self.manager
        } else {
            &self.worker
        }
    }
}

/// The cluster CA and this node's certificate (the typed client reads the same type).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct CaInfo {
    /// SHA-256 of the CA's public key (hex), as in the join tokens; none without peer TLS.
    pub fingerprint: Option<String>,
    /// The trust bundle (PEM): the CA certificate(s) clients and nodes trust.
    pub ca_pem: Option<String>,
    /// When the current CA certificate expires (seconds since the epoch).
    pub ca_not_after: Option<u64>,
    /// The answering node's certificate subject (`CN=node-<id>`) and expiry.
    pub node_subject: Option<String>,
    pub node_not_after: Option<u64>,
    /// During a CA rotation (`panal ca rotate`): the CA being replaced, still trusted.
    #[serde(default)]
    pub previous_fingerprint: Option<String>,
    /// During a CA rotation: the members that hold no certificate from the new CA yet.
    #[serde(default)]
    pub pending_nodes: Vec<u64>,
    /// The answering node's certificate was issued by the CA with this fingerprint.
    #[serde(default)]
    pub node_issuer_fingerprint: Option<String>,
}

/// The cluster CA: fingerprint, certificate and expiry, and the answering node's
/// certificate expiry.
#[utoipa::path(get, path = "/api/v1/cluster/ca", operation_id = "cluster_ca", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = CaInfo), AdminErrors))]
pub async fn ca(State(s): State<AppState>, _: Admin) -> Result<Json<CaInfo>> {
    let state = s.replica.state_machine().read(|db| panal_actors::cluster::trust_state(db))??;
    let secs = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let ca = state.bundle.as_deref().map(crate::server::tls::CertSummary::of_pem).transpose()?;
    let node = s.tls.as_ref().map(|t| t.certificate()).transpose()?;
    let issuer = s.tls.as_ref().map(|t| t.issuer_fingerprint()).transpose()?;
    Ok(Json(CaInfo {
        fingerprint: ca.as_ref().map(|c| c.fingerprint.clone()),
        ca_not_after: ca.as_ref().map(|c| secs(c.not_after)),
        previous_fingerprint: state.rotation.as_ref().map(|r| r.previous_fingerprint.clone()),
        pending_nodes: crate::server::tls::pending_members(&state, &s.replica.members()),
        ca_pem: state.bundle,
        node_subject: node.as_ref().map(|n| n.subject.clone()),
        node_not_after: node.as_ref().map(|n| secs(n.not_after)),
        node_issuer_fingerprint: issuer,
    }))
}

/// Begins a CA rotation: a manager makes a new CA, which signs from now on; every node
/// re-issues its certificate from it while both CAs are trusted, and the old CA is dropped
/// once every member holds a new certificate (see `ca` for the progress).
#[utoipa::path(post, path = "/api/v1/cluster/ca/rotate", operation_id = "cluster_ca_rotate", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = crate::server::tls::CaRotated), AdminErrors))]
pub async fn ca_rotate(State(s): State<AppState>, Admin(who): Admin) -> Result<Json<crate::server::tls::CaRotated>> {
    let tls = s.tls.as_ref().ok_or_else(|| {
        Error::BadRequest("no_ca", "this cluster runs without peer TLS (--peer-tls off): no CA to rotate".into())
    })?;
    tracing::info!(by = %who.username, "CA rotation requested");
    Ok(Json(crate::server::tls::rotate(&s.replica, tls).await?))
}

/// The join tokens for new managers and workers.
#[utoipa::path(get, path = "/api/v1/cluster/tokens", operation_id = "cluster_tokens", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = JoinTokens), AdminErrors))]
pub async fn tokens(State(s): State<AppState>, _: Admin) -> Result<Json<JoinTokens>> {
    let cfg = cluster_config(&s).await?;
    Ok(Json(JoinTokens {
        cluster_id: cfg.cluster_id.clone(),
        manager: cfg.token(JoinRole::Manager).to_string(),
        worker: cfg.token(JoinRole::Worker).to_string(),
    }))
}

/// A freshly rotated join token.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedToken {
    pub role: JoinRole,
    pub token: String,
}

/// Replaces the secret of one role's join token; the old token stops working.
#[utoipa::path(post, path = "/api/v1/cluster/tokens/{role}/rotate", operation_id = "cluster_rotate_token", tag = "cluster", security(("bearer" = [])),
    params(("role" = JoinRole, Path)),
    responses((status = 200, body = RotatedToken, headers(("X-Panal-Index" = u64, description = "Log index of the write"))),
        AdminErrors))]
pub async fn rotate_token(State(s): State<AppState>, _: Admin, Path(role): Path<JoinRole>) -> Result<Response> {
    let secret = crate::server::identity::random_hex(16);
    let (_, index) = propose_and_apply(&s, cluster::command::RotateJoinSecret { role, secret }).await?;
    let cfg = cluster_config(&s).await?;
    Ok(with_index(index, Json(RotatedToken { role, token: cfg.token(role).to_string() })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    /// How far to move the clock forward.
    #[schema(minimum = 1, maximum = 31536000)]
    seconds: i64,
}

/// The application clock's offset from the wall clock.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClockOffset {
    pub offset_ms: u64,
}

/// Moves the replicated application clock forward (nodes started with `--chaos`; 404
/// elsewhere), so that time-driven behaviour (reservations, shipping) can be rehearsed
/// without waiting.
#[utoipa::path(post, path = "/api/v1/admin/clock/advance", operation_id = "cluster_advance_clock", tag = "cluster", security(("bearer" = [])),
    request_body = AdvanceClock,
    responses((status = 200, body = ClockOffset, headers(("X-Panal-Index" = u64, description = "Log index of the write"))),
        AdminErrors))]
pub async fn advance_clock(
    State(s): State<AppState>,
    Admin(who): Admin,
    JsonBody(req): JsonBody<AdvanceClock>,
) -> Result<Response> {
    if !s.chaos {
        return Err(Error::NotFound("the clock can only be advanced on nodes started with --chaos".into()));
    }
    if !(1..=MAX_ADVANCE_SECONDS).contains(&req.seconds) {
        return Err(Error::fields(vec![panal_actors::error::FieldError {
            field: "seconds".into(),
            message: format!("must be 1 to {MAX_ADVANCE_SECONDS}"),
        }]));
    }
    tracing::warn!(by = %who.username, seconds = req.seconds, "advancing the application clock");
    let (offset_ms, index) = propose(&s, cluster::command::AdvanceClock { ms: req.seconds * 1000 }, None).await?;
    Ok(with_index(index, Json(ClockOffset { offset_ms })))
}

/// Sets a debug key to the request body (text).
#[utoipa::path(put, path = "/api/v1/cluster/kv/{key}", operation_id = "cluster_kv_put", tag = "cluster", security(("bearer" = [])),
    params(("key" = String, Path, min_length = 1, max_length = 256),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128,
            description = "Makes a retried write happen once")),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = KvEntry, headers(("X-Panal-Index" = u64, description = "Log index of the write"))),
        AdminErrors))]
pub async fn kv_put(
    State(s): State<AppState>,
    Admin(_): Admin,
    Path(key): Path<String>,
    meta: CallMeta,
    TextBody(body): TextBody,
) -> Result<Response> {
    panal_actors::kv::validate(&key, &body)?;
    let (entry, index) = propose(&s, kv::command::Put { key, value: body }, Some(meta.idempotency_key)).await?;
    Ok(with_index(index, Json(entry)))
}

/// Reads a debug key at the requested consistency.
#[utoipa::path(get, path = "/api/v1/cluster/kv/{key}", operation_id = "cluster_kv_get", tag = "cluster", security(("bearer" = [])),
    params(("key" = String, Path, min_length = 1, max_length = 256), super::openapi::ReadHeaders),
    responses((status = 200, body = KvEntry, headers(("X-Panal-Index" = u64, description = "Index this read reflects"))),
        AdminErrors))]
pub async fn kv_get(
    State(s): State<AppState>,
    Admin(_): Admin,
    Path(key): Path<String>,
    meta: CallMeta,
) -> Result<Response> {
    let opts = meta.read;
    let (entry, index) = s
        .replica
        .read(opts.consistency, opts.min_index, panal_actors::services::READ_TIMEOUT, move |db| {
            panal_actors::kv::get(db, &key)
        })
        .await?;
    match entry? {
        Some(e) => Ok(with_index(index, Json(e))),
        None => Err(Error::NotFound("no such key".into())),
    }
}

/// A checksum of the replicated state at an applied index: equal on every replica that
/// applied the same index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct StateChecksum {
    pub applied_index: u64,
    pub checksum: String,
}

#[utoipa::path(get, path = "/api/v1/cluster/checksum", operation_id = "cluster_checksum", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = StateChecksum), AdminErrors))]
pub async fn checksum(State(s): State<AppState>, _: Admin) -> Result<Json<StateChecksum>> {
    let (applied_index, checksum) = s.replica.state_machine().checksum().await?;
    Ok(Json(StateChecksum { applied_index, checksum: checksum.to_string() }))
}

/// A consistent SQLite copy of the replicated state, taken after a linearizable barrier so
/// that it holds every write acknowledged before the request.
#[utoipa::path(get, path = "/api/v1/admin/backup", operation_id = "cluster_backup", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, content_type = "application/vnd.sqlite3", body = Vec<u8>,
        headers(("X-Panal-Index" = u64, description = "Index the backup holds"))), AdminErrors))]
pub async fn backup(State(s): State<AppState>, _: Admin) -> Result<Response> {
    let index =
        s.replica.read_barrier(panal_raft::Consistency::Linearizable, 0, panal_actors::services::READ_TIMEOUT).await?;
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
        panal_actors::cluster::forget_identity(&db)?;
        db.execute_batch("VACUUM")
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(format!("cannot strip secrets from the backup: {e}")))
}

/// A snapshot taken on demand.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotTaken {
    pub snapshot_index: u64,
    pub status: RaftStatus,
}

/// Makes this node snapshot its state now (and purge the log behind it).
#[utoipa::path(post, path = "/api/v1/cluster/snapshot", operation_id = "cluster_snapshot", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = SnapshotTaken), AdminErrors))]
pub async fn snapshot(State(s): State<AppState>, _: Admin) -> Result<Json<SnapshotTaken>> {
    // Nothing applied since the last snapshot: that one is current (asking openraft for
    // another would wait for a snapshot that never comes).
    let current = s.replica.metrics().snapshot.map(|l| l.index);
    let index = match current {
        Some(index) if index >= s.replica.applied_index() => index,
        _ => s.replica.snapshot_now().await?,
    };
    Ok(Json(SnapshotTaken { snapshot_index: index, status: s.replica.status().into() }))
}
