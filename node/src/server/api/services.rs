//! Service routes through the gateway, and the chaos hooks used by drills.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use panal_actors::services::{Operation, Ping, RequestMeta, Service, ServiceRequest, ServiceResponse, WorkerMsg};
use serde::{Deserialize, Serialize};

use super::extract::{CallMeta, Caller, JsonBody, Path};
use super::openapi::ApiErrors;
use super::{Admin, AppState};
use crate::error::{Error, Result};

/// Sends one typed operation to an instance of its service (wherever the balancing
/// policy picks) and maps its answer to HTTP. Every route of every service goes through here.
pub async fn call<Op: Operation>(
    s: &AppState,
    caller: impl Into<Option<Caller>>,
    meta: CallMeta,
    op: Op,
) -> Result<Response> {
    let meta = RequestMeta {
        identity: caller.into().map(|c| c.0),
        consistency: meta.read.consistency,
        min_index: meta.read.min_index,
        idempotency_key: Some(meta.idempotency_key),
        request_id: crate::error::current_request_id(),
        client: meta.client,
    };
    // Wait for the client's index here, on this request's own task: never in a service
    // worker's slot (an index the cluster never reached is refused at once).
    if meta.min_index > 0 {
        s.replica.wait_applied(meta.min_index, panal_actors::services::READ_TIMEOUT).await?;
    }
    Ok(respond(s.gateway.call(&ServiceRequest::new(op, meta)).await?))
}

/// Turns a service answer into the HTTP response, naming the node that served it. The
/// body was encoded once by the worker and is passed on as it is.
pub fn respond(resp: ServiceResponse) -> Response {
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = HeaderValue::from_str(&resp.content_type).unwrap_or(HeaderValue::from_static("text/plain"));
    let mut out = (status, [(header::CONTENT_TYPE, content_type)], resp.body).into_response();
    if let Ok(v) = HeaderValue::from_str(&resp.node) {
        out.headers_mut().insert("x-panal-node", v);
    }
    if let Some(index) = resp.index {
        out.headers_mut().insert("x-panal-index", HeaderValue::from(index));
    }
    if let Some(seconds) = resp.retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    out
}

fn parse_service(name: &str) -> Result<Service> {
    name.parse().map_err(|e: String| Error::NotFound(e))
}

/// `GET /api/v1/{service}/ping`: answered by a worker of the service somewhere in the
/// cluster. The caller's verified identity, if any, travels with the request.
/// Only an authenticated caller is told the number of accounts.
#[utoipa::path(get, path = "/api/v1/{service}/ping", operation_id = "service_ping", tag = "cluster",
    params(("service" = String, Path, pattern = "^(auth|catalog|energy|prediction|metrics)$")),
    responses((status = 200, description = "The serving instance's answer", body = Object), ApiErrors))]
