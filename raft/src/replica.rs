//! `Replica`: one node's handle on the replicated database. The contract every caller uses:
//! writes that reach the leader from any node, reads at a chosen consistency level, and
//! membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::app::Application;
use crate::batching::{run_batcher, run_forwarder, Forward, Pending};
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::network::{peer_key, CallError, NetworkFactory, PeerClient};
use crate::state_machine::StateMachine;
use crate::types::{NodeId, NodeInfo, Proposal, ProposalOutcome, Raft};

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub node_id: NodeId,
    pub node: NodeInfo,
    /// Directory holding `raft-log.db`, `state.db` and `snapshots/`.
    pub data_dir: PathBuf,
    pub cluster_secret: String,
    pub heartbeat_ms: u64,
    /// Election timeout lower bound; the upper bound is 20% more. openraft's leader lease
    /// equals the upper bound (followers refuse votes until it expires), so a narrow range
    /// lets the first candidate after a leader loss win instead of the second.
    pub election_timeout_ms: u64,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (for followers that lag a little).
    pub keep_after_snapshot: u64,
}

impl ReplicaConfig {
    pub fn new(node_id: NodeId, node: NodeInfo, data_dir: PathBuf, cluster_secret: String) -> Self {
        Self {
            node_id,
            node,
            data_dir,
            cluster_secret,
            heartbeat_ms: 50,
            election_timeout_ms: 250,
            snapshot_every: 5000,
            keep_after_snapshot: 1000,
        }
    }
}

/// Read consistency levels (DESIGN.md, Requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The local replica as it is.
    Stale,
    /// The local replica once it has applied at least the client's last seen index.
    #[default]
    Session,
    /// The local replica once it has applied everything committed when the read began.
    Linearizable,
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stale" => Ok(Self::Stale),
            "session" => Ok(Self::Session),
            "linearizable" => Ok(Self::Linearizable),
            other => Err(format!("unknown consistency level {other:?}: use stale, session or linearizable")),
        }
    }
}

/// A committed and applied write.
#[derive(Debug, Clone)]
pub struct WriteOutcome<R> {
    pub response: R,
    /// Log index of the entry; reads at `session` level wait for it.
    pub index: u64,
    /// True when an earlier proposal with the same idempotency key produced `response`.
    pub replayed: bool,
}

/// A member's role: managers vote, workers are learners that keep a full replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Manager,
    Worker,
}

/// One node's own view of its Raft state, as reported to `panal node ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub name: String,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

/// Membership changes, executed on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    /// Add a learner and wait until it has caught up; promote it too when `voter` and the
    /// cluster has fewer than `max_managers` managers (orchestrated bootstrap: nodes beyond
    /// the expected managers stay workers).
    Add {
        id: NodeId,
        node: NodeInfo,
        voter: bool,
        #[serde(default)]
        max_managers: Option<usize>,
    },
    Promote {
        id: NodeId,
    },
    Demote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
}

/// Failures a peer reports back for forwarded requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RemoteFailure {
    NotLeader,
    Membership(String),
    Other(String),
}

impl From<RemoteFailure> for Error {
    fn from(f: RemoteFailure) -> Self {
        match f {
            RemoteFailure::NotLeader => Error::NoLeader,
            RemoteFailure::Membership(m) => Error::Membership(m),
            RemoteFailure::Other(m) => Error::Raft(m),
        }
    }
}

/// How long a forwarded call may take before the caller gives up on that attempt.
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// A membership change waits for a learner to catch up, which can take a while.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between attempts while the cluster has no reachable leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Remembered for writes without a client key: long enough for any retry of ours.
const AUTO_KEY_TTL_MS: i64 = 10 * 60 * 1000;

/// A node's handle on the replicated database. Cheap to clone.
pub struct Replica<A: Application> {
    pub(crate) inner: Arc<Inner<A>>,
}

impl<A: Application> Clone for Replica<A> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

