//! The client side of peer RPC: HTTP requests to other nodes' peer port, with pooled
//! connections, MessagePack bodies and the cluster's peer key on every request.

use std::time::Duration;

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
}

/// Body encodings of peer requests.
#[derive(Debug, Clone, Copy)]
enum Codec {
    MsgPack,
    Json,
}

/// Pooled HTTP client for peer RPC.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    key: String,
    /// While on, every call fails at once as unreachable (partition drills).
    isolation: Isolation,
}

impl PeerClient {
    pub fn new(peer_key: String) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client with static settings builds");
        Self { http, key: peer_key, isolation: Isolation::default() }
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
        self.post(Codec::MsgPack, addr, path, req, timeout).await
    }

    /// Like [`PeerClient::call`], with JSON bodies (for the node's own peer routes).
    pub async fn call_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        self.post(Codec::Json, addr, path, req, timeout).await
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        codec: Codec,
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
        let bytes = self.send(addr, path, content_type, body, timeout).await?;
        let decoded = match codec {
            Codec::MsgPack => rmp_serde::from_slice(&bytes).map_err(|e| e.to_string()),
            Codec::Json => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        };
        decoded.map_err(|e| CallError::Network(format!("undecodable reply: {e}")))
    }

    async fn send(
        &self,
        addr: &str,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, CallError> {
        if self.isolation.is_isolated() {
            return Err(CallError::Unreachable("this node is isolated (chaos drill)".into()));
        }
        let resp = self
            .http
            .post(format!("http://{addr}{path}"))
            .header(PEER_KEY_HEADER, &self.key)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable(e.to_string())
                } else {
                    CallError::Network(e.to_string())
                }
            })?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(CallError::Unauthorized);
        }
        if resp.headers().contains_key(ISOLATED_HEADER) {
            return Err(CallError::Unreachable(format!("{addr} is isolated (chaos drill)")));
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(CallError::Network(format!(
                "peer answered HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        resp.bytes().await.map_err(|e| CallError::Network(e.to_string()))
    }
}

/// Creates one [`Network`] per replication target.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(crate) client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Network {
        Network { client: self.client.clone(), target, addr: node.peer_addr.clone() }
    }
}

pub struct Network {
    client: PeerClient,
    target: NodeId,
    addr: String,
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
        let reply: Result<Resp, RaftError<NodeId, E>> =
            self.client.call(&self.addr, path, req, option.hard_ttl()).await.map_err(|e| match e {
                CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
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
