//! The metrics service's operations, answered by the instance on the node being asked
//! about (the cluster view calls each node's own instance through the mesh).

use serde::{Deserialize, Serialize};

use super::system::NodeSample;
use crate::services::{service_ops, Call, Operation, Service, ServiceHealth};
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
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End (RFC 3339, after `from`); default: now.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// At most one sample per this many seconds (1 to 3600, default 1).
    #[param(minimum = 1, maximum = 3600)]
    pub step: Option<u32>,
}

/// Longest step of a history: the hour that is kept.
pub const MAX_STEP_SECONDS: u32 = 3600;

impl HistoryQuery {
    /// Every bad parameter at once: `from`/`to` (RFC 3339, `to` after `from`) and `step`.
    pub fn validate(&self) -> Result<(), Error> {
        let mut fields = match crate::energy::ops::range(self.from.as_deref(), self.to.as_deref()) {
            Ok(_) => Vec::new(),
            Err(Error::Validation(fields)) => fields,
            Err(other) => return Err(other),
        };
        if self.step.is_some_and(|s| !(1..=MAX_STEP_SECONDS).contains(&s)) {
            fields.push(crate::error::FieldError {
                field: "step".into(),
                message: format!("must be 1 to {MAX_STEP_SECONDS} seconds"),
            });
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(fields))
        }
    }
}

service_ops! {
    /// The metrics service's operations, about the node whose instance serves them.
    MetricsOp => Metrics { Latest, History, After, Health }
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
        q.validate()?;
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

/// How each service's supervisor on this node is doing (what this node's `/ready` lists),
/// for the cluster view's per-node health.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Health;

impl Operation for Health {
    type Output = std::collections::BTreeMap<Service, ServiceHealth>;

    async fn handle(self, call: &Call) -> Result<Self::Output, Error> {
        Ok(call.ctx.health())
    }
}
