//! `Replica`: one node's handle on the replicated database. The contract every caller uses:
//! writes that reach the leader from any node, reads at a chosen consistency level, and
//! membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use crate::app::Application;
use crate::batching::{run_batcher, run_forwarder, Forward, Pending};
use crate::error::{Error, RemoteFailure, Result};
use crate::lease::{self, LeaderContact, Lease};
use crate::log_store::LogStore;
use crate::network::{peer_key, CallError, NetworkFactory, PeerClient, PeerHealth};
use crate::state_machine::StateMachine;
use crate::types::{NodeId, NodeInfo, Proposal, ProposalOutcome, Raft};

mod reads;

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
    /// The cluster's id, named on every peer call (empty: not named, not checked).
    pub cluster_id: String,
    /// Longest a write or read barrier waits inside the replica (for a leader, a forward,
    /// an index), whatever timeout its caller passed (membership changes are not capped): keep it below the caller's own deadline (the
    /// gateway's call timeout) so that the replica's answer, not a timeout, reaches the client.
    pub max_wait: Duration,
    /// TLS of peer calls (mutual, with the node's certificate); none: plain HTTP.
    pub peer_tls: Option<crate::network::PeerTls>,
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
            cluster_id: String::new(),
            max_wait: Duration::from_secs(10),
            peer_tls: None,
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

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            MemberRole::Manager => "manager",
            MemberRole::Worker => "worker",
        })
    }
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
    /// Every member in this node's view of the membership.
    #[serde(default)]
    pub members: Vec<NodeId>,
    /// Log index of the membership config that view comes from.
    #[serde(default)]
    pub membership_index: Option<u64>,
}

/// What a membership change answers, given how it ended after `attempts` attempts. A
/// removal is idempotent in effect, and its answer must say so: an attempt may have been
/// committed while its answer was lost (a leader change, a timeout), and the retry then
/// finds the node gone; a node asked to remove itself stops serving once it has. Both are
/// the removal succeeding. A first attempt finding the node gone is `NotMember` (404).
fn removal_outcome(change: &MembershipChange, me: NodeId, attempts: u32, outcome: Result<()>) -> Result<()> {
    let MembershipChange::Remove { id } = change else { return outcome };
    match outcome {
        Err(Error::NotMember(gone)) if gone == *id && attempts > 1 => Ok(()),
        Err(Error::NodeRemoved) if *id == me && attempts > 0 => Ok(()),
        other => other,
    }
}

