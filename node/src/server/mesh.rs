//! The actor mesh: a ractor_cluster node server on the mesh port, authenticated with a
//! cookie derived from the cluster secret, connected to every member of the Raft
//! membership. With peer TLS every session is mutual TLS first: an incoming connection
//! without a certificate from the cluster CA is closed in the TLS handshake, before the
//! node server reads a byte of it. The mesh has no keepalive of its own, so a probe actor on every node is
//! called each second; a session whose probe stops answering is dropped (which removes
//! that node's actors from every process group) and reconnected later.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use panal_actors::Replica;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, NodeServerMessage, RactorClusterMessage};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

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

/// The node name behind each mesh session, by the session's id (the node part of the ids
/// of that node's actors here).
pub async fn session_names() -> HashMap<u64, String> {
    let server = handle().lock().unwrap_or_else(|p| p.into_inner()).server.clone();
    let Some(server) = server else { return HashMap::new() };
    let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 500) else { return HashMap::new() };
    sessions
        .into_iter()
        .filter_map(|(id, s)| s.peer_name.as_ref().map(|p| (id, node_name_of(&p.name).to_string())))
        .collect()
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
    /// The node server connections are handed to (none while isolated).
    current: Arc<Mutex<Option<ActorRef<NodeServerMessage>>>>,
    handshakes: Arc<Handshakes>,
}

