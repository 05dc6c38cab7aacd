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

use crate::app::Application;
use crate::network::{SnapshotChunk, MSGPACK, PEER_KEY_HEADER};
use crate::replica::{MembershipChange, Replica};
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
            .with_state(self.clone());
        self.authenticated(routes)
    }

    /// Wraps `routes` so that they require the peer key.
    pub fn authenticated(&self, routes: Router) -> Router {
        routes
            .layer(axum::middleware::from_fn_with_state(self.inner.peer_key.clone(), require_peer_key))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_PEER_BODY))
    }
}

async fn append<A: Application>(State(r): State<Replica<A>>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    encode(&r.raft().append_entries(req).await)
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
    encode(&r.raft().install_snapshot(chunk.into()).await)
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