/// Whether the config at log index `config` is applied (so committed) when the state
/// machine is at `applied`; the initial config (no index) always is.
fn config_applied(config: Option<u64>, applied: Option<u64>) -> bool {
    config <= applied
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

/// The leader's notice to a node it removed from the membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemovedNotice {
    pub(crate) node_id: NodeId,
    pub(crate) by: String,
}
/// A membership change waits for a learner to catch up, which can take a while.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a membership change waits for a leader to be elected before giving up.
const MEMBERSHIP_LEADERLESS_GRACE: Duration = Duration::from_secs(10);
/// Pause between attempts while the cluster has no reachable leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How often waits re-check the lease (leader silence does not change openraft's metrics).
const LEASE_POLL: Duration = Duration::from_millis(20);
/// How often a node checks that it is still a member.
const MEMBERSHIP_CHECK_EVERY: Duration = Duration::from_millis(500);
/// Without a leader for this long, a node asks the others whether it is still a member.
const ASK_MEMBERSHIP_AFTER: Duration = Duration::from_secs(2);
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
    /// The last lookup of where the leader's log ends: when it started, and the answer
    /// (see [`Replica::cluster_log_end`]).
    log_end: tokio::sync::Mutex<Option<(Instant, u64)>>,
    /// Proposals waiting to be batched into the next log entry (leader only).
    batcher: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// Proposals waiting to be forwarded to the leader in one request (followers).
    forwarder: tokio::sync::mpsc::UnboundedSender<Forward>,
    /// When this node last accepted an append from a leader (see [`crate::lease`]).
    pub(crate) contact: LeaderContact,
    /// Lease window: the election timeout's lower bound.
    window: Duration,
    max_wait: Duration,
    pub(crate) cluster_id: String,
    /// Set once, when this node learns it is no longer a member.
    removed: tokio::sync::watch::Sender<bool>,
    /// Log index of the newest membership config listing this node, once one did (a node
    /// still joining is listed by none yet; +1, 0 when none).
    listed_at: AtomicU64,
    seen_member: AtomicBool,
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
        let client = PeerClient::for_cluster(key.clone(), cfg.cluster_id.clone(), cfg.peer_tls.clone());
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
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config),
            NetworkFactory { client: client.clone(), health: PeerHealth::default() },
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
        let (batcher, batch_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_batcher(raft.clone(), batch_rx));
        let (forwarder, forward_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_forwarder(client.clone(), cfg.max_wait, forward_rx));
        let replica = Self {
            inner: Arc::new(Inner {
                id: cfg.node_id,
                node: cfg.node,
                raft,
                sm,
                client,
                peer_key: key,
                membership_lock: Default::default(),
                log_end: Default::default(),
                batcher,
                forwarder,
                contact: LeaderContact::default(),
                window: Duration::from_millis(cfg.election_timeout_ms),
                max_wait: cfg.max_wait,
                cluster_id: cfg.cluster_id,
                removed: tokio::sync::watch::channel(false).0,
                listed_at: AtomicU64::new(0),
                seen_member: AtomicBool::new(false),
            }),
        };
        replica.note_membership();
        tokio::spawn(watch_membership(replica.downgrade()));
        Ok(replica)
    }

    fn downgrade(&self) -> std::sync::Weak<Inner<A>> {
        Arc::downgrade(&self.inner)
    }

    /// The leader lease as it stands now (see [`crate::lease`]).
    pub fn lease(&self) -> Lease {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow();
        lease::decide(
            self.inner.id,
            m.current_leader,
            m.millis_since_quorum_ack,
            self.inner.contact.age(),
            self.inner.window,
        )
    }

    /// The lease window (the election timeout's lower bound).
    pub fn lease_window(&self) -> Duration {
        self.inner.window
    }

    /// The leader requests may go to now: this node while it holds its lease, another node
    /// while it is heard from; none while leaderless, isolated or removed.
    pub fn serving_leader(&self) -> Option<(NodeId, NodeInfo)> {
        if self.is_removed() {
            return None;
        }
        let id = self.lease().leader(self.inner.id)?;
        let node = self.inner.raft.metrics().borrow().membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Resolves once `leader` stops being the leader requests may go to.
    async fn leader_lost(&self, leader: NodeId) {
        while self.serving_leader().map(|(id, _)| id) == Some(leader) {
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// How long a request waits for a leader to appear before answering `NoLeader`: long
    /// enough for one election, short enough to fail fast when there is no quorum.
    fn no_leader_grace(&self) -> Duration {
        self.inner.window * 2
    }

    /// True once this node learned that it is no longer a member of the cluster.
    pub fn is_removed(&self) -> bool {
        *self.inner.removed.borrow()
    }

    /// Changes to [`Replica::is_removed`].
    pub fn removed_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.removed.subscribe()
    }

    fn refuse_if_removed(&self) -> Result<()> {
        if self.is_removed() {
            Err(Error::NodeRemoved)
        } else {
            Ok(())
        }
    }

    /// Stops serving for good: logged once, Raft shut down (a removed manager that never
    /// received its removal would otherwise keep campaigning against the cluster).
    pub(crate) fn mark_removed(&self, reason: &str) {
        let first = self.inner.removed.send_if_modified(|removed| !std::mem::replace(removed, true));
        if first {
            tracing::error!(
                node_id = self.inner.id, name = %self.inner.node.name, reason,
                "this node was removed from the cluster; it no longer serves (API 503 node_removed, /ready 503 removed, peer calls refused). Stop it; to use the machine again, wipe its data directory and join anew."
            );
            let raft = self.inner.raft.clone();
            tokio::spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }

    /// Remembers that the membership lists this node (and at which config), or marks the
    /// node removed when a newer config no longer does — once that config is applied: the
    /// metrics show the latest config in the log, committed or not, and a leader removing
    /// itself appends it before its quorum has it; stopping then would leave the change
    /// half done.
    fn note_membership(&self) {
        let (listed, index, empty, applied) = {
            let rx = self.inner.raft.metrics();
            let m = rx.borrow();
            let membership = m.membership_config.membership();
            let listed = membership.nodes().any(|(id, _)| *id == self.inner.id);
            let empty = membership.nodes().next().is_none();
            let index = m.membership_config.log_id().map(|l| l.index);
            (listed, index, empty, config_applied(index, m.last_applied.map(|l| l.index)))
        };
        if listed {
            self.inner.seen_member.store(true, Ordering::Release);
            self.inner.listed_at.store(index.map(|i| i + 1).unwrap_or(1), Ordering::Release);
        } else if !empty && applied && self.inner.seen_member.load(Ordering::Acquire) {
            self.mark_removed("the membership no longer lists this node");
        }
    }

    /// Asks the other members (those answering as leader) whether this node is still a
    /// member; a leader whose membership is newer than the last one listing this node and
    /// does not list it means it was removed while it was away.
    async fn ask_membership(&self) {
        let listed_at = self.inner.listed_at.load(Ordering::Acquire);
        if listed_at == 0 {
            return;
        }
        for (id, node, _) in self.members() {
            if id == self.inner.id {
                continue;
            }
            let Ok(status) = self.peer_status_of(id, &node, Duration::from_millis(500)).await else { continue };
            let newer = status.membership_index.is_some_and(|i| i + 1 > listed_at);
            if status.state == "leader" && newer && !status.members.contains(&self.inner.id) {
                self.mark_removed(&format!("the leader {} no longer lists this node", node.name));
                return;
            }
        }
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
            members: m.membership_config.membership().nodes().map(|(id, _)| *id).collect(),
            membership_index: m.membership_config.log_id().map(|l| l.index),
        }
    }

    /// Waits until a leader requests may go to is known (see [`Replica::serving_leader`])
    /// or `deadline` passes.
    pub async fn wait_for_leader(&self, deadline: Instant) -> Result<(NodeId, NodeInfo)> {
        loop {
            self.refuse_if_removed()?;
            if let Some(l) = self.serving_leader() {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader);
            }
            tokio::time::sleep(left.min(LEASE_POLL)).await;
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
        self.until_done(Instant::now() + timeout.min(self.inner.max_wait), |leader, node| {
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
    /// leader changed) until `deadline`, after which the answer is `NoLeader`. Without a leader for [`Replica::no_leader_grace`] it answers `NoLeader`
    /// at once; an attempt whose leader loses its lease is abandoned (its idempotency key
    /// keeps a retry elsewhere safe).
    async fn until_done<T, F, Fut>(&self, deadline: Instant, attempt: F) -> Result<T>
    where
        F: FnMut(NodeId, NodeInfo) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.until_done_within(deadline, self.no_leader_grace(), attempt).await
    }

    /// [`Replica::until_done`], waiting at most `grace` for a leader whenever there is none.
    async fn until_done_within<T, F, Fut>(&self, deadline: Instant, grace: Duration, mut attempt: F) -> Result<T>
    where
        F: FnMut(NodeId, NodeInfo) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut leaderless_since: Option<Instant> = None;
        loop {
            self.refuse_if_removed()?;
            let (leader, node) = match self.serving_leader() {
                Some(l) => {
                    leaderless_since = None;
                    l
                }
                None => {
                    let since = *leaderless_since.get_or_insert_with(Instant::now);
                    self.wait_for_leader(deadline.min(since + grace)).await?
                }
            };
            let outcome = tokio::select! {
                r = attempt(leader, node) => r,
                () = self.leader_lost(leader) => Err(Error::NoLeader),
            };
            match outcome {
                Ok(done) => return Ok(done),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "attempt on the leader failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                // Still busy at the deadline: say so; anything else retryable means no leader.
                Err(e @ Error::MembershipBusy(_)) => return Err(e),
                Err(e) if e.is_retryable() => return Err(Error::NoLeader),
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls `path` on the leader's peer port; the leader answers `Result<R, RemoteFailure>`.
    async fn call_leader<Req: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        id: NodeId,
        leader: &NodeInfo,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<R> {
        match self
            .inner
            .client
            .call_to::<_, Result<R, RemoteFailure>>(Some(id), &leader.peer_addr, path, req, timeout)
            .await
        {
            Ok(r) => r.map_err(Error::from),
            Err(CallError::Unauthorized) => Err(Error::Unauthorized),
            Err(e) => Err(Error::Peer { addr: leader.peer_addr.clone(), message: e.to_string() }),
        }
    }

    /// Proposes on this node, which must be the leader, through the group-commit batcher
    /// (which stamps the leader's clock).
    /// Refused while this node does not hold its lease, and abandoned when it loses it (a
    /// leader cut off from its quorum must not acknowledge anything).
    pub(crate) async fn propose_local(&self, proposal: Proposal) -> Result<(ProposalOutcome, u64), RemoteFailure> {
        if self.lease() != Lease::Leader || self.is_removed() {
            return Err(RemoteFailure::NotLeader);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.batcher.send((proposal, tx)).map_err(|_| RemoteFailure::Other("replica stopped".into()))?;
        tokio::select! {
            r = rx => r.map_err(|_| RemoteFailure::Other("replica stopped".into()))?,
            () = self.leader_lost(self.inner.id) => Err(RemoteFailure::NotLeader),
        }
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
        let attempts = std::sync::atomic::AtomicU32::new(0);
        // A change may itself cause an election (removing or demoting the leader): wait
        // for it rather than answering no_leader for a change that was committed.
        let outcome = self
            .until_done_within(deadline, MEMBERSHIP_LEADERLESS_GRACE, |leader, node| {
                let change = change.clone();
                attempts.fetch_add(1, Ordering::Relaxed);
                async move {
                    if leader == self.inner.id {
                        return self.change_membership_local(change).await.map_err(Error::from);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.call_leader(leader, &node, "/raft/membership", &change, left).await
                }
            })
            .await;
        removal_outcome(&change, self.inner.id, attempts.into_inner(), outcome)
    }

    pub(crate) async fn change_membership_local(&self, change: MembershipChange) -> Result<(), RemoteFailure> {
        let raft = &self.inner.raft;
        let _serialised = self.inner.membership_lock.lock().await;
        let members = self.members();
        let role_of = |id: NodeId| members.iter().find(|(m, _, _)| *m == id).map(|(_, _, r)| *r);
        let map_err = |e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => RemoteFailure::NotLeader,
            // A change left by an earlier leader is still being committed: try again.
            RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(e))) => {
                RemoteFailure::MembershipBusy(e.to_string())
            }
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
                None => return Err(RemoteFailure::NotMember(id)),
                Some(MemberRole::Manager) => {}
                Some(MemberRole::Worker) => {
                    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                }
            },
            MembershipChange::Demote { id } => match role_of(id) {
                None => return Err(RemoteFailure::NotMember(id)),
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
            MembershipChange::Remove { id } => {
                match role_of(id) {
                    None => return Err(RemoteFailure::NotMember(id)),
                    Some(MemberRole::Manager) => {
                        let managers = members.iter().filter(|(_, _, r)| *r == MemberRole::Manager).count();
                        if managers <= 1 {
                            return Err(RemoteFailure::Membership("cannot remove the last manager".into()));
                        }
                        let removed =
                            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false).await;
                        // A leader removing itself may see its config applied, and stop, before
                        // the answer reaches this call: that is the change done.
                        if removed.is_err() && id == self.inner.id && self.is_removed() {
                            return Ok(());
                        }
                        removed.map_err(map_err)?;
                    }
                    Some(MemberRole::Worker) => {
                        raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                            .await
                            .map_err(map_err)?;
                    }
                }
                self.tell_removed(id, &members);
            }
        }
        Ok(())
    }

    /// Tells a node it was just removed, so it stops serving at once instead of when it
    /// notices the silence. Best effort: a node that misses it asks later.
    fn tell_removed(&self, id: NodeId, members: &[(NodeId, NodeInfo, MemberRole)]) {
        let Some((_, node, _)) = members.iter().find(|(m, _, _)| *m == id) else { return };
        let (client, addr) = (self.inner.client.clone(), node.peer_addr.clone());
        let notice = RemovedNotice { node_id: id, by: self.inner.node.name.clone() };
        tokio::spawn(async move {
            let sent = client.call_to::<_, ()>(Some(id), &addr, "/raft/removed", &notice, Duration::from_secs(2)).await;
            if let Err(e) = sent {
                tracing::info!(node = id, error = %e, "could not tell the removed node; it will find out by itself");
            }
        });
    }

    /// Asks a member for its own status over the peer port.
    pub async fn peer_status(&self, node: &NodeInfo, timeout: Duration) -> Result<MemberStatus> {
        let id = self.members().into_iter().find(|(_, n, _)| n.peer_addr == node.peer_addr).map(|(id, _, _)| id);
        match id {
            Some(id) => self.peer_status_of(id, node, timeout).await,
            None => self.peer_status_at(None, node, timeout).await,
        }
    }

    async fn peer_status_of(&self, id: NodeId, node: &NodeInfo, timeout: Duration) -> Result<MemberStatus> {
        self.peer_status_at(Some(id), node, timeout).await
    }

    async fn peer_status_at(&self, id: Option<NodeId>, node: &NodeInfo, timeout: Duration) -> Result<MemberStatus> {
        self.inner
            .client
            .call_to::<_, MemberStatus>(id, &node.peer_addr, "/raft/status", &(), timeout)
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

/// Keeps [`Replica::is_removed`] true to the membership: notes each config listing this
/// node, marks it removed when a newer one does not, and asks the others when it has
/// been without a leader for a while (a removed node often never receives its removal).
async fn watch_membership<A: Application>(inner: std::sync::Weak<Inner<A>>) {
    let mut leaderless_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(MEMBERSHIP_CHECK_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let replica = Replica { inner };
        if replica.is_removed() {
            return;
        }
        replica.note_membership();
        if replica.lease() == Lease::NoLeader {
            let since = *leaderless_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= ASK_MEMBERSHIP_AFTER {
                replica.ask_membership().await;
                leaderless_since = Some(Instant::now());
            }
        } else {
            leaderless_since = None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_counts_once_applied() {
        assert!(config_applied(None, None));
        assert!(config_applied(None, Some(3)));
        assert!(config_applied(Some(41), Some(41)));
        assert!(config_applied(Some(41), Some(50)));
        // Appended, not yet committed: a leader removing itself has it in its log first.
        assert!(!config_applied(Some(41), Some(40)));
        assert!(!config_applied(Some(41), None));
    }

    #[test]
    fn a_removal_whose_retry_finds_the_node_gone_succeeded() {
        let remove = MembershipChange::Remove { id: 4 };
        // The first attempt finding it gone: it was not a member (404).
        assert!(matches!(removal_outcome(&remove, 1, 1, Err(Error::NotMember(4))), Err(Error::NotMember(4))));
        // A retry finding it gone: an earlier attempt removed it.
        assert!(removal_outcome(&remove, 1, 2, Err(Error::NotMember(4))).is_ok());
        // A node removing itself stops serving once it has: that is the success.
        let itself = MembershipChange::Remove { id: 1 };
        assert!(removal_outcome(&itself, 1, 1, Err(Error::NodeRemoved)).is_ok());
        // Removed before any attempt, or by someone else: still an error.
        assert!(matches!(removal_outcome(&itself, 1, 0, Err(Error::NodeRemoved)), Err(Error::NodeRemoved)));
        assert!(matches!(removal_outcome(&remove, 1, 3, Err(Error::NodeRemoved)), Err(Error::NodeRemoved)));
        // Other changes and other errors pass through.
        let demote = MembershipChange::Demote { id: 4 };
        assert!(matches!(removal_outcome(&demote, 1, 2, Err(Error::NotMember(4))), Err(Error::NotMember(4))));
        assert!(matches!(removal_outcome(&remove, 1, 2, Err(Error::NoLeader)), Err(Error::NoLeader)));
    }
}