impl ServerSpec {
    async fn spawn(&self) -> Result<ActorRef<NodeServerMessage>> {
        // Its own listener takes a random loopback port nobody is told about: the mesh
        // port is served by `guard`, which hands it every connection.
        let server = NodeServer::new(0, self.cookie.clone(), self.name.clone(), self.host.clone(), None, None)
            .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| Error::Fatal(format!("cannot start the actor mesh on {}: {e}", self.listen)))?;
        // Tell the node server the advertised port, not its private one.
        let _ = server.cast(NodeServerMessage::PortChanged { port: self.listen.port() });
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "panal.mesh.guard".into(),
            subscription: Box::new(AuthWatcher(self.handshakes.clone())),
        });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(server.clone());
        Ok(server)
    }

    fn stopped(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Limits on mesh connections before they authenticate.
#[derive(Debug, Clone, Copy)]
pub struct MeshLimits {
    /// Connections authenticating at once; more are closed at once.
    pub max_unauthenticated: usize,
    /// Largest frame accepted before authentication.
    pub max_handshake_frame: u64,
    /// Time a connection has to authenticate.
    pub handshake_timeout: Duration,
}

/// The mesh's TLS (from `tls::NodeTls`): the acceptor's and the connector's configurations.
#[derive(Clone)]
pub struct MeshTls {
    pub server: watch::Receiver<Arc<rustls::ServerConfig>>,
    pub client: watch::Receiver<Arc<rustls::ClientConfig>>,
}

/// Starts the node server behind the guarded mesh listener, and the task that keeps the
/// mesh connected. With `hold_until`, the node stays out of the mesh until that flag is
/// set: a joining node's workers must not take other nodes' requests before its replica
/// holds the cluster's state (they would refuse valid passwords and read an empty store).
pub async fn start(
    listener: TcpListener,
    limits: MeshLimits,
    cluster_secret: &str,
    replica: Replica,
    tls: Option<MeshTls>,
    hold_until: Option<Arc<AtomicBool>>,
) -> Result<()> {
    let listen = listener.local_addr()?;
    let name = replica.node().name.clone();
    let host = replica.node().mesh_addr.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default();
    let spec = ServerSpec {
        listen,
        cookie: cookie(cluster_secret),
        name: name.clone(),
        host,
        current: Default::default(),
        handshakes: Default::default(),
    };
    let held = hold_until.as_ref().is_some_and(|flag| !flag.load(Ordering::Acquire));
    let server = if held { None } else { Some(spec.spawn().await?) };
    {
        let mut h = handle().lock().unwrap_or_else(|p| p.into_inner());
        h.started = Instant::now();
        h.server = server.clone();
    }
    tokio::spawn(guard(
        listener,
        limits,
        spec.current.clone(),
        spec.handshakes.clone(),
        tls.as_ref().map(|t| t.server.clone()),
    ));
    Actor::spawn(None, Probe, name.clone()).await.map_err(|e| Error::Fatal(format!("mesh probe: {e}")))?;
    tokio::spawn(keep_connected(spec, server, replica, name, tls.map(|t| t.client), hold_until));
    Ok(())
}

/// Connections still authenticating, by the label the node server knows them by; the
/// sender flips to true when the node server reports the session authenticated.
#[derive(Default)]
struct Handshakes {
    pending: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl Handshakes {
    fn begin(&self, label: String) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(label, tx);
        rx
    }

    fn end(&self, label: &str, authenticated: bool) {
        if let Some(tx) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(label) {
            let _ = tx.send(authenticated);
        }
    }
}

struct AuthWatcher(Arc<Handshakes>);

impl ractor_cluster::NodeEventSubscription for AuthWatcher {
    fn node_session_opened(&self, _: ractor_cluster::node::NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        self.0.end(&ses.peer_addr, false);
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        self.0.end(&ses.peer_addr, true);
    }
}

/// Accepts mesh connections: at most `max_unauthenticated` authenticating at once, each
/// read through a [`HandshakeGuard`], handed to the current node server.
async fn guard(
    listener: TcpListener,
    limits: MeshLimits,
    current: Arc<Mutex<Option<ActorRef<NodeServerMessage>>>>,
    handshakes: Arc<Handshakes>,
    tls: Option<watch::Receiver<Arc<rustls::ServerConfig>>>,
) {
    let authenticating = Arc::new(Semaphore::new(limits.max_unauthenticated));
    let mut next_id: u64 = 0;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a mesh connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(server) = current.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            continue; // isolated (chaos drill): no mesh sessions
        };
        let Ok(permit) = authenticating.clone().try_acquire_owned() else {
            tracing::warn!(%remote, max = limits.max_unauthenticated, "too many mesh connections authenticating; closing this one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let label = format!("{remote}#{next_id}");
        let Some(tls) = &tls else {
            let (read, write) = stream.into_split();
            hand_over(&server, &handshakes, limits, permit, label, Box::new(read), Box::new(write));
            continue;
        };
        // The TLS handshake runs in its own task, under the handshake timeout and holding
        // the connection's slot among those authenticating.
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.borrow().clone());
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let (read, write) = tokio::io::split(stream);
                    hand_over(&server, &handshakes, limits, permit, label, Box::new(read), Box::new(write));
                }
                Ok(Err(e)) => tracing::warn!(%remote, error = %e, "mesh connection refused in the TLS handshake"),
                Err(_) => tracing::warn!(%remote, "mesh connection closed: TLS handshake timed out"),
            }
        });
    }
}

/// Hands an accepted connection, its reads guarded until it authenticates, to the node
/// server.
fn hand_over(
    server: &ActorRef<NodeServerMessage>,
    handshakes: &Handshakes,
    limits: MeshLimits,
    permit: OwnedSemaphorePermit,
    label: String,
    read: ractor_cluster::BoxRead,
    write: ractor_cluster::BoxWrite,
) {
    let authenticated = handshakes.begin(label.clone());
    let guarded = HandshakeGuard::new(read, limits, authenticated, permit, label.clone());
    let stream = GuardedStream { read: guarded, write, label: label.clone() };
    if server.cast(NodeServerMessage::ConnectionOpenedExternal { stream: Box::new(stream), is_server: true }).is_err() {
        handshakes.end(&label, false);
    }
}

struct GuardedStream {
    read: HandshakeGuard<ractor_cluster::BoxRead>,
    write: ractor_cluster::BoxWrite,
    label: String,
}

