//! A switch that cuts a node off from its peers for a while, for partition drills without
//! root (no firewall rules): while it is on, this node's [`crate::PeerClient`] fails every
//! call at once as unreachable, and [`refuse_while_isolated`] answers every request on the
//! peer port with 503 and [`ISOLATED_HEADER`], which callers also read as unreachable (so
//! openraft backs off instead of retrying in a loop). It switches itself off at the deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Marks a peer-port answer refused because the node is isolated.
pub const ISOLATED_HEADER: &str = "x-panal-isolated";

/// Shared by every clone; cheap to check on each peer call.
#[derive(Clone, Default)]
pub struct Isolation {
    /// Deadline in nanoseconds since [`epoch`]; 0 when not isolated.
    until_nanos: Arc<AtomicU64>,
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolation").field("remaining", &self.remaining()).finish()
    }
}

/// A fixed point of this process's monotonic clock, so a deadline fits in an atomic.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Isolation {
    /// Isolates the node from now until `duration` from now (replacing any earlier deadline).
    pub fn isolate_for(&self, duration: Duration) {
        let until = (Instant::now() + duration).duration_since(epoch()).as_nanos() as u64;
        self.until_nanos.store(until.max(1), Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Ends the isolation now.
    pub fn heal(&self) {
        self.until_nanos.store(0, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// How long the isolation still lasts, if it is on.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_nanos.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = Instant::now().duration_since(epoch()).as_nanos() as u64;
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    pub fn is_isolated(&self) -> bool {
        self.remaining().is_some()
    }

    /// Resolves at the next [`Isolation::isolate_for`] or [`Isolation::heal`].
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Middleware for the peer port: refuses everything while the node is isolated.
pub async fn refuse_while_isolated(State(isolation): State<Isolation>, req: Request, next: Next) -> Response {
    if isolation.is_isolated() {
        return (StatusCode::SERVICE_UNAVAILABLE, [(ISOLATED_HEADER, "1")], "this node is isolated (chaos drill)")
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_ends_at_its_deadline_or_when_healed() {
        let iso = Isolation::default();
        assert!(!iso.is_isolated());
        iso.isolate_for(Duration::from_secs(60));
        assert!(iso.remaining().is_some_and(|r| r > Duration::from_secs(59)));
        iso.clone().heal();
        assert!(!iso.is_isolated(), "clones share the switch");
        iso.isolate_for(Duration::ZERO);
        assert!(!iso.is_isolated(), "a deadline in the past is no isolation");
    }
}
