//! The node's service runtime: for each service a supervisor and a pool of worker actors
//! that join a cluster-wide process group, plus the bytes-only request/response envelopes
//! the gateway sends them (locally or across the actor mesh).

pub mod answers;
mod call;
mod op;
mod supervisor;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use serde::{Deserialize, Serialize};

pub use call::{Answer, Call, READ_TIMEOUT, WRITE_TIMEOUT};
pub(crate) use op::service_ops;
pub use op::{Body, Deleted, Operation, Ping, PingReply, ServiceCall};
pub use supervisor::{
    describe_metrics, start_services, NodeSupervisorMsg, RestartPolicy, ServiceSupervisor, SupervisorMsg, RETIRE_GRACE,
};
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
}

impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Service::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| format!("unknown service {s:?}"))
    }
}

/// What travels with every operation besides its input: who asks, how a read must be
/// served, and what makes a write safe to retry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestMeta {
    /// The caller, verified by the gateway that received the HTTP request.
    pub identity: Option<Identity>,
    /// For reads: the level, and the client's last seen write index (`X-Panal-Index`).
    pub consistency: Consistency,
    pub min_index: u64,
    /// For writes: the client's `Idempotency-Key`, or one the gateway made, so that a
    /// retry on another instance never applies the write twice.
    pub idempotency_key: Option<String>,
    /// The gateway's request id, written into error bodies by the worker.
    pub request_id: String,
    /// The client's socket address, as the gateway saw it.
    pub client: Option<std::net::SocketAddr>,
}

/// A request to a service instance: one typed operation and its metadata. Sent as
/// MessagePack, locally or across the mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRequest {
    pub call: ServiceCall,
    pub meta: RequestMeta,
}

impl ServiceRequest {
    pub fn new(call: impl Into<ServiceCall>, meta: RequestMeta) -> Self {
        Self { call: call.into(), meta }
    }
}

/// A service instance's answer. The body is already encoded (JSON, or text for HTML and
/// SVG) so the gateway passes it to HTTP as it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceResponse {
    pub status: u16,
    /// `Content-Type` of `body`.
    pub content_type: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Name of the node whose worker served the request.
    pub node: String,
    /// `X-Panal-Index` of a write, if the request wrote.
    pub index: Option<u64>,
    /// `Retry-After` (seconds) of a 503.
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
    /// Artificial latency per service (ms), set by the chaos API; absent means none.
    delays: RwLock<HashMap<Service, u64>>,
    health: RwLock<BTreeMap<Service, ServiceHealth>>,
    /// This node's live workers and the pool slot each fills, so that a gateway on this
    /// node serves a call to one of them in its own task (see [`ServiceContext::serve_here`]).
    slots: RwLock<HashMap<ractor::ActorId, usize>>,
    /// Answers of cacheable reads at the current applied index.
    answers: answers::AnswerCache,
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
            slots: Default::default(),
            answers: Default::default(),
        })
    }

    /// The pool slot of `worker` when it is a live worker of this node.
    pub fn local_slot(&self, worker: ractor::ActorId) -> Option<usize> {
        self.slots.read().unwrap_or_else(|p| p.into_inner()).get(&worker).copied()
    }

    pub(crate) fn set_slot(&self, worker: ractor::ActorId, slot: Option<usize>) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        match slot {
            Some(slot) => slots.insert(worker, slot),
            None => slots.remove(&worker),
        };
    }

    /// Serves `req` as the worker in `slot` of its service would, in the caller's task: a
    /// call from this node's gateway to a worker of this node needs no message, no task
    /// and no reply channel. The worker serves calls from other nodes the same way.
    pub async fn serve_here(self: &Arc<Self>, slot: usize, req: ServiceRequest) -> ServiceResponse {
        let service = req.call.service();
        let delay = self.delay_ms(service);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        worker::serve(self, service, slot, req).await
    }

    /// Serves a request that came from another node as MessagePack bytes (over a service
    /// link), as the worker `worker` of this node. `Err`: the call was lost (the worker
    /// stopped, or panicked while serving) and may be retried elsewhere.
    pub async fn serve_encoded(
        self: &Arc<Self>,
        worker: ractor::ActorId,
        request: &[u8],
    ) -> Result<ServiceResponse, String> {
        let Some(slot) = self.local_slot(worker) else {
            return Err("the instance stopped".into());
        };
        let req = match ServiceRequest::from_msgpack(request) {
            Ok(req) => req,
            Err(e) => return Ok(self.undecodable_request(&e)),
        };
        // Boxed: the operations' futures stay out of the caller's.
        std::panic::AssertUnwindSafe(Box::pin(self.serve_here(slot, req)))
            .catch_unwind()
            .await
            .map_err(|_| "the instance panicked while serving".to_string())
    }

    /// The answer to a request whose bytes did not decode (sent by a node of another version).
    pub fn undecodable_request(&self, why: &str) -> ServiceResponse {
        let e = crate::Error::BadRequest("invalid_request", format!("undecodable service request: {why}"));
        worker::error(self, &e, "")
    }

    pub fn set_delay_ms(&self, service: Service, ms: u64) {
        let mut delays = self.delays.write().unwrap_or_else(|p| p.into_inner());
        if ms == 0 {
            delays.remove(&service);
        } else {
            delays.insert(service, ms);
        }
    }

    pub fn delay_ms(&self, service: Service) -> u64 {
        self.delays.read().unwrap_or_else(|p| p.into_inner()).get(&service).copied().unwrap_or(0)
    }

    pub fn health(&self) -> BTreeMap<Service, ServiceHealth> {
        self.health.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_health(&self, service: Service, health: ServiceHealth) {
        self.health.write().unwrap_or_else(|p| p.into_inner()).insert(service, health);
    }
}