impl ractor_cluster::ClusterBidiStream for GuardedStream {
    fn split(self: Box<Self>) -> (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) {
        (Box::new(self.read), Box::new(self.write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.clone())
    }
}

/// Client frames a peer sends before the server has authenticated it: its name, its
/// status (only after an `alive` answer) and its challenge reply.
const HANDSHAKE_FRAMES: u32 = 3;

/// The read half of an incoming mesh connection until it authenticates: frames (u64
/// length prefix, then payload) are counted and each must fit `max_handshake_frame`;
/// after the handshake's frames nothing more is read until the node server reports the
/// session authenticated; the whole must happen within the handshake timeout. Then it
/// steps aside (and frees its slot among the authenticating connections).
struct HandshakeGuard<R> {
    inner: R,
    max_frame: u64,
    frames: u32,
    header: [u8; 8],
    header_len: usize,
    payload_left: u64,
    authenticated: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    permit: Option<OwnedSemaphorePermit>,
    label: String,
}

impl<R> HandshakeGuard<R> {
    fn new(
        inner: R,
        limits: MeshLimits,
        mut authenticated: watch::Receiver<bool>,
        permit: OwnedSemaphorePermit,
        label: String,
    ) -> Self {
        let authenticated = Box::pin(async move { authenticated.wait_for(|a| *a).await.is_ok() });
        Self {
            inner,
            max_frame: limits.max_handshake_frame,
            frames: 0,
            header: [0; 8],
            header_len: 0,
            payload_left: 0,
            authenticated: Some(authenticated),
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            permit: Some(permit),
            label,
        }
    }

