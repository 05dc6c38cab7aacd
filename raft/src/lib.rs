//! Replicated SQLite: a small library that keeps one SQLite database identical on every
//! node of a cluster with Raft (openraft 0.9).
//!
//! It owns the Raft log store, the state machine that applies entries to SQLite, snapshots
//! (consistent SQLite copies streamed in chunks), the authenticated peer RPC over HTTP, and
//! the client contract every caller uses: writes forwarded to the leader and retried across
//! elections, reads at three consistency levels, and idempotent writes.
//!
//! It knows no domain: the application plugs in through [`Application`] (schema migrations
//! plus a deterministic `apply`).

mod app;
mod batching;
mod db;
mod error;
mod isolation;
mod lease;
mod log_store;
mod network;
mod peer_api;
mod replica;
mod state_machine;
mod types;

pub use app::{Application, ApplyContext};
pub use error::{Error, Result};
pub use isolation::{refuse_while_isolated, Isolation, ISOLATED_HEADER};
pub use lease::{decide as decide_lease, Lease};
pub use log_store::LogStore;
pub use network::{
    install_crypto_provider, peer_key, CallError, PeerClient, PeerTls, CLUSTER_HEADER, PEER_KEY_HEADER,
    TARGET_NODE_HEADER,
};
pub use peer_api::{constant_time_eq, identity_mismatch, require_peer_key};
pub use replica::{auto_idempotency_key, Consistency, MemberRole, MemberStatus, Replica, ReplicaConfig, WriteOutcome};
pub use state_machine::StateMachine;
pub use types::{NodeId, NodeInfo, Proposal, ProposalBatch, ProposalOutcome, TypeConfig};

/// Re-exported so that callers can name openraft types without a direct dependency drift.
pub use openraft;
pub use rusqlite;