/// A request or an answer between a gateway and a worker. Ractor hands a message to a
/// local actor as it is and serialises it only for an actor on another node, so a call that
/// stays on this node is never encoded: the value itself travels, and MessagePack (the
/// value alone, as before) only across the mesh.
/// Boxed, so that a worker's messages stay small.
#[derive(Debug)]
pub struct Envelope<T>(Result<Box<T>, String>);

impl<T> Envelope<T> {
    pub fn new(value: T) -> Self {
        Self(Ok(Box::new(value)))
    }

    /// The value, or why the bytes it came as could not be decoded.
    pub fn open(self) -> Result<T, String> {
        self.0.map(|v| *v)
    }
}

impl<T: Serialize + serde::de::DeserializeOwned> ractor::BytesConvertable for Envelope<T> {
    fn into_bytes(self) -> Vec<u8> {
        // A value that cannot be encoded goes as no bytes: the receiver reports it undecodable.
        self.0.ok().and_then(|v| encode(&*v).ok()).unwrap_or_default()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(decode(&bytes).map(Box::new).map_err(|e| e.to_string()))
    }
}

impl ServiceRequest {
    /// Appends the request as MessagePack (as across the mesh) to `buf`.
    pub fn write_msgpack(&self, buf: &mut Vec<u8>) -> Result<(), String> {
        rmp_serde::encode::write_named(buf, self).map_err(|e| e.to_string())
    }

    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, String> {
        decode(bytes).map_err(|e| e.to_string())
    }
}

impl ServiceResponse {
    /// Appends the answer as MessagePack (as across the mesh) to `buf`.
    pub fn write_msgpack(&self, buf: &mut Vec<u8>) -> Result<(), String> {
        rmp_serde::encode::write_named(buf, self).map_err(|e| e.to_string())
    }

    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, String> {
        decode(bytes).map_err(|e| e.to_string())
    }
}

/// Serialises an envelope for the mesh (MessagePack, fields by name so that optional
/// and renamed fields decode as they were written).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(v)
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}
