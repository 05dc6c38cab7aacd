//! The read path of a [`Replica`]: barriers for each consistency level, waiting for an
//! index (refusing one the cluster never reached), and the read itself.

use std::time::{Duration, Instant};

use openraft::error::RaftError;
use rusqlite::Connection;

use super::{Consistency, Replica};
use crate::app::Application;
use crate::error::{Error, RemoteFailure, Result};
use crate::lease::Lease;

impl<A: Application> Replica<A> {
    /// Waits until the local replica may serve a read at `level`. `min_index` is the
    /// client's last seen write index (for `session`). Returns the applied index.
    pub async fn read_barrier(&self, level: Consistency, min_index: u64, timeout: Duration) -> Result<u64> {
        self.refuse_if_removed()?;
        let wanted = match level {
            Consistency::Stale => return Ok(self.applied_index()),
            Consistency::Session => min_index,
            Consistency::Linearizable => self.read_index(timeout).await?.max(min_index),
        };
        self.wait_applied(wanted, timeout).await
    }

    /// Waits until this replica has applied `index`, or fails with `ReplicaLagging`. An
    /// index beyond the end of the leader's log (which holds everything committed) can never
    /// be reached: refused at once with `IndexAhead`, so that nobody can make a node wait
    /// for it.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<u64> {
        self.refuse_if_removed()?;
        let applied = self.applied_index();
        if applied >= index {
            return Ok(applied);
        }
        let deadline = Instant::now() + timeout.min(self.inner.max_wait);
        let local_last = self.inner.raft.metrics().borrow().last_log_index.unwrap_or(0);
        if index > local_last {
            match self.cluster_log_end(deadline).await {
                Ok(last) if index > last => return Err(Error::IndexAhead { wanted: index, last }),
                Ok(_) => {}
                // Nobody can tell where the cluster's log ends: the index cannot be reached now.
                Err(Error::NoLeader) => {
                    return Err(Error::ReplicaLagging { applied: self.applied_index(), wanted: index })
                }
                Err(e) => return Err(e),
            }
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.inner.raft.wait(Some(timeout)).applied_index_at_least(Some(index), "read barrier").await {
            Ok(m) => Ok(m.last_applied.map(|l| l.index).unwrap_or(0)),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::ReplicaLagging { applied: self.applied_index(), wanted: index }),
        }
    }

    /// Where the leader's log ends, asked of the leader one lookup at a time: a request
    /// takes the answer of a lookup that started after it arrived (so it covers every write
    /// acknowledged before the request was sent), else makes one. A flood of far-ahead
    /// indexes costs the leader one call after another, not one call each.
    async fn cluster_log_end(&self, deadline: Instant) -> Result<u64> {
        let arrived = Instant::now();
        let Ok(mut last) = tokio::time::timeout_at(deadline.into(), self.inner.log_end.lock()).await else {
            return Err(Error::NoLeader);
        };
        if let Some((started, end)) = *last {
            if started >= arrived {
                return Ok(end);
            }
        }
        let started = Instant::now();
        let end = self.leader_last_log_index(deadline).await?;
        *last = Some((started, end));
        Ok(end)
    }

    /// Where the leader's log ends (it holds every committed entry).
    async fn leader_last_log_index(&self, deadline: Instant) -> Result<u64> {
        self.until_done(deadline, |leader, node| async move {
            if leader == self.inner.id {
                return Ok(self.inner.raft.metrics().borrow().last_log_index.unwrap_or(0));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let status = self.peer_status_of(leader, &node, left).await?;
            if status.state != "leader" {
                return Err(Error::NoLeader);
            }
            Ok(status.last_log_index)
        })
        .await
    }

    /// The index a linearizable read must wait for, confirmed by the leader with a quorum.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout.min(self.inner.max_wait);
        self.until_done(deadline, |leader, node| async move {
            if leader == self.inner.id {
                return self.read_index_local().await.map_err(Error::from);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.call_leader(leader, &node, "/raft/read-index", &(), left).await
        })
        .await
    }

    /// On the leader: the commit index, valid for a read only while the lease holds (no
    /// other leader can have been elected since a quorum last acknowledged this one).
    pub(crate) async fn read_index_local(&self) -> Result<u64, RemoteFailure> {
        if self.lease() != Lease::Leader || self.is_removed() {
            return Err(RemoteFailure::NotLeader);
        }
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
        let value = self.inner.sm.read(f)?;
        Ok((value, index))
    }
}
