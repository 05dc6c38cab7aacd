//! Join protocol on the peer port, in two steps so that the joining node can start its
//! Raft server in between:
//!
//! 1. `POST /join` (authenticated by the join token, answered by any member): checks the
//!    token, reserves a node id through Raft, signs the node's certificate request with
//!    the cluster CA, returns the id, the cluster secret and the certificate. With peer
//!    TLS the joining node has checked the member's CA against the token's fingerprint
//!    during the handshake, before sending the token. A member without the current CA's
//!    key (a worker, a manager that has not fetched a rotated CA's key yet) hands the
//!    request to a manager.
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
use panal_actors::cluster::{self, AllocatedNodeId, JoinRole, JoinToken};
use panal_actors::Replica;
use panal_raft::NodeInfo;
use serde::{Deserialize, Serialize};

use crate::error::{error_response, Error};
use crate::server::link::LinkServer;
use crate::server::tls::{self, Issued, NodeTls};
use panal_actors::services::WRITE_TIMEOUT;

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub node: NodeInfo,
    /// The node's certificate signing request (PEM); none from a node with `--peer-tls off`.
    #[serde(default)]
    pub csr_pem: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinAdmission {
    pub node_id: u64,
    pub cluster_id: String,
    pub cluster_secret: String,
    pub role: JoinRole,
    /// The node's certificate and the trust bundle (peer TLS on).
    #[serde(default)]
    pub certificate: Option<Issued>,
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

/// Peer-port routes: the replica's Raft RPC, the join protocol, the service links and
/// (with peer TLS) the CA's routes. With TLS every route but `/join` needs a client
/// certificate from the cluster CA as well as the peer key.
pub fn router(replica: Replica, tls: Option<NodeTls>, links: &LinkServer) -> Router {
    let admission = Admission {
        replica: replica.clone(),
        tls: tls.clone(),
        throttle: Arc::new(Throttle::new(ThrottleConfig::default())),
    };
    let open = Router::new().route("/join", post(admit)).with_state(admission);
    let mut own =
        Router::new().route("/join/activate", post(activate)).with_state(replica.clone()).merge(links.routes());
    if let Some(tls) = &tls {
        own = own.merge(tls::routes(replica.clone(), tls.clone()));
    }
    let mut members_only = replica.peer_router().merge(replica.authenticated(own));
    if tls.is_some() {
        members_only = members_only.layer(axum::middleware::from_fn(tls::require_client_certificate));
    }
    let isolation = replica.peer_client().isolation().clone();
    members_only
        .merge(open)
        // Outermost: an isolated node (chaos drill) refuses all peer traffic, joins included.
        .layer(axum::middleware::from_fn_with_state(isolation, panal_raft::refuse_while_isolated))
        // Refusals in the one error shape, whichever layer answered.
        .layer(axum::middleware::from_fn(crate::server::api::json_errors))
}

/// `/join`'s state: wrong join tokens are throttled per client address (per node, like
/// logins), so a token cannot be guessed at network speed.
#[derive(Clone)]
struct Admission {
    replica: Replica,
    tls: Option<NodeTls>,
    throttle: Arc<Throttle>,
}

async fn admit(
    State(admission): State<Admission>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let keys = [ThrottleKey::Client(remote.ip())];
    let attempt = match admission.throttle.begin(&keys, Instant::now()) {
        Ok(attempt) => attempt,
        Err(wait) => return too_many_join_attempts(remote, wait),
    };
    let req: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response("malformed_json", &e.to_string()),
    };
    let signs_here = match &admission.tls {
        Some(tls) => tls::holds_signing_key(&admission.replica, tls).await,
        None => true,
    };
    let admitted = match signs_here {
        false => relay_to_manager(&admission.replica, &req).await,
        true => admit_inner(&admission.replica, admission.tls.as_ref(), req).await,
    };
    match admitted {
        Ok(a) => Json(a).into_response(),
        Err(e) => {
            if matches!(e, Error::Unauthorized(_) | Error::BadRequest("invalid_join_token", _)) {
                if let Err(wait) = attempt.failed(Instant::now()) {
                    return too_many_join_attempts(remote, wait);
                }
            }
            tracing::warn!(%remote, error = %e, "join refused");
            e.into_response()
        }
    }
}

fn too_many_join_attempts(remote: SocketAddr, wait: std::time::Duration) -> Response {
    let secs = retry_after_secs(wait);
    tracing::warn!(%remote, "join refused: too many failed attempts from this address");
    let message = format!("too many failed join attempts from this address; try again in {secs} s");
    let mut resp = error_response("too_many_attempts", &message);
    resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from(secs));
    resp
}

/// A member without the CA key cannot issue the certificate: a manager admits the node.
async fn relay_to_manager(replica: &Replica, req: &JoinRequest) -> Result<JoinAdmission, Error> {
    let mut last = Error::Unavailable("no_manager", "no manager answered the join".into());
    for addr in tls::manager_addrs(replica) {
        match replica.peer_client().call_json::<_, JoinAdmission>(&addr, "/join", req, WRITE_TIMEOUT).await {
            Ok(admission) => return Ok(admission),
            Err(panal_raft::CallError::Network(why)) if why.contains("HTTP 4") => {
                return Err(Error::Unauthorized(format!("manager {addr} refused the join: {why}")))
            }
            Err(e) => last = Error::Unavailable("no_manager", format!("manager {addr}: {e}")),
        }
    }
    Err(last)
}

async fn admit_inner(replica: &Replica, tls: Option<&NodeTls>, req: JoinRequest) -> Result<JoinAdmission, Error> {
    let token: JoinToken = req.token.parse().map_err(|e| Error::BadRequest("invalid_join_token", e))?;
    let config = replica
        .state_machine()
        .read(|db| panal_actors::cluster::config(db))??
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
    match (tls, &req.csr_pem) {
        (Some(_), None) => {
            return Err(Error::BadRequest(
                "peer_tls_mismatch",
                "this cluster runs with --peer-tls on; start the joining node with --peer-tls on as well".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::BadRequest(
                "peer_tls_mismatch",
                "this cluster runs with --peer-tls off; start the joining node with --peer-tls off as well".into(),
            ))
        }
        _ => {}
    }
    let AllocatedNodeId(node_id) =
        panal_actors::propose(replica, cluster::command::AllocateNodeId, None, WRITE_TIMEOUT).await?.response;
    let certificate = match (tls, &req.csr_pem) {
        (Some(tls), Some(csr)) => Some(tls::sign_locally(replica, tls, csr, node_id).await?),
        _ => None,
    };
    tracing::info!(node_id, name = %req.node.name, role = role.as_str(), "admitted a joining node");
    Ok(JoinAdmission {
        node_id,
        cluster_id: config.cluster_id,
        cluster_secret: config.cluster_secret,
        role,
        certificate,
    })
}

async fn activate(State(replica): State<Replica>, Json(req): Json<ActivateRequest>) -> Response {
    tracing::info!(node_id = req.node_id, node = %req.node, voter = req.voter, "adding node to the membership");
    match replica.add_member(req.node_id, req.node, req.voter, req.max_managers).await {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => Error::Replica(e).into_response(),
    }
}