pub(crate) struct Inner<A: Application> {
    pub(crate) id: NodeId,
    pub(crate) node: NodeInfo,
    pub(crate) raft: Raft,
    pub(crate) sm: StateMachine<A>,
    pub(crate) client: PeerClient,
    pub(crate) peer_key: String,
    /// Serialises membership changes on the leader, so that a decision taken from the
    /// current membership (how many managers there are) still holds when it is applied.
    membership_lock: tokio::sync::Mutex<()>,
    /// Proposals waiting to be batched into the next log entry (leader only).
    batcher: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// Proposals waiting to be forwarded to the leader in one request (followers).
    forwarder: tokio::sync::mpsc::UnboundedSender<Forward>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// An idempotency key for a write whose client gave none: unique, not secret.
/// A fresh idempotency key for a write the client sent without one. Keys made here (the
/// `auto:` prefix) are kept for minutes, long enough for every retry of the same request
/// across nodes and elections; clients' own keys are kept for a day.
pub fn auto_idempotency_key() -> String {
    format!("{AUTO_KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>()))
}

const AUTO_KEY_PREFIX: &str = "auto:";

impl<A: Application> Replica<A> {
    /// Opens the stores in `cfg.data_dir` and starts Raft. A node restarted on the same
    /// directory recovers its vote, log, snapshot and applied state from it.
    pub async fn open(cfg: ReplicaConfig, app: A) -> Result<Self> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let log = LogStore::open(&cfg.data_dir.join("raft-log.db"))?;
        let sm = StateMachine::open(&cfg.data_dir, app)?;
        let key = peer_key(&cfg.cluster_secret);
        let client = PeerClient::new(key.clone());
        let raft_config = openraft::Config {
            cluster_name: "panal".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms + (cfg.election_timeout_ms / 5).max(20),
            install_snapshot_timeout: 30_000,
            snapshot_max_chunk_size: 2 * 1024 * 1024,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.keep_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Raft(e.to_string()))?;
        let raft =
            Raft::new(cfg.node_id, Arc::new(raft_config), NetworkFactory { client: client.clone() }, log, sm.clone())
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        let (batcher, batch_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_batcher(raft.clone(), batch_rx));
        let (forwarder, forward_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_forwarder(client.clone(), forward_rx));
        Ok(Self {
            inner: Arc::new(Inner {
                id: cfg.node_id,
                node: cfg.node,
                raft,
                sm,
                client,
                peer_key: key,
                membership_lock: Default::default(),
                batcher,
                forwarder,
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn node(&self) -> &NodeInfo {
        &self.inner.node
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn state_machine(&self) -> &StateMachine<A> {
        &self.inner.sm
    }

    pub fn peer_client(&self) -> &PeerClient {
        &self.inner.client
    }

    /// The key peers must present (see [`peer_key`]).
    pub fn peer_key(&self) -> &str {
        &self.inner.peer_key
    }

    /// Makes this node the only member of a new cluster. Only on a fresh data directory.
    pub async fn initialize(&self) -> Result<()> {
        let members = BTreeMap::from([(self.inner.id, self.inner.node.clone())]);
        self.inner.raft.initialize(members).await.map_err(|e| Error::Raft(e.to_string()))
    }

    pub async fn is_initialized(&self) -> Result<bool> {
        self.inner.raft.is_initialized().await.map_err(|_| Error::ShuttingDown)
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, NodeInfo> {
        self.inner.raft.metrics().borrow().clone()
    }

    pub fn applied_index(&self) -> u64 {
        self.inner.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// The current leader and its addresses, if one is known.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.inner.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Every member with its role, from the local view of the membership.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo, MemberRole)> {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| {
                let role = if voters.contains(id) { MemberRole::Manager } else { MemberRole::Worker };
                (*id, node.clone(), role)
            })
            .collect()
    }

    pub fn status(&self) -> MemberStatus {
        let m = self.metrics();
        MemberStatus {
            id: self.inner.id,
            name: self.inner.node.name.clone(),
            state: server_state_name(m.state).into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// Waits until a leader is known or `deadline` passes.
    pub async fn wait_for_leader(&self, deadline: Instant) -> Result<(NodeId, NodeInfo)> {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader);
            }
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => return Err(Error::NoLeader),
            }
        }
    }

    /// Proposes `command`, forwarding to the leader from any node and retrying across an
    /// election until `timeout`; returns once the command is committed and applied.
    ///
    /// Every attempt carries the same idempotency key (the client's, or one made here), so
    /// a retry after an ambiguous failure can never apply the command twice.
    pub async fn write(
        &self,
        command: &A::Command,
        idempotency_key: Option<String>,
        timeout: Duration,
    ) -> Result<WriteOutcome<A::Response>> {
        let key = idempotency_key.unwrap_or_else(auto_idempotency_key);
        let ttl = if key.starts_with(AUTO_KEY_PREFIX) {
            AUTO_KEY_TTL_MS
        } else {
            crate::state_machine::MAX_IDEMPOTENCY_TTL_MS
        };
        let proposal = Proposal {
            command: serde_json::to_string(command)?,
            proposed_at_ms: 0,
            idempotency_key: Some(key),
            idempotency_ttl_ms: ttl,
        };
        let (outcome, index) = self.propose(proposal, timeout).await?;
        let (json, replayed) = match outcome {
            ProposalOutcome::Applied(j) => (j, false),
            ProposalOutcome::Replayed(j) => (j, true),
            ProposalOutcome::KeyReused => return Err(Error::IdempotencyKeyReused),
            ProposalOutcome::Failed(m) => return Err(Error::ApplyFailed(m)),
        };
        Ok(WriteOutcome { response: serde_json::from_str(&json)?, index, replayed })
    }

    async fn propose(&self, proposal: Proposal, timeout: Duration) -> Result<(ProposalOutcome, u64)> {
        self.until_done(Instant::now() + timeout, |leader, node| {
            let proposal = proposal.clone();
            async move {
                if leader == self.inner.id {
                    return self.propose_local(proposal).await.map_err(Error::from);
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = self.inner.forwarder.send((proposal, leader, node, tx));
                rx.await.unwrap_or(Err(Error::ShuttingDown))
            }
        })
        .await
    }

    /// Runs `attempt` against the current leader until it succeeds or fails for good:
    /// waits for a leader, and retries retryable failures (no leader, peer unreachable,
    /// leader changed) until `deadline`, after which the answer is `NoLeader`.
    async fn until_done<T, F, Fut>(&self, deadline: Instant, mut attempt: F) -> Result<T>
    where
        F: FnMut(NodeId, NodeInfo) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            match attempt(leader, node).await {
                Ok(done) => return Ok(done),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "attempt on the leader failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) if e.is_retryable() => return Err(Error::NoLeader),
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls `path` on the leader's peer port; the leader answers `Result<R, RemoteFailure>`.
    async fn call_leader<Req: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        leader: &NodeInfo,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<R> {
        match self.inner.client.call::<_, Result<R, RemoteFailure>>(&leader.peer_addr, path, req, timeout).await {
            Ok(r) => r.map_err(Error::from),
            Err(CallError::Unauthorized) => Err(Error::Unauthorized),
            Err(e) => Err(Error::Peer { addr: leader.peer_addr.clone(), message: e.to_string() }),
        }
    }

    /// Proposes on this node, which must be the leader, through the group-commit batcher
    /// (which stamps the leader's clock).
    pub(crate) async fn propose_local(&self, proposal: Proposal) -> Result<(ProposalOutcome, u64), RemoteFailure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.batcher.send((proposal, tx)).map_err(|_| RemoteFailure::Other("replica stopped".into()))?;
        rx.await.map_err(|_| RemoteFailure::Other("replica stopped".into()))?
    }

    /// Waits until the local replica may serve a read at `level`. `min_index` is the
    /// client's last seen write index (for `session`). Returns the applied index.
    pub async fn read_barrier(&self, level: Consistency, min_index: u64, timeout: Duration) -> Result<u64> {
        let wanted = match level {
            Consistency::Stale => return Ok(self.applied_index()),
            Consistency::Session => min_index,
            Consistency::Linearizable => self.read_index(timeout).await?.max(min_index),
        };
        self.wait_applied(wanted, timeout).await
    }

    /// Waits until this replica has applied `index`, or fails with `ReplicaLagging`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<u64> {
        let applied = self.applied_index();
        if applied >= index {
            return Ok(applied);
        }
        match self.inner.raft.wait(Some(timeout)).applied_index_at_least(Some(index), "read barrier").await {
            Ok(m) => Ok(m.last_applied.map(|l| l.index).unwrap_or(0)),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::ReplicaLagging { applied: self.applied_index(), wanted: index }),
        }
    }

    /// The index a linearizable read must wait for, confirmed by the leader with a quorum.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        self.until_done(deadline, |leader, node| async move {
            if leader == self.inner.id {
                return self.read_index_local().await.map_err(Error::from);
            }
            let left = deadline.saturating_duration_since(Instant::now()).min(FORWARD_TIMEOUT);
            self.call_leader(&node, "/raft/read-index", &(), left).await
        })
        .await
    }

