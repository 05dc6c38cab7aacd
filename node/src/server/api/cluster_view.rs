//! The cluster view (admin): the latest sample of every member, one node's history, and a
//! live Server-Sent Events stream of every node's samples. Each node is asked through its
//! own metrics instance over the actor mesh, with a per-node timeout; a member that does
//! not answer is listed as unreachable, never left out.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use panal_actors::metrics::ops::{HistoryQuery, SampleView};
use panal_actors::services::ServiceRequest;
use serde::Serialize;
use serde_json::json;

use super::extract::QueryParams;
use super::{Admin, AppState};
use crate::error::{Error, Result};

/// How long the view waits for each node.
const PER_NODE_TIMEOUT: Duration = Duration::from_millis(800);
/// How often a live stream asks every node for new samples.
const STREAM_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
async fn ask(s: &AppState, name: &str, op: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let req = ServiceRequest::new(op, None, body);
    let resp = s.gateway.call_node(name, &req, PER_NODE_TIMEOUT).await?;
    if resp.status != 200 {
        return Err(Error::Unavailable("peer_unavailable", format!("{name} answered {}", resp.status)));
    }
    Ok(resp.body)
}

/// The latest sample of every member.
#[utoipa::path(get, path = "/api/v1/metrics/nodes", tag = "metrics", security(("bearer" = [])),
    responses((status = 200, body = Vec<NodeMetrics>), super::openapi::ApiErrors))]
pub async fn nodes(State(s): State<AppState>, _: Admin) -> Json<Vec<NodeMetrics>> {
    let members = s.replica.members();
    let rows = futures::future::join_all(members.into_iter().map(|(id, node, role)| {
        let s = s.clone();
        async move {
            let answer = ask(&s, &node.name, "latest", json!({})).await;
            let (latest, error) = match answer {
                Ok(v) => (serde_json::from_value::<Option<SampleView>>(v).ok().flatten(), None),
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
    if !s.replica.members().iter().any(|(_, n, _)| n.name == name) {
        return Err(Error::NotFound(format!("no member named {name:?}")));
    }
    Ok(Json(ask(&s, &name, "history", json!(q)).await?).into_response())
}

/// Live samples of every node as Server-Sent Events (`event: sample`, data = a sample with
/// its node). The event id is the sample's time in milliseconds: a client reconnecting with
/// `Last-Event-ID` receives every node's samples taken after it.
#[utoipa::path(get, path = "/api/v1/metrics/stream", tag = "metrics", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = String), super::openapi::ApiErrors))]
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
                async move { ask(&s, name, "after", json!({ "after_ms": after })).await }
            }))
            .await;
            let mut fresh: Vec<SampleView> = Vec::new();
            for (name, answer) in names.iter().zip(answers) {
                let Ok(v) = answer else { continue };
                let samples: Vec<SampleView> = serde_json::from_value(v).unwrap_or_default();
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
