//! A service worker: answers requests from any node's gateway. Requests run in their own
//! task so a slow one (a Raft write) never blocks the others; a chaos panic kills the
//! worker itself, which its supervisor restarts.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::{Body, Call, Envelope, Service, ServiceContext, ServiceRequest, ServiceResponse};
use crate::Error;

/// Messages a worker accepts, locally or over the mesh (MessagePack only across the mesh).
#[derive(RactorClusterMessage)]
pub enum WorkerMsg {
    /// One request; the reply is the answer.
    #[rpc]
    Call(Envelope<ServiceRequest>, RpcReplyPort<Envelope<ServiceResponse>>),
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
        args.ctx.set_slot(myself.get_id(), Some(args.slot));
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
            WorkerMsg::Call(request, reply) => {
                let (ctx, slot) = (state.ctx.clone(), state.slot);
                tokio::spawn(async move {
                    let response = match request.open() {
                        Ok(req) => ctx.serve_here(slot, req).await,
                        Err(e) => ctx.undecodable_request(&e),
                    };
                    let _ = reply.send(Envelope::new(response));
                });
            }
        }
        Ok(())
    }
}

pub(super) fn error(ctx: &ServiceContext, e: &Error, request_id: &str) -> ServiceResponse {
    let (status, _, retry_after) = e.http();
    ServiceResponse {
        status,
        content_type: Body::JSON.into(),
        body: serde_json::to_vec(&e.body(request_id)).unwrap_or_default(),
        node: ctx.node_name.clone(),
        index: None,
        retry_after,
    }
}

/// Runs one operation of the service and turns its outcome into the answer.
pub(super) async fn serve(
    ctx: &Arc<ServiceContext>,
    service: Service,
    slot: usize,
    req: ServiceRequest,
) -> ServiceResponse {
    let ServiceRequest { call: op, meta } = req;
    let request_id = meta.request_id.clone();
    if op.service() != service {
        let e = Error::NotFound(format!("the {} service does not serve {}", service.name(), op.name()));
        return error(ctx, &e, &request_id);
    }
    let name = op.name();
    let call = Call::new(ctx.clone(), meta, slot);
    match op.serve(&call).await {
        Ok(answer) => answer.into_response(&ctx.node_name),
        Err(e) => {
            if e.http().0 >= 500 {
                tracing::error!(service = service.name(), op = name, error = %e, "service operation failed");
            }
            error(ctx, &e, &request_id)
        }
    }
}
