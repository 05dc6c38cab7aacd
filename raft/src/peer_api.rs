//! The server side of peer RPC, mounted on the peer port: Raft messages, forwarded writes,
//! read-index requests, membership changes and status. Every request must carry the peer
//! key; anything else is rejected with 401, logged, and never reaches Raft.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::app::Application;
use crate::network::{SnapshotChunk, CLUSTER_HEADER, MSGPACK, PEER_KEY_HEADER, REMOVED_HEADER, TARGET_NODE_HEADER};
use crate::replica::{MembershipChange, RemovedNotice, Replica};
use crate::types::{NodeId, Proposal, TypeConfig};

/// Largest accepted peer request body (a snapshot chunk is 2 MiB before encoding).
const MAX_PEER_BODY: usize = 64 * 1024 * 1024;

fn encode<T: Serialize>(v: &T) -> Response {
    match rmp_serde::to_vec_named(v) {
        Ok(b) => ([(axum::http::header::CONTENT_TYPE, MSGPACK)], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    rmp_serde::from_slice(body).map_err(|e| {
        tracing::warn!(error = %e, "malformed peer request");
        format!("malformed peer request: {e}")
    })
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// Constant-time comparison of secrets, so they cannot be guessed byte by byte from
/// response timings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: rejects requests without the cluster's peer key.
pub async fn require_peer_key(State(key): State<String>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let presented = headers.get(PEER_KEY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !constant_time_eq(presented, &key) {
        // The socket address is the fact; X-Forwarded-For is only what the client claims.
        let remote =
            req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.to_string());
        let forwarded_for = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::warn!(path = %req.uri().path(), remote = %remote.as_deref().unwrap_or("-"), forwarded_for = %forwarded_for, present = !presented.is_empty(), "rejected peer request with a missing or wrong cluster key");
        return (StatusCode::UNAUTHORIZED, "missing or wrong cluster key").into_response();
    }
    next.run(req).await
}

impl<A: Application> Replica<A> {
    /// Routes for the peer port, all behind [`require_peer_key`]. The node may merge more
    /// authenticated routes with [`Replica::authenticated`].
    pub fn peer_router(&self) -> Router {
        let routes = Router::new()
            .route("/raft/append", post(append::<A>))
            .route("/raft/vote", post(vote::<A>))
            .route("/raft/snapshot", post(snapshot::<A>))
            .route("/raft/forward", post(forward::<A>))
            .route("/raft/read-index", post(read_index::<A>))
            .route("/raft/membership", post(membership::<A>))
            .route("/raft/status", post(status::<A>))
            .route("/raft/removed", post(removed::<A>))
            .with_state(self.clone());
        self.authenticated(routes)
    }

    /// Wraps `routes` so that they require the peer key, are addressed to this node of
    /// this cluster, and are refused once this node was removed.
    pub fn authenticated(&self, routes: Router) -> Router {
        routes
            .layer(axum::middleware::from_fn_with_state(self.clone(), refuse_when_removed::<A>))
            .layer(axum::middleware::from_fn_with_state(self.clone(), require_identity::<A>))
            .layer(axum::middleware::from_fn_with_state(self.inner.peer_key.clone(), require_peer_key))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_PEER_BODY))
    }
}

/// Why a peer call was not meant for this node, if it was not: the cluster or the node id
/// it names differs from ours. Absent headers are not checked (older callers, joins).
pub fn identity_mismatch(
    my_cluster: &str,
    my_id: NodeId,
    cluster: Option<&str>,
    target: Option<&str>,
) -> Option<String> {
    if let Some(c) = cluster {
        if !my_cluster.is_empty() && c != my_cluster {
            return Some(format!("this is a node of cluster {my_cluster}, not of cluster {c}"));
        }
    }
    match target.map(|t| t.parse::<NodeId>()) {
        Some(Ok(t)) if t != my_id => Some(format!("this is node {my_id}, not node {t}")),
        Some(Err(_)) => Some(format!("malformed {TARGET_NODE_HEADER} header")),
        _ => None,
    }
}

/// Last time (seconds since the epoch) a misaddressed call was logged, so that a peer
/// retrying in a loop costs one line every few seconds.
static LAST_WRONG_NODE_LOG: AtomicU64 = AtomicU64::new(0);

/// Middleware: refuses calls addressed to another node id or another cluster (409
/// `wrong_node`), which happens when a member's address now belongs to someone else.
async fn require_identity<A: Application>(State(r): State<Replica<A>>, req: Request, next: Next) -> Response {
    let header = |req: &Request, name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let (cluster, target) = (header(&req, CLUSTER_HEADER), header(&req, TARGET_NODE_HEADER));
    let Some(why) = identity_mismatch(&r.inner.cluster_id, r.id(), cluster.as_deref(), target.as_deref()) else {
        return next.run(req).await;
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if LAST_WRONG_NODE_LOG.swap(now, Ordering::Relaxed) + 5 <= now {
        tracing::warn!(path = %req.uri().path(), cluster = ?cluster, target = ?target, reason = %why, "refused a peer call addressed to another node (wrong_node): is another member configured with this node's address?");
    }
    let body = serde_json::json!({ "error": { "code": "wrong_node", "message": why, "request_id": "" } });
    (StatusCode::CONFLICT, [(TARGET_NODE_HEADER, r.id().to_string())], axum::Json(body)).into_response()
}

/// Middleware: a removed node answers no peer call (callers read it as unreachable).
async fn refuse_when_removed<A: Application>(State(r): State<Replica<A>>, req: Request, next: Next) -> Response {
    if r.is_removed() {
        return (StatusCode::SERVICE_UNAVAILABLE, [(REMOVED_HEADER, "1")], "this node was removed from the cluster")
            .into_response();
    }
    next.run(req).await
}

async fn append<A: Application>(State(r): State<Replica<A>>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    let resp = r.raft().append_entries(req).await;
    // Any answer but a higher vote means the sender is the leader this node follows.
    if matches!(&resp, Ok(a) if !matches!(a, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
        r.inner.contact.touch();
    }
    encode(&resp)
}

async fn vote<A: Application>(State(r): State<Replica<A>>, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match decode(&body) {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    encode(&r.raft().vote(req).await)
}

async fn snapshot<A: Application>(State(r): State<Replica<A>>, body: Bytes) -> Response {
    let chunk: SnapshotChunk = match decode(&body) {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    let resp = r.raft().install_snapshot(chunk.into()).await;
    if resp.is_ok() {
        r.inner.contact.touch();
    }
    encode(&resp)
}

async fn forward<A: Application>(State(r): State<Replica<A>>, body: Bytes) -> Response {
    let proposals: Vec<Proposal> = match decode(&body) {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    // Submitted together, so they land in the same batch on this leader.
    encode(&futures::future::join_all(proposals.into_iter().map(|p| r.propose_local(p))).await)
}

async fn read_index<A: Application>(State(r): State<Replica<A>>) -> Response {
    encode(&r.read_index_local().await)
}

async fn membership<A: Application>(State(r): State<Replica<A>>, body: Bytes) -> Response {
    let change: MembershipChange = match decode(&body) {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    encode(&r.change_membership_local(change).await)
}

async fn status<A: Application>(State(r): State<Replica<A>>) -> Response {
    encode(&r.status())
}

async fn removed<A: Application>(State(r): State<Replica<A>>, body: Bytes) -> Response {
    let notice: RemovedNotice = match decode(&body) {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    if notice.node_id != r.id() {
        return bad_request(format!("this is node {}, not node {}", r.id(), notice.node_id));
    }
    r.mark_removed(&format!("{} removed it from the membership", notice.by));
    encode(&())
}

#[cfg(test)]
mod tests {
    use super::identity_mismatch;

    #[test]
    fn calls_naming_another_node_or_cluster_are_refused() {
        assert_eq!(identity_mismatch("c1", 2, Some("c1"), Some("2")), None);
        assert_eq!(identity_mismatch("c1", 2, None, None), None, "unnamed calls (joins) pass");
        assert!(identity_mismatch("c1", 2, Some("c1"), Some("3")).unwrap().contains("not node 3"));
        assert!(identity_mismatch("c1", 2, Some("c9"), Some("2")).unwrap().contains("not of cluster c9"));
        assert!(identity_mismatch("c1", 2, None, Some("two")).is_some());
        assert_eq!(identity_mismatch("", 2, Some("c9"), None), None, "a node without a cluster id checks none");
    }
}
