//! The node's service runtime: for each service a supervisor and a pool of worker actors
//! that join a cluster-wide process group, plus the bytes-only request/response envelopes
//! the gateway sends them (locally or across the actor mesh).

mod call;
mod supervisor;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

pub use call::{ById, Call, Id, Output, READ_TIMEOUT, WRITE_TIMEOUT};
pub use supervisor::{describe_metrics, start_services, RestartPolicy, ServiceSupervisor, SupervisorMsg};
pub use worker::{ServiceWorker, WorkerMsg};

use crate::auth::Identity;
use crate::Replica;
use panal_raft::Consistency;

/// The application's services. Every node runs all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Auth,
    Catalog,
    Energy,
    Prediction,
    Metrics,
}

impl Service {
    pub const ALL: [Service; 5] =
        [Service::Auth, Service::Catalog, Service::Energy, Service::Prediction, Service::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Catalog => "catalog",
            Service::Energy => "energy",
            Service::Prediction => "prediction",
            Service::Metrics => "metrics",
        }
    }

    /// The process group its workers join, on every node.
    pub fn group(self) -> String {
        format!("panal.svc.{}", self.name())
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Service::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| format!("unknown service {s:?}"))
    }
}

/// A request to a service instance. Serialised to bytes for the mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRequest {
    /// The operation, e.g. `ping`.
    pub op: String,
    /// The caller, verified by the gateway that received the HTTP request.
    pub identity: Option<Identity>,
    /// The operation's input: path and query parameters and the JSON body, merged.
    pub body: serde_json::Value,
    /// For reads: the level, and the client's last seen write index (`X-Panal-Index`).
    #[serde(default)]
    pub consistency: Consistency,
    #[serde(default)]
    pub min_index: u64,
    /// For writes: the client's `Idempotency-Key`, or one the gateway made, so that a
    /// retry on another instance never applies the write twice.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The socket address of the HTTP client, for per-address limits (login throttling).
    #[serde(default)]
    pub client: Option<std::net::IpAddr>,
}

impl ServiceRequest {
    pub fn new(op: &str, identity: Option<Identity>, body: serde_json::Value) -> Self {
        Self {
            op: op.into(),
            identity,
            body,
            consistency: Consistency::Session,
            min_index: 0,
            idempotency_key: None,
            client: None,
        }
    }
}

/// A service instance's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceResponse {
    pub status: u16,
    pub body: serde_json::Value,
    /// Name of the node whose worker served the request.
    pub node: String,
    /// `X-Panal-Index` of a write, if the request wrote.
    pub index: Option<u64>,
    /// Set for text answers (HTML, SVG); `body` then holds the text as a JSON string.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `Retry-After` seconds for 429 and 503 answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
}

/// How a service is doing on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ServiceHealth {
    Running {
        workers: usize,
    },
    /// Past its restart-intensity limit: out of its process group until `retry_at_ms`.
    Failed {
        reason: String,
        retry_at_ms: i64,
    },
}

/// What every worker and supervisor on a node shares.
pub struct ServiceContext {
    pub node_name: String,
    pub replica: Replica,
    /// This node's metrics samples (the metrics service's state).
    pub hub: Arc<crate::metrics::collector::MetricsHub>,
    /// Artificial latency per service (ms), set by the chaos API.
    delays: [AtomicU64; 5],
    health: RwLock<BTreeMap<Service, ServiceHealth>>,
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext").field("node_name", &self.node_name).finish_non_exhaustive()
    }
}

impl ServiceContext {
    pub fn new(node_name: String, replica: Replica) -> Arc<Self> {
        Arc::new(Self {
            node_name,
            replica,
            hub: Default::default(),
            delays: Default::default(),
            health: Default::default(),
        })
    }

    pub fn set_delay_ms(&self, service: Service, ms: u64) {
        self.delays[service.index()].store(ms, Ordering::Relaxed);
    }

    pub fn delay_ms(&self, service: Service) -> u64 {
        self.delays[service.index()].load(Ordering::Relaxed)
    }

    pub fn health(&self) -> BTreeMap<Service, ServiceHealth> {
        self.health.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_health(&self, service: Service, health: ServiceHealth) {
        self.health.write().unwrap_or_else(|p| p.into_inner()).insert(service, health);
    }
}

/// Serialises an envelope for the mesh.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}
