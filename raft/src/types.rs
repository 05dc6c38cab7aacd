//! The Raft type configuration: what an entry carries and what applying it returns.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// Wall-clock milliseconds since the epoch (the leader stamps proposals with it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Where a cluster member can be reached. Stored in the Raft membership, so every node knows
/// every other node's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// `host:port` of the peer HTTP server (Raft RPC, forwarding).
    pub peer_addr: String,
    /// `host:port` of the public API.
    pub api_addr: String,
    /// `host:port` of the actor mesh.
    pub mesh_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

/// One application command as it travels through the log. The command itself is the
/// application's JSON; the envelope adds what `apply` needs to stay deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// JSON of the application's command type.
    pub command: String,
    /// Wall-clock time at the leader when the command was proposed (ms since the epoch).
    /// `apply` uses this instead of reading the clock, so every replica computes the same.
    pub proposed_at_ms: i64,
    /// When set, a second proposal with the same key returns the first one's outcome.
    pub idempotency_key: Option<String>,
    /// How long the key is remembered (ms), capped at 24 h.
    pub idempotency_ttl_ms: i64,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal({} bytes)", self.command.len())
    }
}

/// The payload of one log entry: every proposal the leader collected while the previous
/// entry was being made durable (group commit: one entry, one fsync, many commands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProposalBatch(pub Vec<Proposal>);

impl fmt::Display for ProposalBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} proposals", self.0.len())
    }
}

/// What applying one proposal produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalOutcome {
    /// JSON of the application's response type.
    Applied(String),
    /// A retried proposal: the stored outcome of the first one.
    Replayed(String),
    /// The same idempotency key was reused for a different command.
    KeyReused,
    /// `apply` failed (SQL error or panic); the entry changed nothing, on every replica.
    Failed(String),
}

openraft::declare_raft_types!(
    /// Panal's Raft types: JSON commands in a [`Proposal`], SQLite snapshot files held in memory while sent or installed.
    pub TypeConfig:
        D = ProposalBatch,
        // One outcome per proposal of the entry; empty for blank and membership entries.
        R = Vec<ProposalOutcome>,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
