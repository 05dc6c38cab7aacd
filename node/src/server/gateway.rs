//! The gateway's path to service instances: discover every live instance of a service in
//! the cluster (process groups over the mesh), pick one with the balancing policy, call it
//! with a timeout, and retry an idempotent request on another instance when the one it
//! was sent to died under it (at most twice: right after a worker panic, a retry landing
//! on a remote instance was seen to fail too, for a few milliseconds).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use panal_actors::services::{Envelope, Service, ServiceContext, ServiceRequest, ServiceResponse, WorkerMsg};
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorId};

use crate::error::{Error, Result};
use crate::server::link::{Links, Outcome};

/// How the gateway picks an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Power of two choices: the less busy of two random instances.
    P2c,
    /// Every instance in turn.
    RoundRobin,
    /// Instances on this node; others only when there are none here.
    Local,
}

/// Requests in flight to one instance beyond which it counts as saturated.
pub const MAX_IN_FLIGHT_PER_INSTANCE: usize = 256;

/// Picks an index into `candidates`. `load[i]` is the in-flight count of candidate `i`;
/// saturated candidates are never picked. Pure, so the policies are unit-tested.
pub fn pick(policy: Policy, load: &[usize], local: &[bool], turn: usize, random: (usize, usize)) -> Option<usize> {
    let open: Vec<usize> = (0..load.len()).filter(|&i| load[i] < MAX_IN_FLIGHT_PER_INSTANCE).collect();
    if open.is_empty() {
        return None;
    }
    match policy {
        Policy::RoundRobin => Some(open[turn % open.len()]),
        Policy::P2c => {
            let a = open[random.0 % open.len()];
            let b = open[random.1 % open.len()];
            Some(if load[b] < load[a] { b } else { a })
        }
        Policy::Local => {
            let here: Vec<usize> = open.iter().copied().filter(|&i| local[i]).collect();
            let pool = if here.is_empty() { &open } else { &here };
            Some(pool[turn % pool.len()])
        }
    }
}

pub struct Gateway {
    pub policy: Policy,
    pub timeout: Duration,
    turn: AtomicUsize,
    in_flight: Mutex<HashMap<ActorId, usize>>,
    /// Instances that died under a call, until when to avoid them. Process groups on
    /// other nodes learn of a death a moment later; meanwhile no request is sent there.
    suspects: Mutex<HashMap<ActorId, Instant>>,
    /// This node's workers, served in the calling task when chosen.
    services: Arc<ServiceContext>,
    /// Links to the other nodes, for calls to their instances.
    links: Arc<Links>,
    /// Calls to other nodes that went over the mesh (no link up yet).
    over_mesh: metrics::Counter,
    /// Per service (in [`Service::ALL`] order), the series every call touches, looked up
    /// once instead of by name and labels on every call.
    in_flight_gauges: Vec<metrics::Gauge>,
    served_here: Vec<metrics::Counter>,
}

fn index_of(service: Service) -> usize {
    Service::ALL.iter().position(|s| *s == service).unwrap_or(0)
}

/// HELP text of the series the gateway publishes.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "panal_gateway_in_flight",
        "Calls from this node's gateway to a service's instances not answered yet."
    );
    describe_counter!(
        "panal_balance_decisions_total",
        "Calls the gateway completed, by service and by the node whose instance served them."
    );
    describe_counter!(
        "panal_gateway_remote_calls_total",
        "Calls to another node's instances, by transport: its service link, or the actor mesh while no link is up."
    );
    describe_counter!(
        "panal_gateway_retries_total",
        "Idempotent calls the gateway retried on another instance after losing the first."
    );
}

/// How long an instance that died under a call is avoided.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// Decrements an instance's in-flight count when the call ends, however it ends.
struct InFlight<'a> {
    gateway: &'a Gateway,
    id: ActorId,
    service: Service,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gateway.in_flight_gauges[index_of(self.service)].decrement(1.0);
        let mut map = self.gateway.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

enum Attempt {
    Done(ServiceResponse),
    /// The instance died or vanished before answering: the request may be retried.
    Lost(String),
}