pub async fn ping(
    State(s): State<AppState>,
    Path(service): Path<String>,
    caller: Option<Caller>,
    meta: CallMeta,
) -> Result<Response> {
    let service = parse_service(&service)?;
    call(&s, caller, meta, Ping { service }).await
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PanicRequest {
    #[schema(pattern = "^(auth|catalog|energy|prediction|metrics)$")]
    service: String,
    node: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayRequest {
    #[schema(pattern = "^(auth|catalog|energy|prediction|metrics)$")]
    service: String,
    #[schema(maximum = 60000)]
    ms: u64,
    node: Option<String>,
}

/// Chaos answers: what was done, on which node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Panicked {
    node: String,
    service: &'static str,
    /// Id of the worker that panicked.
    panicked: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delayed {
    node: String,
    service: &'static str,
    delay_ms: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Crashing {
    node: String,
    crashing: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Isolated {
    node: String,
    isolated_for_seconds: u64,
}

fn chaos_enabled(s: &AppState) -> Result<()> {
    if s.chaos {
        Ok(())
    } else {
        Err(Error::NotFound("chaos hooks are disabled on this node (start it with --chaos)".into()))
    }
}

/// Sends a chaos request to the node it names, when that is not this node.
async fn forward_chaos(
    s: &AppState,
    node: &str,
    path: &str,
    headers: &HeaderMap,
    body: &impl Serialize,
) -> Result<Option<Response>> {
    if node == &*s.node_name {
        return Ok(None);
    }
    let target = s
        .replica
        .members()
        .into_iter()
        .find(|(_, n, _)| n.name == node)
        .ok_or_else(|| Error::NotFound(format!("no member named {node:?}")))?;
    let mut req = s.http.post(format!("http://{}{path}", target.1.api_addr)).json(body);
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        req = req.header(axum::http::header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.map_err(|e| Error::Unavailable("peer_unavailable", format!("{node}: {e}")))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = resp.bytes().await.map_err(|e| Error::Unavailable("peer_unavailable", format!("{node}: {e}")))?;
    let mut out = (status, body).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(Some(out))
}

/// `POST /api/v1/admin/chaos/panic`: one worker of the service panics.
#[utoipa::path(post, path = "/api/v1/admin/chaos/panic", operation_id = "chaos_panic", tag = "chaos",
    security(("bearer" = [])), request_body = PanicRequest, responses((status = 200, body = Panicked), ApiErrors))]
pub async fn chaos_panic(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PanicRequest>,
) -> Result<Response> {
    chaos_enabled(&s)?;
    let service = parse_service(&req.service).map_err(|e| Error::BadRequest("invalid_service", e.to_string()))?;
    if let Some(node) = &req.node {
        if let Some(resp) = forward_chaos(&s, node, "/api/v1/admin/chaos/panic", &headers, &req).await? {
            return Ok(resp);
        }
    }
    let worker = ractor::pg::get_local_members(&service.group()).into_iter().next().ok_or_else(|| {
        Error::Unavailable("service_unavailable", format!("no {} worker on this node", service.name()))
    })?;
    tracing::warn!(by = %who.username, service = service.name(), "chaos: making a worker panic");
    worker
        .send_message(WorkerMsg::Panic(format!("requested by {}", who.username)))
        .map_err(|e| Error::Internal(e.to_string()))?;
    // Answer once the worker is gone from its group, so a second request right after this
    // one panics a different worker instead of the one still dying.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ractor::pg::get_local_members(&service.group()).iter().any(|c| c.get_id() == worker.get_id()) {
        if std::time::Instant::now() > deadline {
            return Err(Error::GatewayTimeout("the worker did not stop within 5 s of its panic".into()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let panicked = worker.get_id().to_string();
    Ok(Json(Panicked { node: s.node_name.to_string(), service: service.name(), panicked }).into_response())
}

/// `POST /api/v1/admin/chaos/delay`: this node's instances of the service answer `ms` later.
#[utoipa::path(post, path = "/api/v1/admin/chaos/delay", operation_id = "chaos_delay", tag = "chaos",
    security(("bearer" = [])), request_body = DelayRequest, responses((status = 200, body = Delayed), ApiErrors))]
pub async fn chaos_delay(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DelayRequest>,
) -> Result<Response> {
    chaos_enabled(&s)?;
    let service = parse_service(&req.service).map_err(|e| Error::BadRequest("invalid_service", e.to_string()))?;
    if req.ms > 60_000 {
        return Err(Error::BadRequest("invalid_body", "ms must be at most 60000".into()));
    }
    if let Some(node) = &req.node {
        if let Some(resp) = forward_chaos(&s, node, "/api/v1/admin/chaos/delay", &headers, &req).await? {
            return Ok(resp);
        }
    }
    tracing::warn!(by = %who.username, service = service.name(), ms = req.ms, "chaos: delaying instances");
    s.services.set_delay_ms(service, req.ms);
    Ok(Json(Delayed { node: s.node_name.to_string(), service: service.name(), delay_ms: req.ms }).into_response())
}

/// How long a crashing node waits before exiting, so that its 202 reaches the caller.
const CRASH_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// `POST /api/v1/admin/chaos/crash`: answers 202, then the process exits at once, without
/// shutting anything down (like SIGKILL: no graceful stop, no flush beyond what is already
/// durable). For clusters whose nodes are restarted by systemd or Swarm.
#[utoipa::path(post, path = "/api/v1/admin/chaos/crash", operation_id = "chaos_crash", tag = "chaos",
    security(("bearer" = [])), responses((status = 202, body = Crashing), ApiErrors))]
pub async fn chaos_crash(State(s): State<AppState>, Admin(who): Admin) -> Result<Response> {
    chaos_enabled(&s)?;
    tracing::warn!(by = %who.username, "chaos: crashing this node");
    tokio::spawn(async {
        tokio::time::sleep(CRASH_AFTER).await;
        // A non-zero status, so that a supervisor with restart-on-failure restarts it.
        std::process::exit(137);
    });
    Ok((StatusCode::ACCEPTED, Json(Crashing { node: s.node_name.to_string(), crashing: true })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IsolateRequest {
    #[schema(minimum = 1, maximum = 300)]
    seconds: u64,
}

/// Longest isolation one request may ask for.
const MAX_ISOLATE_SECONDS: u64 = 300;

/// `POST /api/v1/admin/chaos/isolate {"seconds": N}`: for N seconds this node drops all
/// peer traffic (Raft, forwarding, joins; both directions) and closes its actor mesh, then
/// heals by itself. A partition without root: the majority elects a leader and goes on.
#[utoipa::path(post, path = "/api/v1/admin/chaos/isolate", operation_id = "chaos_isolate", tag = "chaos",
    security(("bearer" = [])), request_body = IsolateRequest, responses((status = 200, body = Isolated), ApiErrors))]
pub async fn chaos_isolate(
    State(s): State<AppState>,
    Admin(who): Admin,
    JsonBody(req): JsonBody<IsolateRequest>,
) -> Result<Response> {
    chaos_enabled(&s)?;
    if !(1..=MAX_ISOLATE_SECONDS).contains(&req.seconds) {
        return Err(Error::BadRequest("invalid_body", format!("seconds must be 1 to {MAX_ISOLATE_SECONDS}")));
    }
    tracing::warn!(by = %who.username, seconds = req.seconds, "chaos: isolating this node from its peers");
    s.replica.peer_client().isolation().isolate_for(std::time::Duration::from_secs(req.seconds));
    Ok(Json(Isolated { node: s.node_name.to_string(), isolated_for_seconds: req.seconds }).into_response())
}
