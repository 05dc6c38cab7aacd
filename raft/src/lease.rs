//! Leader lease, emulating Raft's check-quorum on openraft 0.9 (which has none): who may
//! be treated as the leader right now, from the node's own Raft view and how recently the
//! leader was heard from.
//!
//! - A leader keeps its lease while a quorum acknowledged it (openraft's
//!   `millis_since_quorum_ack`) within the window; past it, it must not acknowledge writes
//!   or linearizable reads: the other side of a partition may already have elected a new
//!   leader (followers refuse votes only until the election timeout's upper bound).
//! - A follower or learner trusts its leader while it received an append (heartbeats
//!   included) within the window; past it, it behaves as if it knew no leader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::types::NodeId;

/// What this node may assume about leadership right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This node leads, acknowledged by a quorum within the window.
    Leader,
    /// Another node leads and was heard from within the window.
    Follower(NodeId),
    /// This node believes it leads but no quorum acknowledged it within the window
    /// (isolated, or the other managers are down).
    LeaderWithoutQuorum,
    /// No leader known, or the known one was silent for longer than the window.
    NoLeader,
}

impl Lease {
    /// The leader requests may be sent to, if any.
    pub fn leader(self, me: NodeId) -> Option<NodeId> {
        match self {
            Lease::Leader => Some(me),
            Lease::Follower(id) => Some(id),
            Lease::LeaderWithoutQuorum | Lease::NoLeader => None,
        }
    }
}

/// The lease decision, pure so it is unit-tested. `leader` is the leader openraft reports;
/// `millis_since_quorum_ack` its metric (meaningful on the leader only); `contact_age` the
/// time since this node last accepted an append from a leader (None: never).
pub fn decide(
    me: NodeId,
    leader: Option<NodeId>,
    millis_since_quorum_ack: Option<u64>,
    contact_age: Option<Duration>,
    window: Duration,
) -> Lease {
    match leader {
        None => Lease::NoLeader,
        Some(l) if l == me => match millis_since_quorum_ack {
            Some(ms) if Duration::from_millis(ms) <= window => Lease::Leader,
            _ => Lease::LeaderWithoutQuorum,
        },
        Some(l) => match contact_age {
            Some(age) if age <= window => Lease::Follower(l),
            _ => Lease::NoLeader,
        },
    }
}

/// A fixed point of this process's monotonic clock, so an instant fits in an atomic.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// When this node last accepted an append or snapshot chunk from a leader.
#[derive(Debug, Default)]
pub(crate) struct LeaderContact {
    /// Nanoseconds since [`epoch`] plus one; 0 when never.
    at: AtomicU64,
}

impl LeaderContact {
    pub(crate) fn touch(&self) {
        let nanos = Instant::now().duration_since(epoch()).as_nanos() as u64;
        self.at.store(nanos.saturating_add(1), Ordering::Release);
    }

    pub(crate) fn age(&self) -> Option<Duration> {
        let at = self.at.load(Ordering::Acquire);
        if at == 0 {
            return None;
        }
        let now = Instant::now().duration_since(epoch()).as_nanos() as u64;
        Some(Duration::from_nanos(now.saturating_sub(at - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(250);

    #[test]
    fn a_leader_acknowledged_by_a_quorum_within_the_window_leads() {
        assert_eq!(decide(1, Some(1), Some(0), None, WINDOW), Lease::Leader);
        assert_eq!(decide(1, Some(1), Some(250), None, WINDOW), Lease::Leader);
    }

    #[test]
    fn a_leader_without_a_recent_quorum_ack_loses_its_lease() {
        assert_eq!(decide(1, Some(1), Some(251), None, WINDOW), Lease::LeaderWithoutQuorum);
        // Not yet acknowledged at all (just elected, or alone without its voters).
        assert_eq!(decide(1, Some(1), None, Some(Duration::ZERO), WINDOW), Lease::LeaderWithoutQuorum);
    }

    #[test]
    fn a_follower_trusts_a_leader_heard_from_within_the_window() {
        assert_eq!(decide(2, Some(1), None, Some(Duration::from_millis(40)), WINDOW), Lease::Follower(1));
        assert_eq!(decide(2, Some(1), Some(5), Some(Duration::from_millis(251)), WINDOW), Lease::NoLeader);
        assert_eq!(decide(2, Some(1), None, None, WINDOW), Lease::NoLeader, "never heard from it");
        assert_eq!(decide(2, None, None, Some(Duration::ZERO), WINDOW), Lease::NoLeader);
    }

    #[test]
    fn only_a_lease_names_a_leader_to_send_requests_to() {
        assert_eq!(Lease::Leader.leader(3), Some(3));
        assert_eq!(Lease::Follower(1).leader(3), Some(1));
        assert_eq!(Lease::LeaderWithoutQuorum.leader(3), None);
        assert_eq!(Lease::NoLeader.leader(3), None);
    }

    #[test]
    fn contact_age_grows_from_the_last_touch() {
        let c = LeaderContact::default();
        assert_eq!(c.age(), None);
        c.touch();
        assert!(c.age().unwrap() < Duration::from_secs(1));
    }
}
