//! Typed service operations. Each service declares its operations as request structs
//! grouped in one enum per service (`CatalogOp::PlaceOrder(PlaceOrder)`, …); the gateway
//! sends one [`ServiceCall`] and the worker matches it exhaustively into the
//! operation's [`Operation::handle`]. A route names its operation by type, so a route
//! whose operation has no handler, or a handler answering another type than the
//! operation declares, does not compile.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::{Call, Service};
use crate::Error;

/// One operation of a service: its input is `Self`, its answer `Output`.
pub trait Operation: Into<ServiceCall> + Serialize + Send + Sized + 'static {
    /// What the operation answers on success.
    type Output: Serialize;

    /// HTTP status of a success (201 for operations that create something).
    const STATUS: u16 = 200;

    /// A read whose answer depends on its input, its caller and the replicated state only
    /// (no clock, nothing local to the node): its encoded answer is kept until the next
    /// applied write (see [`super::answers`]).
    const CACHED: bool = false;

    /// Serves the operation on a worker.
    fn handle(self, call: &Call) -> impl Future<Output = Result<Self::Output, Error>> + Send;

    /// Encodes a success, once: JSON unless the operation answers text (HTML, SVG).
    fn encode(output: Self::Output) -> Result<Body, Error> {
        Body::json(&output)
    }
}

/// An encoded answer body.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Body {
    pub const JSON: &'static str = "application/json";

    pub fn json(value: &impl Serialize) -> Result<Body, Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Internal(format!("cannot encode the answer: {e}")))?;
        Ok(Body { content_type: Self::JSON, bytes })
    }

    pub fn text(content_type: &'static str, text: String) -> Body {
        Body { content_type, bytes: text.into_bytes() }
    }
}

/// The answer of an operation that deletes one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deleted {
    /// Id of the deleted resource.
    pub deleted: i64,
}

/// Declares a service's operation enum: one variant per operation struct, named alike,
/// with `From` into [`ServiceCall`] and the exhaustive dispatch to each handler.
macro_rules! service_ops {
    ($(#[$meta:meta])* $name:ident => $service:ident { $($op:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($op($op)),+
        }

        impl $name {
            /// The operation's name, for logs.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$op(_) => stringify!($op)),+
                }
            }

            pub(crate) async fn serve(self, call: &$crate::services::Call) -> Result<$crate::services::Answer, $crate::Error> {
                match self {
                    $(Self::$op(op) => call.run(op).await),+
                }
            }
        }

        $(
            impl From<$op> for $crate::services::ServiceCall {
                fn from(op: $op) -> Self {
                    $crate::services::ServiceCall::$service($name::$op(op))
                }
            }
        )+
    };
}
pub(crate) use service_ops;

/// Every operation of every service, as the gateway sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServiceCall {
    /// Any service's liveness check.
    Ping(Ping),
    Auth(crate::auth::ops::AuthOp),
    Catalog(crate::catalog::ops::CatalogOp),
    Energy(crate::energy::ops::EnergyOp),
    Prediction(crate::prediction::PredictionOp),
    Metrics(crate::metrics::ops::MetricsOp),
}

impl ServiceCall {
    /// The service whose instances serve this call.
    pub fn service(&self) -> Service {
        match self {
            ServiceCall::Ping(p) => p.service,
            ServiceCall::Auth(_) => Service::Auth,
            ServiceCall::Catalog(_) => Service::Catalog,
            ServiceCall::Energy(_) => Service::Energy,
            ServiceCall::Prediction(_) => Service::Prediction,
            ServiceCall::Metrics(_) => Service::Metrics,
        }
    }

    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceCall::Ping(_) => "Ping",
            ServiceCall::Auth(op) => op.name(),
            ServiceCall::Catalog(op) => op.name(),
            ServiceCall::Energy(op) => op.name(),
            ServiceCall::Prediction(op) => op.name(),
            ServiceCall::Metrics(op) => op.name(),
        }
    }

    pub(crate) async fn serve(self, call: &Call) -> Result<super::Answer, Error> {
        match self {
            ServiceCall::Ping(op) => call.run(op).await,
            ServiceCall::Auth(op) => op.serve(call).await,
            ServiceCall::Catalog(op) => op.serve(call).await,
            ServiceCall::Energy(op) => op.serve(call).await,
            ServiceCall::Prediction(op) => op.serve(call).await,
            ServiceCall::Metrics(op) => op.serve(call).await,
        }
    }
}

/// `GET /api/v1/{service}/ping`: one read of the local replica, the same work as the
/// baseline's query in the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub service: Service,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PingReply {
    pub service: String,
    pub node: String,
    /// The worker that answered: node/service/slot.
    pub worker: String,
    /// Accounts in the cluster; only for authenticated callers (no anonymous census).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<i64>,
    /// The caller's username, when a token was sent.
    pub caller: Option<String>,
}

impl From<Ping> for ServiceCall {
    fn from(op: Ping) -> Self {
        ServiceCall::Ping(op)
    }
}

impl Operation for Ping {
    type Output = PingReply;

    async fn handle(self, call: &Call) -> Result<PingReply, Error> {
        // Everyone's ping reads the replica (the benchmarked work); only a verified caller
        // is told the result.
        let users: i64 = call
            .ctx
            .replica
            .state_machine()
            .read(|db| db.prepare_cached("SELECT count(*) FROM users")?.query_row([], |r| r.get(0)))??;
        let ctx = &call.ctx;
        let name = self.service.name();
        Ok(PingReply {
            service: name.into(),
            node: ctx.node_name.clone(),
            worker: format!("{}/{name}/{}", ctx.node_name, call.slot),
            users: call.meta.identity.as_ref().map(|_| users),
            caller: call.meta.identity.as_ref().map(|i| i.username.clone()),
        })
    }
}