    fn refuse(&self, why: &str) -> std::io::Error {
        tracing::warn!(peer = %self.label, "mesh connection closed before authentication: {why}");
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_string())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HandshakeGuard<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(authenticated) = this.authenticated.as_mut() {
            match authenticated.as_mut().poll(cx) {
                Poll::Ready(true) => {
                    this.authenticated = None;
                    this.permit = None;
                }
                Poll::Ready(false) => return Poll::Ready(Err(this.refuse("the session ended"))),
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(this.refuse("handshake timed out")));
                    }
                    let between_frames = this.header_len == 0 && this.payload_left == 0;
                    if between_frames && this.frames >= HANDSHAKE_FRAMES {
                        // Whatever comes next needs an authenticated session.
                        return Poll::Pending;
                    }
                    // Read no further than the end of the current header or payload (the
                    // frames are small: a copy through a stack buffer costs nothing).
                    let mut chunk = [0u8; 4096];
                    let want = if this.payload_left > 0 {
                        usize::try_from(this.payload_left).unwrap_or(usize::MAX)
                    } else {
                        8 - this.header_len
                    };
                    let want = want.min(chunk.len()).min(buf.remaining());
                    let mut limited = ReadBuf::new(&mut chunk[..want]);
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                    let got = limited.filled();
                    if this.payload_left > 0 {
                        this.payload_left -= got.len() as u64;
                    } else {
                        this.header[this.header_len..this.header_len + got.len()].copy_from_slice(got);
                        this.header_len += got.len();
                        if this.header_len == 8 {
                            let length = u64::from_be_bytes(this.header);
                            if length > this.max_frame {
                                return Poll::Ready(Err(this.refuse("handshake frame too large")));
                            }
                            this.header_len = 0;
                            this.payload_left = length;
                            this.frames += 1;
                        }
                    }
                    buf.put_slice(got);
                    return Poll::Ready(Ok(()));
                }
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
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
    held: bool,
) -> Option<ActorRef<NodeServerMessage>> {
    let isolated = replica.peer_client().isolation().is_isolated();
    // A removed node leaves the mesh for good: its workers drop out of every group.
    let removed = replica.is_removed();
    let next = match server {
        Some(server) if removed => {
            tracing::warn!("removed from the cluster: closing every mesh session");
            spec.stopped();
            shut_down(server).await;
            None
        }
        Some(server) if isolated => {
            tracing::warn!("isolated (chaos drill): closing every mesh session");
            spec.stopped();
            shut_down(server).await;
            None
        }
        None if held => None,
        None if !isolated && !removed => match spec.spawn().await {
            Ok(server) => {
                tracing::info!("mesh server listening (isolation over, or this joining node caught up)");
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

async fn keep_connected(
    spec: ServerSpec,
    server: Option<ActorRef<NodeServerMessage>>,
    replica: Replica,
    me: String,
    tls: Option<watch::Receiver<Arc<rustls::ClientConfig>>>,
    hold_until: Option<Arc<AtomicBool>>,
) {
    // Missed probes per mesh session (ractor_cluster's node id of the session).
    let mut misses: HashMap<u64, u32> = HashMap::new();
    let mut last_attempt: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = server;
    let mut ever_started = running.is_some();
    let mut removed = replica.removed_watch();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // An isolation starting cuts the mesh at once, not at the next tick.
            _ = replica.peer_client().isolation().changed() => {}
            _ = removed.wait_for(|r| *r), if !replica.is_removed() => {}
        }
        let held = hold_until.as_ref().is_some_and(|flag| !flag.load(Ordering::Acquire));
        running = follow_isolation(&spec, running, &replica, held).await;
        if !ever_started && running.is_some() {
            // Held while joining: the bounded wait of `/ready` for the mesh starts now.
            ever_started = true;
            handle().lock().unwrap_or_else(|p| p.into_inner()).started = Instant::now();
        }
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
            let connector = tls.as_ref().map(|t| tokio_rustls::TlsConnector::from(t.borrow().clone()));
            tokio::spawn(async move {
                let connect = async {
                    match connector {
                        // Peers are checked by their CA, not their name (see `tls::config`).
                        Some(connector) => {
                            let name = rustls_pki_types::ServerName::try_from("panal-mesh").expect("a valid DNS name");
                            ractor_cluster::client_connect_enc(&server, addr.as_str(), connector, name).await
                        }
                        None => ractor_cluster::client_connect(&server, addr.as_str()).await,
                    }
                };
                match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    fn limits(timeout_ms: u64) -> MeshLimits {
        MeshLimits {
            max_unauthenticated: 1,
            max_handshake_frame: 64,
            handshake_timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn frame(len: u64) -> Vec<u8> {
        let mut f = len.to_be_bytes().to_vec();
        f.extend(std::iter::repeat_n(7u8, usize::try_from(len).unwrap()));
        f
    }

    fn guard(
        timeout_ms: u64,
    ) -> (HandshakeGuard<tokio::io::DuplexStream>, tokio::io::DuplexStream, watch::Sender<bool>, Arc<Semaphore>) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (tx, rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(1));
        let permit = slots.clone().try_acquire_owned().unwrap();
        (HandshakeGuard::new(ours, limits(timeout_ms), rx, permit, "test".into()), theirs, tx, slots)
    }

    #[tokio::test]
    async fn a_large_frame_before_authentication_is_refused_unread() {
        let (mut g, mut peer, _tx, _) = guard(5_000);
        peer.write_all(&(16u64 << 20).to_be_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        let err = loop {
            match g.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(got < 8, "not even the whole length prefix was passed on: {got} bytes");
    }

    #[tokio::test]
    async fn after_the_handshake_frames_nothing_is_read_until_authenticated() {
        let (mut g, mut peer, tx, slots) = guard(5_000);
        let mut wire = Vec::new();
        for len in [10, 20, 30] {
            wire.extend(frame(len));
        }
        let handshake = wire.len();
        wire.extend(frame(1000)); // larger than the handshake limit: fine once authenticated
        peer.write_all(&wire).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while seen.len() < handshake {
            let n = g.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen.len(), handshake, "stopped at the end of the handshake");
        let early = tokio::time::timeout(Duration::from_millis(200), g.read(&mut buf)).await;
        assert!(early.is_err(), "the next frame waits for authentication");
        assert_eq!(slots.available_permits(), 0);
        tx.send(true).unwrap();
        while seen.len() < wire.len() {
            let n = g.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen, wire);
        assert_eq!(slots.available_permits(), 1, "an authenticated connection frees its slot");
    }

    #[tokio::test]
    async fn a_handshake_that_does_not_finish_in_time_is_closed() {
        let (mut g, mut peer, _tx, _) = guard(100);
        peer.write_all(&frame(10)).await.unwrap();
        let mut buf = [0u8; 64];
        let started = Instant::now();
        let err = loop {
            match g.read(&mut buf).await {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
