//! Join protocol on the peer port, in two steps so that the joining node can start its
//! Raft server in between:
//!
//! 1. `POST /join` (authenticated by the join token, answered by any member): checks the
//!    token, reserves a node id through Raft, returns the id and the cluster secret.
//! 2. `POST /join/activate` (authenticated by the peer key): adds the node as a learner,
//!    waits until it has caught up, and promotes it for a manager token. Forwarded to the
//!    leader by the replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use panal_actors::auth::throttle::{retry_after_secs, Throttle, ThrottleConfig, ThrottleKey};
use panal_actors::cluster::{ClusterCommand, JoinRole, JoinToken};
use panal_actors::{Command, Replica, Reply};
use panal_raft::NodeInfo;
use serde::{Deserialize, Serialize};

use crate::error::{error_response, Error};
use panal_actors::services::WRITE_TIMEOUT;

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub node: NodeInfo,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinAdmission {
    pub node_id: u64,
    pub cluster_id: String,
    pub cluster_secret: String,
    pub role: JoinRole,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub node_id: u64,
    pub node: NodeInfo,
    pub voter: bool,
    /// Promote only while the cluster has fewer managers than this (orchestrated
    /// bootstrap: nodes beyond the expected managers stay workers).
    #[serde(default)]
    pub max_managers: Option<usize>,
}

/// Peer-port routes: the replica's Raft RPC plus the join protocol.
pub fn router(replica: Replica) -> Router {
    let admission =
        Admission { replica: replica.clone(), throttle: Arc::new(Throttle::new(ThrottleConfig::default())) };
    let open = Router::new().route("/join", post(admit)).with_state(admission);
    let authenticated =
        replica.authenticated(Router::new().route("/join/activate", post(activate)).with_state(replica.clone()));
    let isolation = replica.peer_client().isolation().clone();
    replica
        .peer_router()
        .merge(open)
        .merge(authenticated)
        // Outermost: an isolated node (chaos drill) refuses all peer traffic, joins included.
        .layer(axum::middleware::from_fn_with_state(isolation, panal_raft::refuse_while_isolated))
}

/// `/join`'s state: wrong join tokens are throttled per client address (per node, like
/// logins), so a token cannot be guessed at network speed.
#[derive(Clone)]
struct Admission {
    replica: Replica,
    throttle: Arc<Throttle>,
}

async fn admit(
    State(admission): State<Admission>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let keys = [ThrottleKey::Client(remote.ip())];
    if let Err(wait) = admission.throttle.check(&keys, Instant::now()) {
        let secs = retry_after_secs(wait);
        tracing::warn!(%remote, "join refused: too many failed attempts from this address");
        let message = format!("too many failed join attempts from this address; try again in {secs} s");
        let mut resp = error_response("too_many_attempts", &message);
        resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from(secs));
        return resp;
    }
    let req: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response("malformed_json", &e.to_string()),
    };
    match admit_inner(&admission.replica, req).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => {
            if matches!(e, Error::Unauthorized(_) | Error::BadRequest("invalid_join_token", _)) {
                admission.throttle.failure(&keys, Instant::now());
            }
            tracing::warn!(%remote, error = %e, "join refused");
            e.into_response()
        }
    }
}

async fn admit_inner(replica: &Replica, req: JoinRequest) -> Result<JoinAdmission, Error> {
    let token: JoinToken = req.token.parse().map_err(|e| Error::BadRequest("invalid_join_token", e))?;
    let config = replica
        .state_machine()
        .read(|db| panal_actors::cluster::config(db))
        .await??
        .ok_or(Error::Actors(panal_actors::Error::NotInitialized))?;
    let role = config.verify(&token).map_err(|r| Error::Unauthorized(r.message))?;
    if req.node.name.is_empty() || req.node.name.len() > 64 {
        return Err(Error::BadRequest("invalid_name", "node name must be 1 to 64 characters".into()));
    }
    if let Some((id, _, _)) = replica.members().into_iter().find(|(_, n, _)| n.name == req.node.name) {
        return Err(Error::Conflict(
            "name_taken",
            format!(
                "a member named {:?} exists (id {id}); remove it first or start with another --name",
                req.node.name
            ),
        ));
    }
    if let Some((id, name, what, addr)) = crate::server::identity::address_owner(0, &req.node, &replica.members()) {
        return Err(Error::Conflict(
            "address_taken",
            format!("member {id} ({name}) already uses {what} address {addr}; give the new node its own addresses"),
        ));
    }
    let out = replica.write(&Command::Cluster(ClusterCommand::AllocateNodeId), None, WRITE_TIMEOUT).await?;
    let Reply::NodeId(node_id) = out.response? else {
        return Err(Error::Internal("unexpected reply to AllocateNodeId".into()));
    };
    tracing::info!(node_id, name = %req.node.name, role = role.as_str(), "admitted a joining node");
    Ok(JoinAdmission { node_id, cluster_id: config.cluster_id, cluster_secret: config.cluster_secret, role })
}

async fn activate(State(replica): State<Replica>, Json(req): Json<ActivateRequest>) -> Response {
    tracing::info!(node_id = req.node_id, node = %req.node, voter = req.voter, "adding node to the membership");
    match replica.add_member(req.node_id, req.node, req.voter, req.max_managers).await {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => Error::Replica(e).into_response(),
    }
}
