//! The metrics service's operations, answered by the instance on the node being asked
//! about (the cluster view calls each node's own instance through the mesh).

use serde::{Deserialize, Serialize};

use super::system::NodeSample;
use crate::services::{service_ops, Call, Operation};
use crate::Error;

/// The process group of the metrics instances of one node.
pub fn node_group(node: &str) -> String {
    format!("panal.metrics.{node}")
}

/// A sample as served: with the node's name and the time as RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SampleView {
    pub node: String,
    pub taken_at: String,
    #[schema(value_type = Object)]
    pub sample: NodeSample,
}

impl SampleView {
    pub fn new(node: &str, sample: NodeSample) -> Self {
        Self { node: node.into(), taken_at: crate::time::rfc3339(sample.ts_ms), sample }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Start (RFC 3339); default: an hour ago.
    pub from: Option<String>,
    /// End (RFC 3339); default: now.
    pub to: Option<String>,
    /// At most one sample per this many seconds (default 1).
    pub step: Option<u32>,
}

service_ops! {
    /// The metrics service's operations, about the node whose instance serves them.
    MetricsOp => Metrics { Latest, History, After }
}

/// This node's latest sample (none before the first).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latest;

impl Operation for Latest {
    type Output = Option<SampleView>;

    async fn handle(self, call: &Call) -> Result<Option<SampleView>, Error> {
        Ok(call.ctx.hub.latest().map(|s| SampleView::new(&call.ctx.node_name, s)))
    }
}

/// This node's samples over a time range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    pub query: HistoryQuery,
}

impl Operation for History {
    type Output = Vec<SampleView>;

    async fn handle(self, call: &Call) -> Result<Vec<SampleView>, Error> {
        let q = self.query;
        let (from, to) = crate::energy::ops::range(q.from.as_deref(), q.to.as_deref())?;
        let to = to.unwrap_or(i64::MAX);
        let from = from.unwrap_or_else(|| crate::time::wall_ms() - crate::time::HOUR_MS);
        let step_ms = i64::from(q.step.unwrap_or(1).max(1)) * 1000;
        let node = call.ctx.node_name.as_str();
        Ok(call.ctx.hub.range(from, to, step_ms).into_iter().map(|s| SampleView::new(node, s)).collect())
    }
}

/// This node's samples taken after a time (the live stream's poll).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct After {
    pub after_ms: i64,
}

impl Operation for After {
    type Output = Vec<SampleView>;

    async fn handle(self, call: &Call) -> Result<Vec<SampleView>, Error> {
        let node = call.ctx.node_name.as_str();
        Ok(call.ctx.hub.after(self.after_ms).into_iter().map(|s| SampleView::new(node, s)).collect())
    }
}
