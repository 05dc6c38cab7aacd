//! A service worker: answers requests from any node's gateway. Requests run in their own
//! task so a slow one (a Raft write) never blocks the others; a chaos panic kills the
//! worker itself, which its supervisor restarts.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::{decode, encode, Call, Service, ServiceContext, ServiceRequest, ServiceResponse};

/// Messages a worker accepts, locally or over the mesh (payloads are serde bytes).
#[derive(RactorClusterMessage)]
pub enum WorkerMsg {
    /// A serialised [`ServiceRequest`]; the reply is a serialised [`ServiceResponse`].
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Chaos: panic with this message.
    Panic(String),
}

pub struct ServiceWorker;

pub struct WorkerArgs {
    pub ctx: Arc<ServiceContext>,
    pub service: Service,
    pub slot: usize,
}

impl Actor for ServiceWorker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, args: WorkerArgs) -> Result<WorkerArgs, ActorProcessingErr> {
        ractor::pg::join(args.service.group(), vec![myself.get_cell()]);
        if args.service == Service::Metrics {
            // The cluster view asks each node about itself: one group per node.
            ractor::pg::join(crate::metrics::ops::node_group(&args.ctx.node_name), vec![myself.get_cell()]);
        }
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        state: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Panic(reason) => {
                panic!("chaos panic in {} worker {}: {reason}", state.service.name(), state.slot)
            }
            WorkerMsg::Call(bytes, reply) => {
                let (ctx, service, slot) = (state.ctx.clone(), state.service, state.slot);
                tokio::spawn(async move {
                    let delay = ctx.delay_ms(service);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let response = match decode::<ServiceRequest>(&bytes) {
                        Ok(req) => serve(&ctx, service, slot, req).await,
                        Err(e) => error(&ctx, 400, "invalid_request", &format!("undecodable service request: {e}")),
                    };
                    let _ = reply.send(encode(&response));
                });
            }
        }
        Ok(())
    }
}

fn error(ctx: &ServiceContext, status: u16, code: &str, message: &str) -> ServiceResponse {
    ServiceResponse {
        status,
        body: crate::error::error_body(code, message, "", None),
        node: ctx.node_name.clone(),
        index: None,
        content_type: None,
        retry_after: None,
    }
}

/// Runs one operation of the service and turns its outcome into the answer.
async fn serve(ctx: &Arc<ServiceContext>, service: Service, slot: usize, req: ServiceRequest) -> ServiceResponse {
    if req.op == "ping" {
        return ping(ctx, service, slot, req).await;
    }
    let call = Call { ctx: ctx.clone(), req };
    let outcome = match service {
        Service::Auth => crate::auth::ops::handle(&call).await,
        Service::Catalog => crate::catalog::ops::handle(&call).await,
        Service::Energy => crate::energy::ops::handle(&call).await,
        Service::Prediction => crate::prediction::handle(&call).await,
        Service::Metrics => crate::metrics::ops::handle(&call).await,
    };
    match outcome {
        Ok(out) => out.into_response(&ctx.node_name),
        Err(e) => {
            let (status, _, retry_after) = e.http();
            if status >= 500 {
                tracing::error!(service = service.name(), op = %call.req.op, error = %e, "service operation failed");
            }
            ServiceResponse {
                status,
                body: e.body(""),
                node: ctx.node_name.clone(),
                index: None,
                content_type: None,
                retry_after,
            }
        }
    }
}

/// `ping`: one read of the local replica, the same work as the baseline's query.
async fn ping(ctx: &ServiceContext, service: Service, slot: usize, req: ServiceRequest) -> ServiceResponse {
    match req.op.as_str() {
        "ping" => {
            let users = ctx
                .replica
                .state_machine()
                .read(|db| db.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0)))
                .await;
            match users {
                Ok(Ok(users)) => ServiceResponse {
                    status: 200,
                    body: serde_json::json!({
                        "service": service.name(),
                        "node": ctx.node_name,
                        "worker": format!("{}/{}/{}", ctx.node_name, service.name(), slot),
                        "users": users,
                        "caller": req.identity.as_ref().map(|i| &i.username),
                    }),
                    node: ctx.node_name.clone(),
                    index: None,
                    content_type: None,
                    retry_after: None,
                },
                Ok(Err(e)) => error(ctx, 500, "internal", &e.to_string()),
                Err(e) => error(ctx, 503, "unavailable", &e.to_string()),
            }
        }
        other => error(ctx, 404, "not_found", &format!("the {} service has no operation {other:?}", service.name())),
    }
}
