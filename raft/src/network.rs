//! The client side of peer RPC: HTTP requests to other nodes' peer port, with pooled
//! connections, MessagePack bodies and the cluster's peer key on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::isolation::{Isolation, ISOLATED_HEADER};
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// Header carrying the peer key on every peer request.
pub const PEER_KEY_HEADER: &str = "x-panal-peer-key";
/// Header naming the cluster the caller believes it talks to (its id).
pub const CLUSTER_HEADER: &str = "x-panal-cluster";
/// Header naming the node id the caller believes listens at the address it called.
pub const TARGET_NODE_HEADER: &str = "x-panal-target-node";
/// Marks a peer-port answer refused because this node was removed from the cluster.
pub const REMOVED_HEADER: &str = "x-panal-removed";
pub(crate) const MSGPACK: &str = "application/msgpack";

/// The key peers present to each other, derived from the cluster secret so the secret
/// itself never travels after a node has joined.
pub fn peer_key(cluster_secret: &str) -> String {
    hex::encode(Sha256::digest(format!("panal-peer-v1:{cluster_secret}").as_bytes()))
}

/// Why a peer call failed, from the caller's point of view.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request never reached the peer (connection refused, no route, DNS): safe to
    /// retry anything.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request may or may not have been processed (timeout, reset, bad reply).
    #[error("{0}")]
    Network(String),
    #[error("peer rejected the cluster credentials")]
    Unauthorized,
    /// The address answered as another node or another cluster than the one called (409
    /// `wrong_node`): a member's address now belongs to someone else.
    #[error("wrong node: {0}")]
    WrongNode(String),
}

/// Body encodings of peer requests.
#[derive(Debug, Clone, Copy)]
enum Codec {
    MsgPack,
    Json,
}

/// Makes aws-lc the process's default rustls provider (once; later calls do nothing).
/// reqwest is built with rustls and no provider of its own, so every process that builds
/// an HTTP client calls this first.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The TLS client configuration of peer calls, swapped when the node's certificate or
/// trust changes (see `panal::server::tls`).
pub type PeerTls = tokio::sync::watch::Receiver<Arc<rustls::ClientConfig>>;

/// The HTTP client of peer calls, rebuilt when the TLS configuration changes.
struct Transport {
    tls: Option<PeerTls>,
    current: Mutex<(Option<Arc<rustls::ClientConfig>>, reqwest::Client)>,
}

impl Transport {
    fn new(tls: Option<PeerTls>) -> Self {
        let config = tls.as_ref().map(|rx| rx.borrow().clone());
        let http = Self::build(config.as_deref());
        Self { tls, current: Mutex::new((config, http)) }
    }

    fn build(tls: Option<&rustls::ClientConfig>) -> reqwest::Client {
        install_crypto_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        let builder = match tls {
            Some(config) => builder.use_preconfigured_tls(config.clone()),
            None => builder,
        };
        builder.build().expect("reqwest client with static settings builds")
    }

    /// The client for the current TLS configuration.
    fn http(&self) -> reqwest::Client {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = &self.tls {
            let config = rx.borrow().clone();
            if !current.0.as_ref().is_some_and(|c| Arc::ptr_eq(c, &config)) {
                *current = (Some(config.clone()), Self::build(Some(&config)));
            }
        }
        current.1.clone()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Pooled HTTP client for peer RPC.
#[derive(Clone)]
pub struct PeerClient {
    transport: Arc<Transport>,
    key: String,
    /// Named on every call, so that a node can refuse calls meant for another cluster.
    cluster_id: String,
    /// While on, every call fails at once as unreachable (partition drills).
    isolation: Isolation,
}

impl PeerClient {
    pub fn new(peer_key: String) -> Self {
        Self::with_tls(peer_key, None)
    }

    /// A client speaking TLS with `tls` (plain HTTP without).
    pub fn with_tls(peer_key: String, tls: Option<PeerTls>) -> Self {
        Self {
            transport: Arc::new(Transport::new(tls)),
            key: peer_key,
            cluster_id: String::new(),
            isolation: Isolation::default(),
        }
    }

    /// A client that names `cluster_id` on every call.
    pub fn for_cluster(peer_key: String, cluster_id: String, tls: Option<PeerTls>) -> Self {
        Self { cluster_id, ..Self::with_tls(peer_key, tls) }
    }

    /// The switch that cuts this node's peer traffic (both directions) during a drill.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// POSTs `req` as MessagePack to `http://{addr}{path}` and decodes the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        self.post(Codec::MsgPack, None, addr, path, req, timeout).await
    }

    /// Like [`PeerClient::call`], naming the node expected at `addr`: a node with another
    /// id refuses the call (409 `wrong_node`).
    pub async fn call_to<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: Option<NodeId>,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        self.post(Codec::MsgPack, target, addr, path, req, timeout).await
    }

