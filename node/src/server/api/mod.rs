//! The public HTTP API on the api port: routing, the per-request middleware (request id,
//! `X-Panal-Node`), request extractors that turn bad input into 4xx errors, and the
//! handlers, which stay thin: parse → call the replica → map the result.

mod auth;
mod catalog;
mod cluster;
mod cluster_view;
pub mod cors;
mod energy;
mod extract;
pub mod openapi;
mod services;
mod services_admin;
mod session;
mod ui;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use panal_actors::Replica;

use crate::error::{error_response, REQUEST_ID};

pub use cluster::{CaInfo, ClusterStatus, JoinTokens, LeaderRef, Member, NodeRow, RaftStatus, StateChecksum};
pub use cluster_view::NodeMetrics;
pub use extract::Admin;
pub use services_admin::{NodeSettingsView, NodeUpdate, ServiceUpdate, ServiceView};

/// Largest accepted API request body.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Largest accepted request header section, and most header fields: beyond them, a 431 in
/// the one error shape (hyper's own limits, far above, answer without a body).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADER_FIELDS: usize = 64;

/// What every handler can reach: one shared [`ApiContext`]. Axum clones the state for
/// every request (and every layer that takes it), so it is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<ApiContext>);

impl AppState {
    pub fn new(context: ApiContext) -> Self {
        Self(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.0
    }
}

/// The node's handles the API routes use.
pub struct ApiContext {
    pub replica: Replica,
    pub node_name: Arc<str>,
    /// Set once this node knows a leader and has caught up with the commit index the
    /// leader reported after start-up.
    pub caught_up: Arc<AtomicBool>,
    /// This node started as a new member (its join not yet complete): its replica holds
    /// nothing of the cluster until it has caught up, so it serves nothing before.
    pub joining: bool,
    /// When the last catch-up for a token signed with an unknown key began (see
    /// `extract::catch_up_for_unknown_key`); the lock makes them one at a time.
    pub key_barrier: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
    /// JWT signing keys by key id, loaded from the replica on first use. Keys never
    /// change once created, so entries never go stale.
    pub jwt_keys:
        Arc<std::sync::RwLock<std::collections::HashMap<String, (panal_actors::auth::SigningKey, std::time::Instant)>>>,
    /// Bearer tokens verified and found not revoked, at the applied index they were
    /// checked at (see `extract::verify`).
    pub tokens: Arc<panal_actors::services::answers::AtIndex<String, panal_actors::auth::Identity>>,
    pub gateway: Arc<crate::server::gateway::Gateway>,
    pub services: Arc<panal_actors::services::ServiceContext>,
    /// Whether the chaos hooks answer (`--chaos`).
    pub chaos: bool,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// For forwarding admin requests to other nodes.
    pub http: reqwest::Client,
    /// This node's peer TLS (`--peer-tls on`), for `GET /api/v1/cluster/ca` and its rotation.
    pub tls: Option<crate::server::tls::NodeTls>,
}

/// Every documented route and the OpenAPI document describing them, built together so
/// that the document lists exactly the routes served: services, the metrics view, cluster
/// administration and the chaos hooks.
pub fn service_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::{Modify, OpenApi};
    use utoipa_axum::routes;
    let (router, mut spec) = utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::rotate_key))
        .routes(routes!(catalog::create_book, catalog::list_books))
        .routes(routes!(catalog::get_book, catalog::update_book, catalog::delete_book))
        .routes(routes!(catalog::create_order, catalog::list_orders))
        .routes(routes!(catalog::list_sales))
        .routes(routes!(catalog::get_order))
        .routes(routes!(catalog::pay_order))
        .routes(routes!(catalog::ship_order))
        .routes(routes!(catalog::invoice))
        .routes(routes!(energy::create_device, energy::list_devices))
        .routes(routes!(energy::get_device, energy::update_device, energy::delete_device))
        .routes(routes!(energy::add_readings, energy::readings, energy::delete_readings))
        .routes(routes!(energy::summary))
        .routes(routes!(energy::upload_battery))
        .routes(routes!(energy::battery_summary))
        .routes(routes!(energy::battery_chart))
        .routes(routes!(energy::device_forecast))
        .routes(routes!(energy::user_forecast))
        .routes(routes!(cluster_view::nodes))
        .routes(routes!(cluster_view::history))
        .routes(routes!(cluster_view::stream))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::nodes))
        .routes(routes!(cluster::remove))
        .routes(routes!(cluster::promote))
        .routes(routes!(cluster::demote))
        .routes(routes!(cluster::tokens))
        .routes(routes!(cluster::ca))
        .routes(routes!(cluster::ca_rotate))
        .routes(routes!(cluster::rotate_token))
        .routes(routes!(cluster::kv_put, cluster::kv_get))
        .routes(routes!(cluster::checksum))
        .routes(routes!(cluster::snapshot))
        .routes(routes!(cluster::backup))
        .routes(routes!(cluster::advance_clock))
        .routes(routes!(services::chaos_panic))
        .routes(routes!(services::chaos_delay))
        .routes(routes!(services::chaos_crash))
        .routes(routes!(services::chaos_isolate))
        .routes(routes!(services::ping))
        .routes(routes!(services_admin::list_services))
        .routes(routes!(services_admin::get_service, services_admin::update_service))
        .routes(routes!(services_admin::service_tasks))
        .routes(routes!(services_admin::update_node))
        .split_for_parts();
    openapi::Contract.modify(&mut spec);
    (router, spec)
}

