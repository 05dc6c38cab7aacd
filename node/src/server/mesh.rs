//! The actor mesh: a ractor_cluster node server on the mesh port, authenticated with a
//! cookie derived from the cluster secret, connected to every member of the Raft
//! membership. The mesh has no keepalive of its own, so a probe actor on every node is
//! called each second; a session whose probe stops answering is dropped (which removes
//! that node's actors from every process group) and reconnected later.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
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
/// Longest `/ready` waits for the mesh to reach every reachable member after start.
pub const MESH_READY_WAIT: Duration = Duration::from_secs(10);

/// The running node server, for readiness checks (the mesh is process-global anyway).
struct MeshHandle {
    started: Instant,
    server: Option<ActorRef<NodeServerMessage>>,
}

fn handle() -> &'static Mutex<MeshHandle> {
    static HANDLE: OnceLock<Mutex<MeshHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| Mutex::new(MeshHandle { started: Instant::now(), server: None }))
}

fn set_server(server: Option<ActorRef<NodeServerMessage>>) {
    handle().lock().unwrap_or_else(|p| p.into_inner()).server = server;
}

/// Whether this node's mesh reaches every member it can reach, for `/ready`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MeshReadiness {
    pub ready: bool,
    /// Members whose every service group already lists their workers here.
    pub connected: Vec<String>,
    /// Members reachable on their peer port but not (yet) fully in the mesh.
    pub connecting: Vec<String>,
    /// Members that do not answer at all (not waited for).
    pub unreachable: Vec<String>,
}

/// Names of the nodes whose workers are in every service group (and the probe group) on
/// this node: balancing sees all of their instances.
async fn synced_peers() -> BTreeSet<String> {
    let server = handle().lock().unwrap_or_else(|p| p.into_inner()).server.clone();
    let Some(server) = server else { return BTreeSet::new() };
    let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 500) else { return BTreeSet::new() };
    let mut groups: Vec<String> = panal_actors::services::Service::ALL.iter().map(|s| s.group()).collect();
    groups.push(PROBE_GROUP.into());
    let nodes_in: Vec<BTreeSet<u64>> =
        groups.iter().map(|g| ractor::pg::get_members(g).iter().map(|c| c.get_id().node()).collect()).collect();
    sessions
        .iter()
        .filter(|(id, _)| nodes_in.iter().all(|nodes| nodes.contains(id)))
        .filter_map(|(_, s)| s.peer_name.as_ref().map(|p| node_name_of(&p.name).to_string()))
        .collect()
}

/// Ready once every other member is in the mesh, or does not answer on its peer port, or
/// [`MESH_READY_WAIT`] has passed since the mesh started.
pub async fn readiness(replica: &Replica) -> MeshReadiness {
    let synced = synced_peers().await;
    let me = replica.node().name.clone();
    let others: Vec<_> = replica.members().into_iter().filter(|(_, n, _)| n.name != me).collect();
    let mut view = MeshReadiness { ready: true, connected: vec![], connecting: vec![], unreachable: vec![] };
    let missing: Vec<_> = others
        .into_iter()
        .filter(|(_, n, _)| {
            if synced.contains(&n.name) {
                view.connected.push(n.name.clone());
                false
            } else {
                true
            }
        })
        .collect();
    let probes = futures::future::join_all(
        missing.iter().map(|(_, n, _)| async move { replica.peer_status(n, Duration::from_millis(300)).await.is_ok() }),
    )
    .await;
    for ((_, n, _), reachable) in missing.iter().zip(probes) {
        if reachable {
            view.connecting.push(n.name.clone());
        } else {
            view.unreachable.push(n.name.clone());
        }
    }
    let waited = handle().lock().unwrap_or_else(|p| p.into_inner()).started.elapsed();
    view.ready = view.connecting.is_empty() || waited >= MESH_READY_WAIT;
    view
}

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
    {
        let mut h = handle().lock().unwrap_or_else(|p| p.into_inner());
        h.started = Instant::now();
        h.server = Some(server.clone());
    }
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
    // A removed node leaves the mesh for good: its workers drop out of every group.
    let removed = replica.is_removed();
    let next = match server {
        Some(server) if removed => {
            tracing::warn!("removed from the cluster: closing every mesh session");
            shut_down(server).await;
            None
        }
        Some(server) if isolated => {
            tracing::warn!("isolated (chaos drill): closing every mesh session");
            shut_down(server).await;
            None
        }
        None if !isolated && !removed => match spec.spawn().await {
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
    };
    set_server(next.clone());
    next
}

/// Why a mesh session must not carry this cluster's requests, if so: its node is not a
/// member, or it answers on another member's mesh address (wrong node).
fn session_mismatch(
    name: &str,
    addr: &str,
    members: &[(u64, panal_raft::NodeInfo, panal_raft::MemberRole)],
) -> Option<String> {
    if !members.iter().any(|(_, n, _)| n.name == name) {
        return Some(format!("{name} is not a member"));
    }
    members
        .iter()
        .find(|(_, n, _)| n.mesh_addr == addr && n.name != name)
        .map(|(id, n, _)| format!("wrong node: {name} answers on the mesh address of member {id} ({})", n.name))
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
    let mut removed = replica.removed_watch();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // An isolation starting cuts the mesh at once, not at the next tick.
            _ = replica.peer_client().isolation().changed() => {}
            _ = removed.wait_for(|r| *r), if !replica.is_removed() => {}
        }
        running = follow_isolation(&spec, running, &replica).await;
        let Some(server) = running.clone() else {
            misses.clear();
            continue;
        };
        let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) else { continue };
        let connected: Vec<String> =
            sessions.values().filter_map(|s| s.peer_name.as_ref().map(|p| node_name_of(&p.name).to_string())).collect();
        // A session with a node that is not a member (removed, or a stranger holding the
        // cookie) is closed: its workers must not receive this cluster's requests.
        let members = replica.members();
        if !members.is_empty() {
            for session in sessions.values() {
                let Some(peer) = session.peer_name.as_ref() else { continue };
                let name = node_name_of(&peer.name);
                if let Some(why) = session_mismatch(name, &peer.connection_string, &members) {
                    tracing::warn!(peer = %name, addr = %peer.connection_string, "closing a mesh session: {why}");
                    session.actor.stop(Some(why));
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use panal_raft::{MemberRole, NodeInfo};

    #[test]
    fn sessions_of_strangers_and_misplaced_nodes_are_refused() {
        let node = |name: &str, ip: &str| NodeInfo {
            name: name.into(),
            peer_addr: format!("{ip}:7701"),
            api_addr: format!("{ip}:7700"),
            mesh_addr: format!("{ip}:7702"),
        };
        let members =
            vec![(1, node("n1", "10.0.0.1"), MemberRole::Manager), (2, node("n2", "10.0.0.2"), MemberRole::Worker)];
        assert_eq!(session_mismatch("n2", "10.0.0.2:7702", &members), None);
        assert!(session_mismatch("n9", "10.0.0.9:7702", &members).unwrap().contains("not a member"));
        assert!(session_mismatch("n2", "10.0.0.1:7702", &members).unwrap().contains("wrong node"));
    }
}