    /// Like [`PeerClient::call`], with JSON bodies (for the node's own peer routes).
    pub async fn call_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        self.post(Codec::Json, None, addr, path, req, timeout).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        codec: Codec,
        target: Option<NodeId>,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let encoded = match codec {
            Codec::MsgPack => rmp_serde::to_vec_named(req).map_err(|e| e.to_string()),
            Codec::Json => serde_json::to_vec(req).map_err(|e| e.to_string()),
        };
        let body = encoded.map_err(|e| CallError::Network(format!("encode: {e}")))?;
        let content_type = match codec {
            Codec::MsgPack => MSGPACK,
            Codec::Json => "application/json",
        };
        let bytes = self.send(target, addr, path, content_type, body, timeout).await?;
        let decoded = match codec {
            Codec::MsgPack => rmp_serde::from_slice(&bytes).map_err(|e| e.to_string()),
            Codec::Json => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        };
        decoded.map_err(|e| CallError::Network(format!("undecodable reply: {e}")))
    }

    async fn send(
        &self,
        target: Option<NodeId>,
        addr: &str,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, CallError> {
        let request = self
            .request(reqwest::Method::POST, target, addr, path)?
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(timeout)
            .body(body);
        let resp = Self::refused(request.send().await.map_err(send_error)?, addr).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(CallError::Network(format!("peer answered HTTP {status}: {}", excerpt(resp).await)));
        }
        resp.bytes().await.map_err(|e| CallError::Network(e.to_string()))
    }

    /// Opens a long-lived byte stream to `path` on the node `target` at `addr`: an HTTP/1.1
    /// upgrade to `protocol`, authenticated like every peer call. `timeout` bounds the
    /// opening only.
    pub async fn open_stream(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        protocol: &'static str,
        timeout: Duration,
    ) -> Result<reqwest::Upgraded, CallError> {
        let request = self
            .request(reqwest::Method::GET, Some(target), addr, path)?
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, protocol)
            .timeout(timeout);
        let resp = Self::refused(request.send().await.map_err(send_error)?, addr).await?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let text = excerpt(resp).await;
            return Err(CallError::Network(format!("peer did not switch to {protocol}: HTTP {status}: {text}")));
        }
        resp.upgrade().await.map_err(|e| CallError::Network(e.to_string()))
    }

    /// A request to a peer with the credentials and the names of the cluster and node it is for.
    fn request(
        &self,
        method: reqwest::Method,
        target: Option<NodeId>,
        addr: &str,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, CallError> {
        if self.isolation.is_isolated() {
            return Err(CallError::Unreachable("this node is isolated (chaos drill)".into()));
        }
        let mut request = self
            .transport
            .http()
            .request(method, format!("{}://{addr}{path}", self.transport.scheme()))
            .header(PEER_KEY_HEADER, &self.key);
        if !self.cluster_id.is_empty() {
            request = request.header(CLUSTER_HEADER, &self.cluster_id);
        }
        if let Some(target) = target {
            request = request.header(TARGET_NODE_HEADER, target.to_string());
        }
        Ok(request)
    }

    /// The answer, unless the peer refused the call: wrong credentials, isolated, removed,
    /// or not the node that was called.
    async fn refused(resp: reqwest::Response, addr: &str) -> Result<reqwest::Response, CallError> {
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(CallError::Unauthorized);
        }
        if resp.headers().contains_key(ISOLATED_HEADER) {
            return Err(CallError::Unreachable(format!("{addr} is isolated (chaos drill)")));
        }
        if resp.headers().contains_key(REMOVED_HEADER) {
            return Err(CallError::Unreachable(format!("{addr} was removed from the cluster")));
        }
        if resp.status() == reqwest::StatusCode::CONFLICT && resp.headers().contains_key(TARGET_NODE_HEADER) {
            return Err(CallError::WrongNode(format!("{addr}: {}", excerpt(resp).await)));
        }
        Ok(resp)
    }
}

/// The start of an unexpected answer's body, for the error that reports it.
async fn excerpt(resp: reqwest::Response) -> String {
    resp.text().await.unwrap_or_default().chars().take(300).collect()
}

fn send_error(e: reqwest::Error) -> CallError {
    if e.is_connect() {
        CallError::Unreachable(e.to_string())
    } else {
        CallError::Network(e.to_string())
    }
}

/// Creates one [`Network`] per replication target.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(crate) client: PeerClient,
    pub(crate) health: PeerHealth,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Network {
        Network {
            client: self.client.clone(),
            target,
            name: node.name.clone(),
            addr: node.peer_addr.clone(),
            health: self.health.clone(),
        }
    }
}