/// The OpenAPI document as served. Built on the first request, not at start: it is about
/// half a megabyte that most nodes are never asked for. Then every answer shares it rather
/// than copying it (200 clients that stop reading it: +3.1 MB RSS, +5.8 MB with a copy each).
fn openapi_document() -> axum::body::Bytes {
    static DOCUMENT: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| service_routes().1.to_json().unwrap_or_default().into()).clone()
}

pub fn router(state: AppState) -> Router {
    let node_header = HeaderValue::from_str(&state.node_name).unwrap_or(HeaderValue::from_static("unknown"));
    let gate = Gate { replica: state.replica.clone(), caught_up: state.caught_up.clone(), joining: state.joining };
    let (services, _) = service_routes();
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route(
            "/openapi.json",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_document()) }),
        )
        .merge(services)
        .merge(ui::routes())
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state.services.hub.clone(), record_metrics))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_limits))
        .layer(axum::middleware::from_fn_with_state(gate, refuse_unless_serving))
        .layer(axum::middleware::from_fn_with_state(node_header, per_request))
        .with_state(state)
}

/// Oversized bodies up to this size are read and dropped before the 413 is sent (larger
/// ones are answered at once and the connection closed).
const MAX_DRAINED_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Longest time spent dropping an oversized body.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses oversized header sections (431) and bodies announced larger than the limit
/// (413, before reading a byte of them: a client that sent `Expect: 100-continue` never
/// has to send it), in the one error shape.
async fn request_limits(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let announced =
        headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if let Some(length) = announced.filter(|n| *n > MAX_BODY_BYTES as u64) {
        let expects_continue =
            headers.get(axum::http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue && length <= MAX_DRAINED_BODY_BYTES {
            // A client that sends its whole body before reading the answer would otherwise
            // see a reset connection instead of the 413: read and drop a moderately large
            // body (chunk by chunk, never kept, within DRAIN_TIMEOUT).
            use futures::StreamExt;
            let mut body = req.into_body().into_data_stream();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while let Some(Ok(_)) = body.next().await {} }).await;
        }
        let mut resp =
            error_response("payload_too_large", &format!("the request body is larger than {MAX_BODY_BYTES} bytes"));
        resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADER_FIELDS || bytes > MAX_HEADER_BYTES {
        return error_response(
            "headers_too_large",
            &format!("send at most {MAX_HEADER_FIELDS} header fields and {MAX_HEADER_BYTES} bytes of headers"),
        );
    }
    next.run(req).await
}

/// The safety net of the one error shape: an error that some layer or extractor answered
/// in plain text (axum's own rejections) is rewritten as a JSON error with the code of its
/// status, keeping the text as the message. Errors already in JSON pass untouched. The
/// peer port is wrapped in it too (the Raft crate's refusals are plain text).
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let code = match status.as_u16() {
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        431 => "headers_too_large",
        503 => "service_unavailable",
        s if s < 500 => "invalid_body",
        _ => "internal",
    };
    let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
    let text = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let mut out =
        error_response(code, if message.is_empty() { status.canonical_reason().unwrap_or("error") } else { &message });
    *out.status_mut() = status;
    if let Some(allow) = allow {
        out.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    out
}

