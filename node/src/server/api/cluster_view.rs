//! The cluster view (admin): the latest sample of every member, one node's history, and a
//! live Server-Sent Events stream of every node's samples. Each node is asked through its
//! own metrics instance over the actor mesh, with a per-node timeout; a member that does
//! not answer is listed as unreachable, never left out.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::Json;
use panal_actors::metrics::ops::{After, History, HistoryQuery, Latest, SampleView};
use panal_actors::services::{Operation, RequestMeta, ServiceRequest, ServiceResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::extract::{Path, QueryParams};
use super::services::respond;
use super::{Admin, AppState};
use crate::error::{Error, Result};

/// How long the view waits for each node.
const PER_NODE_TIMEOUT: Duration = Duration::from_millis(800);
/// How often a live stream asks every node for new samples.
const STREAM_POLL: Duration = Duration::from_millis(500);

/// One member in `GET /api/v1/metrics/nodes` (the typed client reads the same type).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeMetrics {
    pub id: u64,
    pub name: String,
    pub role: String,
    pub reachable: bool,
    /// Why the node did not answer, when unreachable.
    pub error: Option<String>,
    pub latest: Option<SampleView>,
}

/// Calls `op` on the metrics instance of node `name`.
async fn ask<Op: Operation>(s: &AppState, name: &str, op: Op) -> Result<ServiceResponse> {
    let meta = RequestMeta { request_id: crate::error::current_request_id(), ..Default::default() };
    s.gateway.call_node(name, &ServiceRequest::new(op, meta), PER_NODE_TIMEOUT).await
}

/// Calls `op` on node `name` and decodes its answer.
pub(super) async fn ask_typed<Op>(s: &AppState, name: &str, op: Op) -> Result<Op::Output>
where
    Op: Operation,
    Op::Output: DeserializeOwned,
{
    let resp = ask(s, name, op).await?;
    if resp.status != 200 {
        return Err(Error::Unavailable("peer_unavailable", format!("{name} answered {}", resp.status)));
    }
    serde_json::from_slice(&resp.body)
        .map_err(|e| Error::Unavailable("peer_unavailable", format!("{name} answered an undecodable body: {e}")))
}

/// The latest sample of every member.
#[utoipa::path(get, path = "/api/v1/metrics/nodes", tag = "metrics", security(("bearer" = [])),
    responses((status = 200, body = Vec<NodeMetrics>), super::openapi::ApiErrors))]
pub async fn nodes(State(s): State<AppState>, _: Admin) -> Json<Vec<NodeMetrics>> {
    let members = s.replica.members();
    let rows = futures::future::join_all(members.into_iter().map(|(id, node, role)| {
        let s = s.clone();
        async move {
            let (latest, error) = match ask_typed(&s, &node.name, Latest).await {
                Ok(latest) => (latest, None),
                Err(e) => (None, Some(e.to_string())),
            };
            NodeMetrics {
                id,
                name: node.name.clone(),
                role: format!("{role:?}").to_lowercase(),
                reachable: error.is_none(),
                error,
                latest,
            }
        }
    }))
    .await;
    Json(rows)
}

/// One node's samples over a time range (the last hour is kept), at most one per `step` seconds.
#[utoipa::path(get, path = "/api/v1/metrics/nodes/{name}/history", tag = "metrics", security(("bearer" = [])),
    params(("name" = String, Path), HistoryQuery), responses((status = 200, body = Vec<SampleView>), super::openapi::ApiErrors))]
pub async fn history(
    State(s): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> Result<Response> {
    // A client mistake is answered here, as one 400 naming every bad parameter, rather
    // than reported as a fault of the node asked.
    q.validate()?;
    if !s.replica.members().iter().any(|(_, n, _)| n.name == name) {
        return Err(Error::NotFound(format!("no member named {name:?}")));
    }
    Ok(respond(ask(&s, &name, History { query: q }).await?))
}

/// Live samples of every node as Server-Sent Events (`event: sample`, data = a sample with
/// its node). The event id is the sample's time in milliseconds: a client reconnecting with
/// `Last-Event-ID` receives every node's samples taken after it.
#[utoipa::path(get, path = "/api/v1/metrics/stream", tag = "metrics", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream",
        description = "`event: sample`, `id: <ms>`, `data: <a SampleView with its node, as JSON>`, repeated"),
        super::openapi::ApiErrors))]
pub async fn stream(
    State(s): State<AppState>,
    _: Admin,
    headers: HeaderMap,
) -> Sse<impl futures::Stream<Item = std::result::Result<Event, Infallible>>> {
    let resume: Option<i64> =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        // Per node: the time of the last sample sent. New clients start from now.
        let start = resume.unwrap_or_else(|| panal_actors::time::wall_ms() - 1500);
        let mut sent: BTreeMap<String, i64> = BTreeMap::new();
        let mut every = tokio::time::interval(STREAM_POLL);
        loop {
            every.tick().await;
            let names: Vec<String> = s.replica.members().into_iter().map(|(_, n, _)| n.name).collect();
            let answers = futures::future::join_all(names.iter().map(|name| {
                let after = *sent.get(name).unwrap_or(&start);
                let s = s.clone();
                async move { ask_typed(&s, name, After { after_ms: after }).await }
            }))
            .await;
            let mut fresh: Vec<SampleView> = Vec::new();
            for (name, answer) in names.iter().zip(answers) {
                let Ok(samples) = answer else { continue };
                if let Some(last) = samples.iter().map(|s| s.sample.ts_ms).max() {
                    sent.insert(name.clone(), last);
                }
                fresh.extend(samples);
            }
            fresh.sort_by_key(|v| v.sample.ts_ms);
            for view in fresh {
                let event = Event::default().event("sample").id(view.sample.ts_ms.to_string()).json_data(&view);
                let Ok(event) = event else { continue };
                if tx.send(event).await.is_err() {
                    return; // the client went away
                }
            }
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Sse::new(events).keep_alive(KeepAlive::default())
}