/// Which peers Raft RPC currently fails to reach, and since when: a peer failing for
/// [`DOWN_AFTER`] is logged once (WARN, "unreachable since"), its return once (INFO), and
/// nothing in between; blips shorter than that (a slow heartbeat) are not logged at all.
#[derive(Clone, Default)]
pub(crate) struct PeerHealth {
    down: Arc<Mutex<HashMap<NodeId, Down>>>,
}

/// A peer failing since `since`; `reported` once its WARN line was logged.
#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    at: SystemTime,
    reported: bool,
}

/// How long a peer must keep failing before it is reported unreachable.
const DOWN_AFTER: Duration = Duration::from_secs(1);

/// A change worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerChange {
    WentDown,
    CameBack(Duration),
}

impl PeerHealth {
    /// Records the outcome of one call to `target` at `now`; returns the change worth a
    /// log line, if any.
    pub(crate) fn record(&self, target: NodeId, ok: bool, now: Instant) -> Option<PeerChange> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            let was = down.remove(&target)?;
            return was.reported.then(|| PeerChange::CameBack(now.saturating_duration_since(was.since)));
        }
        let entry = down.entry(target).or_insert(Down { since: now, at: SystemTime::now(), reported: false });
        if entry.reported || now.saturating_duration_since(entry.since) < DOWN_AFTER {
            return None;
        }
        entry.reported = true;
        Some(PeerChange::WentDown)
    }

    /// Wall-clock time `target` started failing, if it is failing.
    fn down_since(&self, target: NodeId) -> Option<SystemTime> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).get(&target).map(|d| d.at)
    }
}

pub struct Network {
    client: PeerClient,
    target: NodeId,
    name: String,
    addr: String,
    health: PeerHealth,
}

/// `SystemTime` as RFC 3339 UTC with seconds (no date crate needed for one log line).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Network {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = self.client.call_to(Some(self.target), &self.addr, path, req, option.hard_ttl()).await;
        match self.health.record(self.target, result.is_ok(), Instant::now()) {
            Some(PeerChange::WentDown) => {
                let error = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
                let since = self.health.down_since(self.target);
                tracing::warn!(
                    node = %self.name, id = self.target, addr = %self.addr, %error,
                    "node {} unreachable since {}", self.name, since.map(rfc3339).unwrap_or_default()
                );
            }
            Some(PeerChange::CameBack(after)) => {
                tracing::info!(node = %self.name, id = self.target, "node {} reachable again after {:.1} s", self.name, after.as_secs_f64());
            }
            None => {}
        }
        let reply: Result<Resp, RaftError<NodeId, E>> = result.map_err(|e| match e {
            // A wrong node behind the address is as good as no node: back off.
            CallError::Unreachable(_) | CallError::WrongNode(_) => RPCError::Unreachable(Unreachable::new(&e)),
            _ => RPCError::Network(NetworkError::new(&e)),
        })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc("/raft/snapshot", &SnapshotChunk::from(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}

/// An install-snapshot request whose data travels as a MessagePack binary, not as an array
/// of numbers.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotChunk {
    vote: openraft::Vote<NodeId>,
    meta: openraft::SnapshotMeta<NodeId, NodeInfo>,
    offset: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<TypeConfig>) -> Self {
        Self { vote: r.vote, meta: r.meta, offset: r.offset, data: r.data, done: r.done }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(c: SnapshotChunk) -> Self {
        Self { vote: c.vote, meta: c.meta, offset: c.offset, data: c.data, done: c.done }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_going_down_and_back_is_reported_once_each() {
        let h = PeerHealth::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(h.record(2, true, at(0)), None);
        assert_eq!(h.record(2, false, at(0)), None, "not yet: it may be a blip");
        assert_eq!(h.record(2, false, at(500)), None);
        assert_eq!(h.record(2, false, at(1000)), Some(PeerChange::WentDown));
        assert_eq!(h.record(2, false, at(1500)), None, "repeated failures stay quiet");
        assert_eq!(h.record(3, false, at(1500)), None, "per peer");
        assert_eq!(h.record(3, false, at(2600)), Some(PeerChange::WentDown));
        assert_eq!(h.record(2, true, at(3000)), Some(PeerChange::CameBack(Duration::from_secs(3))));
        assert_eq!(h.record(2, true, at(3100)), None);
    }

    #[test]
    fn a_blip_shorter_than_the_threshold_is_not_reported() {
        let h = PeerHealth::default();
        let t0 = Instant::now();
        assert_eq!(h.record(2, false, t0), None);
        assert_eq!(h.record(2, true, t0 + Duration::from_millis(300)), None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_682_245);
        assert_eq!(rfc3339(t), "2025-12-02T13:30:45Z");
    }
}