/// Gives each request an id (kept in a task-local for error bodies) and stamps the
/// response with the node's name and the id.
async fn per_request(State(node): State<HeaderValue>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(String::from)
        .unwrap_or_else(|| crate::server::identity::random_hex(8));
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    // A response served by another node's worker already names that node.
    resp.headers_mut().entry("x-panal-node").or_insert(node);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// HELP text of every series this binary publishes (the `# HELP` lines of `/metrics`).
/// Call once the recorder is installed: descriptions given before are lost.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "panal_http_requests_total",
        "HTTP requests answered on the API port, by route pattern and status."
    );
    describe_histogram!(
        "panal_http_request_duration_seconds",
        "Time to answer an HTTP request on the API port, by route pattern."
    );
    describe_gauge!("panal_raft_term", "Current Raft term of this node.");
    describe_gauge!("panal_raft_leader_id", "Node id of the Raft leader this node knows (0: none).");
    describe_gauge!("panal_raft_is_leader", "1 if this node is the Raft leader, else 0.");
    describe_gauge!("panal_raft_last_log_index", "Index of the last entry in this node's Raft log.");
    describe_gauge!(
        "panal_raft_commit_index",
        "Highest Raft log index stored on a quorum (on followers: their applied index)."
    );
    describe_gauge!("panal_raft_applied_index", "Highest Raft log index applied to this node's state.");
    describe_gauge!(
        "panal_raft_replication_lag_entries",
        "Log entries a follower is behind the leader (published by the leader)."
    );
    describe_gauge!("panal_node_info", "1 for this node's name, current role and version; 0 for its other roles.");
    crate::server::gateway::describe_metrics();
    crate::server::reconciler::describe_metrics();
    panal_actors::metrics::describe();
}

