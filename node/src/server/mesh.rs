//! The actor mesh: a ractor_cluster node server on the mesh port, authenticated with a
//! cookie derived from the cluster secret, connected to every member of the Raft
//! membership. The mesh has no keepalive of its own, so a probe actor on every node is
//! called each second; a session whose probe stops answering is dropped (which removes
//! that node's actors from every process group) and reconnected later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use panal_actors::Replica;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, NodeServerMessage, RactorClusterMessage};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Process group of the probe actors.
const PROBE_GROUP: &str = "panal.mesh.probe";
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Missed probes after which a session is dropped.
const PROBE_MISSES: u32 = 2;

pub fn cookie(cluster_secret: &str) -> String {
    hex::encode(Sha256::digest(format!("panal-mesh-v1:{cluster_secret}").as_bytes()))
}

/// Answers probes with this node's name.
#[derive(RactorClusterMessage)]
pub enum ProbeMsg {
    #[rpc]
    Ping((), RpcReplyPort<String>),
}

struct Probe;

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = String;
    type Arguments = String;

    async fn pre_start(&self, myself: ActorRef<ProbeMsg>, name: String) -> Result<String, ActorProcessingErr> {
        ractor::pg::join(PROBE_GROUP.into(), vec![myself.get_cell()]);
        Ok(name)
    }

    async fn handle(&self, _: ActorRef<ProbeMsg>, msg: ProbeMsg, name: &mut String) -> Result<(), ActorProcessingErr> {
        let ProbeMsg::Ping((), reply) = msg;
        let _ = reply.send(name.clone());
        Ok(())
    }
}

/// What a node server is started from; kept so the server can be started again after a
/// partition drill shut it down.
struct ServerSpec {
    listen: SocketAddr,
    cookie: String,
    name: String,
    host: String,
}

impl ServerSpec {
    async fn spawn(&self) -> Result<ActorRef<NodeServerMessage>> {
        let server =
            NodeServer::new(self.listen.port(), self.cookie.clone(), self.name.clone(), self.host.clone(), None, None)
                .with_listen_addr(self.listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| Error::Fatal(format!("cannot start the actor mesh on {}: {e}", self.listen)))?;
        Ok(server)
    }
}

/// Starts the node server and the task that keeps the mesh connected.
pub async fn start(listen: SocketAddr, cluster_secret: &str, replica: Replica) -> Result<()> {
    let name = replica.node().name.clone();
    let host = replica.node().mesh_addr.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default();
    let spec = ServerSpec { listen, cookie: cookie(cluster_secret), name: name.clone(), host };
    let server = spec.spawn().await?;
    Actor::spawn(None, Probe, name.clone()).await.map_err(|e| Error::Fatal(format!("mesh probe: {e}")))?;
    tokio::spawn(keep_connected(spec, server, replica, name));
    Ok(())
}

/// Closes every mesh session and the listener (a partition drill): the server first, so it
/// does not respawn its listener, then its children. A session stops cleanly (its node's
/// actors leave the process groups); the listener waits in `accept`, so it is killed.
async fn shut_down(server: ActorRef<NodeServerMessage>) {
    let children = server.get_children();
    let _ = server.stop_and_wait(Some("isolated".into()), Some(Duration::from_secs(2))).await;
    futures::future::join_all(children.into_iter().map(|child| async move {
        if child.stop_and_wait(Some("isolated".into()), Some(Duration::from_millis(500))).await.is_err() {
            let _ = child.kill_and_wait(Some(Duration::from_secs(1))).await;
        }
    }))
    .await;
}

/// While the replica's isolation switch is on, keeps the node server down; starts it again
/// once the isolation ended. Returns the server to use, if one is running.
async fn follow_isolation(
    spec: &ServerSpec,
    server: Option<ActorRef<NodeServerMessage>>,
    replica: &Replica,
) -> Option<ActorRef<NodeServerMessage>> {
    let isolated = replica.peer_client().isolation().is_isolated();
    match server {
        Some(server) if isolated => {
            tracing::warn!("isolated (chaos drill): closing every mesh session");
            shut_down(server).await;
            None
        }
        None if !isolated => match spec.spawn().await {
            Ok(server) => {
                tracing::info!("isolation over: mesh server listening again");
                Some(server)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot restart the mesh server yet");
                None
            }
        },
        other => other,
    }
}

/// The node name in a ractor_cluster peer name `name@host`.
fn node_name_of(peer: &str) -> &str {
    peer.split_once('@').map(|(n, _)| n).unwrap_or(peer)
}

async fn keep_connected(spec: ServerSpec, server: ActorRef<NodeServerMessage>, replica: Replica, me: String) {
    // Missed probes per mesh session (ractor_cluster's node id of the session).
    let mut misses: HashMap<u64, u32> = HashMap::new();
    let mut last_attempt: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = Some(server);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // An isolation starting cuts the mesh at once, not at the next tick.
            _ = replica.peer_client().isolation().changed() => {}
        }
        running = follow_isolation(&spec, running, &replica).await;
        let Some(server) = running.clone() else {
            misses.clear();
            continue;
        };
        let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) else { continue };
        let connected: Vec<String> =
            sessions.values().filter_map(|s| s.peer_name.as_ref().map(|p| node_name_of(&p.name).to_string())).collect();
        // Connect to members we have no session with. Only the smaller name dials, so two
        // nodes never race to open duplicate sessions.
        for (_, node, _) in replica.members() {
            if node.name <= me || connected.contains(&node.name) {
                continue;
            }
            if last_attempt.get(&node.name).is_some_and(|t| t.elapsed() < PROBE_EVERY * 2) {
                continue;
            }
            last_attempt.insert(node.name.clone(), Instant::now());
            let (addr, server) = (node.mesh_addr.clone(), server.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(PROBE_TIMEOUT, ractor_cluster::client_connect(&server, addr.as_str())).await
                {
                    Ok(Ok(())) => tracing::info!(peer = %addr, "mesh session opened"),
                    Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "mesh connect failed"),
                    Err(_) => tracing::debug!(peer = %addr, "mesh connect timed out"),
                }
            });
        }
        // Probe every remote node; drop the sessions of those that stopped answering.
        let remote_probes: Vec<_> =
            ractor::pg::get_members(&PROBE_GROUP.to_string()).into_iter().filter(|c| !c.get_id().is_local()).collect();
        let results = futures::future::join_all(remote_probes.iter().map(|cell| async move {
            let r =
                ractor::rpc::call::<ProbeMsg, String, _>(cell, |reply| ProbeMsg::Ping((), reply), Some(PROBE_TIMEOUT))
                    .await;
            (cell.get_id().node(), matches!(r, Ok(ractor::rpc::CallResult::Success(_))))
        }))
        .await;
        misses.retain(|node, _| sessions.contains_key(node));
        for (node, ok) in results {
            let missed = misses.entry(node).or_default();
            *missed = if ok { 0 } else { *missed + 1 };
            if *missed >= PROBE_MISSES {
                if let Some(session) = sessions.get(&node) {
                    tracing::warn!(peer = ?session.peer_name.as_ref().map(|p| &p.name), "mesh peer stopped answering; dropping its session");
                    session.actor.stop(Some("probe timeout".into()));
                }
                misses.remove(&node);
            }
        }
    }
}