    pub(crate) async fn read_index_local(&self) -> Result<u64, RemoteFailure> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(_)) => Err(RemoteFailure::NotLeader),
            Err(e) => Err(RemoteFailure::Other(e.to_string())),
        }
    }

    /// Runs `f` against the local replica after the `level` barrier. Returns the result
    /// and the applied index it was read at (at least).
    pub async fn read<T: Send + 'static>(
        &self,
        level: Consistency,
        min_index: u64,
        timeout: Duration,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<(T, u64)> {
        let index = self.read_barrier(level, min_index, timeout).await?;
        let value = self.inner.sm.read(f).await?;
        Ok((value, index))
    }

    /// Adds a node: as a learner, waiting until it has caught up, then as a voter when
    /// `voter` and fewer than `max_managers` (when set) are managers. Runs on the leader
    /// (forwarded from any node).
    pub async fn add_member(&self, id: NodeId, node: NodeInfo, voter: bool, max_managers: Option<usize>) -> Result<()> {
        self.change_membership(MembershipChange::Add { id, node, voter, max_managers }).await
    }

    /// Makes a worker (learner) a manager (voter).
    pub async fn promote(&self, id: NodeId) -> Result<()> {
        self.change_membership(MembershipChange::Promote { id }).await
    }

    /// Makes a manager a worker; it keeps its replica.
    pub async fn demote(&self, id: NodeId) -> Result<()> {
        self.change_membership(MembershipChange::Demote { id }).await
    }

    /// Removes a node from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<()> {
        self.change_membership(MembershipChange::Remove { id }).await
    }

    async fn change_membership(&self, change: MembershipChange) -> Result<()> {
        let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
        self.until_done(deadline, |leader, node| {
            let change = change.clone();
            async move {
                if leader == self.inner.id {
                    return self.change_membership_local(change).await.map_err(Error::from);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                self.call_leader(&node, "/raft/membership", &change, left).await
            }
        })
        .await
    }

    pub(crate) async fn change_membership_local(&self, change: MembershipChange) -> Result<(), RemoteFailure> {
        let raft = &self.inner.raft;
        let _serialised = self.inner.membership_lock.lock().await;
        let members = self.members();
        let role_of = |id: NodeId| members.iter().find(|(m, _, _)| *m == id).map(|(_, _, r)| *r);
        let map_err = |e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => RemoteFailure::NotLeader,
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => RemoteFailure::Membership(e.to_string()),
            e => RemoteFailure::Other(e.to_string()),
        };
        match change {
            MembershipChange::Add { id, node, voter, max_managers } => {
                if role_of(id) == Some(MemberRole::Manager) {
                    return Ok(());
                }
                let managers = members.iter().filter(|(_, _, r)| *r == MemberRole::Manager).count();
                raft.add_learner(id, node, true).await.map_err(map_err)?;
                if voter && max_managers.is_none_or(|max| managers < max) {
                    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                }
            }
            MembershipChange::Promote { id } => match role_of(id) {
                None => return Err(RemoteFailure::Membership(format!("node {id} is not a member"))),
                Some(MemberRole::Manager) => {}
                Some(MemberRole::Worker) => {
                    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                }
            },
            MembershipChange::Demote { id } => match role_of(id) {
                None => return Err(RemoteFailure::Membership(format!("node {id} is not a member"))),
                Some(MemberRole::Worker) => {}
                Some(MemberRole::Manager) => {
                    let managers = members.iter().filter(|(_, _, r)| *r == MemberRole::Manager).count();
                    if managers <= 1 {
                        return Err(RemoteFailure::Membership("cannot demote the last manager".into()));
                    }
                    raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                        .await
                        .map_err(map_err)?;
                }
            },
            MembershipChange::Remove { id } => match role_of(id) {
                None => return Err(RemoteFailure::Membership(format!("node {id} is not a member"))),
                Some(MemberRole::Manager) => {
                    let managers = members.iter().filter(|(_, _, r)| *r == MemberRole::Manager).count();
                    if managers <= 1 {
                        return Err(RemoteFailure::Membership("cannot remove the last manager".into()));
                    }
                    raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                }
                Some(MemberRole::Worker) => {
                    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                }
            },
        }
        Ok(())
    }

    /// Asks a member for its own status over the peer port.
    pub async fn peer_status(&self, node: &NodeInfo, timeout: Duration) -> Result<MemberStatus> {
        self.inner
            .client
            .call::<_, MemberStatus>(&node.peer_addr, "/raft/status", &(), timeout)
            .await
            .map_err(|e| Error::Peer { addr: node.peer_addr.clone(), message: e.to_string() })
    }

    /// Builds a snapshot now and purges the log behind it (subject to the keep setting).
    pub async fn snapshot_now(&self) -> Result<u64> {
        let before = self.metrics().snapshot.map(|l| l.index);
        self.inner.raft.trigger().snapshot().await.map_err(|e| Error::Raft(e.to_string()))?;
        let target = self.applied_index();
        let m = self
            .inner
            .raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(
                |m| m.snapshot.map(|l| l.index) != before && m.snapshot.map(|l| l.index).unwrap_or(0) >= target.min(1),
                "snapshot",
            )
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(m.snapshot.map(|l| l.index).unwrap_or(0))
    }

    /// Builds a snapshot and purges the log it covers, so that every node joining later
    /// starts from the snapshot. Needed when the state did not come from the log (a
    /// cluster restored from a backup): replaying the log alone would miss it.
    pub async fn snapshot_and_purge(&self) -> Result<u64> {
        let index = self.snapshot_now().await?;
        self.inner.raft.trigger().purge_log(index).await.map_err(|e| Error::Raft(e.to_string()))?;
        self.inner
            .raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.purged.map(|l| l.index) >= Some(index), "log purge")
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(index)
    }

    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
    }
}

fn server_state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}