/// Counts requests by route pattern (not path: label values stay bounded) and status, and
/// in the node's samples (request rate and latency of the console's live metrics).
async fn record_metrics(
    State(hub): State<Arc<panal_actors::metrics::collector::MetricsHub>>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route =
        req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("panal_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
    let took = started.elapsed();
    metrics::histogram!("panal_http_request_duration_seconds", "route" => route).record(took.as_secs_f64());
    hub.requests.record(took);
    resp
}

/// Commit index as the leader knows it: the highest index stored on a quorum of managers.
/// Pure, so it is unit-tested. `matched` holds each manager's last stored index.
pub fn quorum_index(mut matched: Vec<u64>) -> u64 {
    if matched.is_empty() {
        return 0;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[matched.len() / 2]
}

/// Sets the Raft and node gauges from the replica's current metrics (at scrape time).
fn record_raft_metrics(s: &AppState) {
    use metrics::gauge;
    let m = s.replica.metrics();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let last_log = m.last_log_index.unwrap_or(0);
    let members = s.replica.members();
    let name_of = |id: u64| members.iter().find(|(m, _, _)| *m == id).map(|(_, n, _)| n.name.clone());
    gauge!("panal_raft_term").set(m.current_term as f64);
    gauge!("panal_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
    gauge!("panal_raft_is_leader").set(if m.current_leader == Some(m.id) { 1.0 } else { 0.0 });
    gauge!("panal_raft_last_log_index").set(last_log as f64);
    gauge!("panal_raft_applied_index").set(applied as f64);
    // Followers do not learn the commit index from openraft's metrics: they report what
    // they applied, which trails it by at most one heartbeat.
    let commit = match &m.replication {
        Some(rep) => {
            let managers = members.iter().filter(|(_, _, r)| *r == panal_raft::MemberRole::Manager);
            quorum_index(
                managers
                    .map(|(id, _, _)| {
                        if *id == m.id {
                            last_log
                        } else {
                            rep.get(id).copied().flatten().map(|l| l.index).unwrap_or(0)
                        }
                    })
                    .collect(),
            )
        }
        None => applied,
    };
    gauge!("panal_raft_commit_index").set(commit as f64);
    if let Some(rep) = &m.replication {
        for (id, matched) in rep {
            if *id == m.id {
                continue;
            }
            let lag = last_log.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
            let follower = name_of(*id).unwrap_or_else(|| id.to_string());
            gauge!("panal_raft_replication_lag_entries", "follower" => follower).set(lag as f64);
        }
    }
    let role = members
        .iter()
        .find(|(id, _, _)| *id == m.id)
        .map(|(_, _, r)| if *r == panal_raft::MemberRole::Manager { "manager" } else { "worker" })
        .unwrap_or("joining");
    for r in ["manager", "worker", "joining"] {
        let v = if r == role { 1.0 } else { 0.0 };
        gauge!("panal_node_info", "name" => s.node_name.to_string(), "role" => r, "version" => env!("CARGO_PKG_VERSION")).set(v);
    }
}

async fn prometheus(State(s): State<AppState>) -> Response {
    record_raft_metrics(&s);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn not_found() -> Response {
    error_response("not_found", "no such route")
}

/// 405; the router adds the `Allow` header.
async fn method_not_allowed() -> Response {
    error_response("method_not_allowed", "this route does not accept that method")
}

/// `/health`'s answer: the process is up (nothing more is checked).
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    node: Arc<str>,
}

async fn health(State(s): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok", node: s.node_name.clone() })
}

/// `/ready`'s answer when the node may serve.
#[derive(serde::Serialize)]
struct Readiness {
    ready: bool,
    node: Arc<str>,
    /// `leader` or `follower`.
    role: &'static str,
    leader: Option<u64>,
    caught_up: bool,
    applied_index: u64,
    services: std::collections::BTreeMap<panal_actors::services::Service, panal_actors::services::ServiceHealth>,
    mesh: crate::server::mesh::MeshReadiness,
}

/// What decides whether the API serves at all.
#[derive(Clone)]
struct Gate {
    replica: Replica,
    caught_up: Arc<AtomicBool>,
    joining: bool,
}

/// A removed node, and a joining node that has not caught up yet, answer nothing but
/// `/health`, `/ready` and `/metrics`: anything else they served would be stale (a removed
/// node no longer receives the log; a joining one holds none of it yet, not even the users
/// and signing keys, so it would refuse valid tokens and passwords with 401).
async fn refuse_unless_serving(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/health" | "/ready" | "/metrics") {
        return next.run(req).await;
    }
    if gate.replica.is_removed() {
        return error_response(
            "node_removed",
            "this node was removed from the cluster: send requests to another member",
        );
    }
    if gate.joining && !gate.caught_up.load(Ordering::Acquire) {
        return error_response(
            "catching_up",
            "this node is joining the cluster and has not caught up yet: retry, or send requests to another member",
        );
    }
    next.run(req).await
}

/// `/ready`: 200 once this node may serve — a member, with a leader (holding its lease, or
/// heard from within the election timeout), caught up, and its actor mesh connected to
/// every reachable member (bounded wait). The body lists per-service health.
async fn ready(State(s): State<AppState>) -> Response {
    use panal_raft::Lease;
    let unavailable = |code: &str, message: &str| error_response(code, message);
    if s.replica.is_removed() {
        return unavailable("removed", "this node was removed from the cluster and serves nothing");
    }
    let window = s.replica.lease_window().as_millis();
    let lease = s.replica.lease();
    let role = match lease {
        Lease::Leader => "leader",
        Lease::Follower(_) => "follower",
        Lease::LeaderWithoutQuorum => {
            return unavailable(
                "no_quorum",
                &format!("this node leads but no quorum acknowledged it within the election timeout ({window} ms)"),
            )
        }
        Lease::NoLeader => {
            return unavailable(
                "no_leader",
                &format!("this node has known no leader (or not heard from it) for over {window} ms"),
            )
        }
    };
    let caught_up = s.caught_up.load(Ordering::Acquire);
    if !caught_up {
        return unavailable("catching_up", "this node is still catching up with the leader");
    }
    let mesh = crate::server::mesh::readiness(&s.replica).await;
    if !mesh.ready {
        return unavailable(
            "mesh_connecting",
            &format!("the actor mesh is still connecting to {}", mesh.connecting.join(", ")),
        );
    }
    let body = Readiness {
        ready: true,
        node: s.node_name.clone(),
        role,
        leader: lease.leader(s.replica.id()),
        caught_up,
        applied_index: s.replica.applied_index(),
        services: s.services.health(),
        mesh,
    };
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    /// Remembers the names given a description.
    #[derive(Default)]
    struct Described(Mutex<BTreeSet<String>>);

    impl Described {
        fn add(&self, key: KeyName) {
            self.0.lock().unwrap().insert(key.as_str().to_string());
        }
    }

    impl Recorder for Described {
        fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(key);
        }
        fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(key);
        }
        fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(key);
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Names passed to `counter!`, `gauge!` and `histogram!` in the workspace's sources.
    fn published_names() -> BTreeSet<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = vec![root.join("node/src"), root.join("actors/src"), root.join("raft/src")];
        let mut names = BTreeSet::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for mac in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(mac) {
                        let rest = text[at + mac.len()..].trim_start();
                        let name = rest.strip_prefix('"').and_then(|r| r.split('"').next()).unwrap_or_default();
                        if name.starts_with("panal_") {
                            names.insert(name.to_string());
                        }
                    }
                }
            }
        }
        names
    }

    #[test]
    fn every_published_series_has_help_text() {
        let described = Described::default();
        metrics::with_local_recorder(&described, super::describe_metrics);
        let described = described.0.into_inner().unwrap();
        let published = published_names();
        assert!(published.len() >= 30, "the source scan found too few metrics: {published:?}");
        let missing: Vec<_> = published.difference(&described).collect();
        assert!(missing.is_empty(), "no describe_*! for {missing:?}");
        let stale: Vec<_> = described.difference(&published).collect();
        assert!(stale.is_empty(), "described but never published: {stale:?}");
    }

    #[test]
    fn the_commit_index_is_the_highest_index_a_quorum_stored() {
        assert_eq!(super::quorum_index(vec![10, 7, 3]), 7);
        assert_eq!(super::quorum_index(vec![10, 3]), 3);
        assert_eq!(super::quorum_index(vec![5]), 5);
        assert_eq!(super::quorum_index(vec![9, 9, 1, 1, 8]), 8);
        assert_eq!(super::quorum_index(vec![]), 0);
    }
}