impl Gateway {
    /// Call once the metrics recorder is installed: the series are registered here.
    pub fn new(policy: Policy, timeout: Duration, services: Arc<ServiceContext>) -> Self {
        let node = services.node_name.clone();
        Self {
            policy,
            timeout,
            turn: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
            in_flight_gauges: Service::ALL
                .iter()
                .map(|s| metrics::gauge!("panal_gateway_in_flight", "service" => s.name()))
                .collect(),
            served_here: Service::ALL
                .iter()
                .map(|s| metrics::counter!("panal_balance_decisions_total", "service" => s.name(), "target" => node.clone()))
                .collect(),
            links: Links::new(services.replica.clone()),
            over_mesh: metrics::counter!("panal_gateway_remote_calls_total", "transport" => "mesh"),
            services,
        }
    }

    /// Sends `req` to an instance of its service; retries on other instances (other
    /// nodes first) when the chosen one is lost. Every call is safe to retry: reads change
    /// nothing and every write carries its idempotency key.
    pub async fn call(&self, req: &ServiceRequest) -> Result<ServiceResponse> {
        let service = req.call.service();
        let mut tried: Vec<ActorId> = Vec::new();
        let attempts = 3;
        let mut last_loss = String::new();
        for _ in 0..attempts {
            let instance = self.choose(service, &tried)?;
            tried.push(instance.get_id());
            match self.call_instance(service, &instance, req.clone()).await? {
                Attempt::Done(resp) => {
                    if resp.node == self.services.node_name {
                        self.served_here[index_of(service)].increment(1);
                    } else {
                        metrics::counter!("panal_balance_decisions_total", "service" => service.name(), "target" => resp.node.clone())
                            .increment(1);
                    }
                    return Ok(resp);
                }
                Attempt::Lost(why) => {
                    self.suspects
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(instance.get_id(), Instant::now() + SUSPECT_FOR);
                    metrics::counter!("panal_gateway_retries_total", "service" => service.name()).increment(1);
                    tracing::debug!(service = service.name(), %why, "instance lost during a call");
                    last_loss = why;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        Err(Error::Unavailable(
            "instance_lost",
            format!("the {} instance failed during the request: {last_loss}", service.name()),
        ))
    }

    /// Sends `req` to the metrics instance of node `name` (the cluster view asks each node
    /// about itself), within `timeout`.
    pub async fn call_node(
        &self,
        name: &str,
        req: &ServiceRequest,
        timeout: std::time::Duration,
    ) -> Result<ServiceResponse> {
        let group = panal_actors::metrics::ops::node_group(name);
        let instance = ractor::pg::get_members(&group)
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unavailable("unreachable", format!("{name} is not connected to this node's mesh")))?;
        let call = self.call_instance(Service::Metrics, &instance, req.clone());
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(Attempt::Done(resp))) => Ok(resp),
            Ok(Ok(Attempt::Lost(why))) => Err(Error::Unavailable("unreachable", format!("{name}: {why}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::GatewayTimeout(format!("{name} did not answer within {timeout:?}"))),
        }
    }

    fn choose(&self, service: Service, exclude: &[ActorId]) -> Result<ActorCell> {
        let suspects: Vec<ActorId> = {
            let mut map = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            map.retain(|_, until| *until > now);
            map.keys().copied().collect()
        };
        let mut candidates: Vec<ActorCell> = ractor::pg::get_members(&service.group())
            .into_iter()
            .filter(|c| !exclude.contains(&c.get_id()) && !suspects.contains(&c.get_id()))
            .collect();
        // A retry goes to another node when it can: failures cluster by node (a chaos
        // storm, a dying process), so a sibling of the failed instance is a poor bet.
        let failed_nodes: Vec<u64> = exclude.iter().map(|id| id.node()).collect();
        if candidates.iter().any(|c| !failed_nodes.contains(&c.get_id().node())) {
            candidates.retain(|c| !failed_nodes.contains(&c.get_id().node()));
        }
        if candidates.is_empty() {
            return Err(Error::Unavailable(
                "service_unavailable",
                format!("no live instance of the {} service", service.name()),
            ));
        }
        let (load, local): (Vec<usize>, Vec<bool>) = {
            let map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            candidates.iter().map(|c| (map.get(&c.get_id()).copied().unwrap_or(0), c.get_id().is_local())).unzip()
        };
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let random = (rand::random::<u32>() as usize, rand::random::<u32>() as usize);
        let i = pick(self.policy, &load, &local, turn, random).ok_or_else(|| {
            Error::Unavailable("overloaded", format!("every {} instance is saturated", service.name()))
        })?;
        Ok(candidates[i].clone())
    }

    /// Calls one instance. An instance on this node is served in this task (as the worker
    /// would: a message, a task and a reply channel would only add wake-ups); one on another
    /// node gets the request over the link to that node (see [`crate::server::link`]), or
    /// across the mesh as MessagePack (see [`Envelope`]) while no link is up.
    async fn call_instance(&self, service: Service, instance: &ActorCell, req: ServiceRequest) -> Result<Attempt> {
        let id = instance.get_id();
        *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += 1;
        let _guard = InFlight { gateway: self, id, service };
        self.in_flight_gauges[index_of(service)].increment(1.0);
        let timed_out = || {
            Error::GatewayTimeout(format!("the {} instance did not answer within {:?}", service.name(), self.timeout))
        };
        let undecodable =
            |e: String| Error::Internal(format!("undecodable answer from a {} instance: {e}", service.name()));
        if let Some(slot) = self.services.local_slot(id) {
            // A panic while serving loses the call as a dying worker would; it is retried.
            // Boxed: every operation's future inlined here would make each handler's huge.
            let served = std::panic::AssertUnwindSafe(Box::pin(self.services.serve_here(slot, req))).catch_unwind();
            return match tokio::time::timeout(self.timeout, served).await {
                Ok(Ok(resp)) => Ok(Attempt::Done(resp)),
                Ok(Err(_)) => Ok(Attempt::Lost("the instance panicked while serving".into())),
                Err(_) => Err(timed_out()),
            };
        }
        if let Some(link) = self.links.get(id.node()) {
            return match tokio::time::timeout(self.timeout, link.call(id.pid(), &req)).await {
                Ok(Outcome::Answered(resp)) => Ok(Attempt::Done(resp)),
                Ok(Outcome::Lost(why)) => Ok(Attempt::Lost(why)),
                Ok(Outcome::Undecodable(e)) => Err(undecodable(e)),
                Err(_) => Err(timed_out()),
            };
        }
        self.over_mesh.increment(1);
        let result = ractor::rpc::call::<WorkerMsg, Envelope<ServiceResponse>, _>(
            instance,
            |reply| WorkerMsg::Call(Envelope::new(req), reply),
            Some(self.timeout),
        )
        .await;
        match result {
            Ok(CallResult::Success(reply)) => reply.open().map(Attempt::Done).map_err(undecodable),
            Ok(CallResult::Timeout) => Err(timed_out()),
            Ok(CallResult::SenderError) => Ok(Attempt::Lost("the instance stopped before answering".into())),
            Err(e) => Ok(Attempt::Lost(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_instance_in_turn() {
        let load = [0, 0, 0];
        let picks: Vec<_> = (0..6).map(|t| pick(Policy::RoundRobin, &load, &[false; 3], t, (0, 0)).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn p2c_takes_the_less_loaded_of_its_two_choices() {
        let load = [5, 1, 9];
        assert_eq!(pick(Policy::P2c, &load, &[false; 3], 0, (0, 1)), Some(1));
        assert_eq!(pick(Policy::P2c, &load, &[false; 3], 0, (2, 0)), Some(0));
        assert_eq!(pick(Policy::P2c, &load, &[false; 3], 0, (2, 2)), Some(2));
    }

    #[test]
    fn local_prefers_this_node_and_falls_back_to_others() {
        let load = [0, 0, 0];
        let local = [false, true, false];
        assert!((0..5).all(|t| pick(Policy::Local, &load, &local, t, (0, 0)) == Some(1)));
        assert_eq!(pick(Policy::Local, &load, &[false; 3], 4, (0, 0)), Some(1));
    }

    #[test]
    fn saturated_instances_are_skipped_and_all_saturated_is_none() {
        let full = MAX_IN_FLIGHT_PER_INSTANCE;
        assert_eq!(pick(Policy::RoundRobin, &[full, 0], &[false; 2], 0, (0, 0)), Some(1));
        assert_eq!(pick(Policy::P2c, &[full, 3], &[false; 2], 0, (0, 0)), Some(1));
        assert_eq!(pick(Policy::P2c, &[full, full], &[false; 2], 0, (0, 1)), None);
    }
}
