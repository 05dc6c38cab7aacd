//! Group commit, on both sides of the leader.
//!
//! - On the leader, [`run_batcher`] turns every proposal queued while earlier batches were
//!   in flight into one log entry (openraft makes each entry durable before it takes the
//!   next, so one proposal per entry would cost one fsync per write).
//! - On a follower, [`run_forwarder`] sends every proposal queued while earlier forwards
//!   were in flight to the leader in one peer request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{Error, RemoteFailure};
use crate::network::{CallError, PeerClient};
use crate::types::{now_ms, NodeId, NodeInfo, Proposal, ProposalBatch, ProposalOutcome, Raft};

/// A proposal waiting for its batch, with where to send its outcome.
pub(crate) type Pending = (Proposal, oneshot::Sender<Result<(ProposalOutcome, u64), RemoteFailure>>);

/// A proposal waiting to be forwarded to `leader`.
pub(crate) type Forward = (Proposal, NodeId, NodeInfo, oneshot::Sender<Result<(ProposalOutcome, u64), Error>>);

/// Most proposals in one log entry or one forwarded request.
const MAX_BATCH: usize = 4096;
/// Batches submitted but not yet committed and applied. Holding further proposals back
/// while these are in flight is what lets them gather into the next batch.
const BATCHES_IN_FLIGHT: usize = 2;
/// Forward requests in flight from one follower to one leader. Per leader, so that
/// requests stuck on a frozen old leader never hold back forwards to the new one.
const FORWARDS_IN_FLIGHT: usize = 4;
/// Receives the first item, then everything already queued (up to [`MAX_BATCH`]).
async fn next_batch<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

pub(crate) async fn run_batcher(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // Wait for a free slot first: proposals arriving meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(pending) = next_batch(&mut rx).await else { return };
        let now = now_ms();
        let (proposals, replies): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|(mut p, reply)| {
                p.proposed_at_ms = now;
                (p, reply)
            })
            .unzip();
        let fail_all = |replies: Vec<oneshot::Sender<_>>, f: RemoteFailure| {
            for r in replies {
                let _ = r.send(Err(f.clone()));
            }
        };
        match raft.client_write_ff(ProposalBatch(proposals)).await {
            Err(e) => fail_all(replies, RemoteFailure::Other(e.to_string())),
            Ok(result) => {
                // Wait for commit + apply off the batching loop, so batches pipeline.
                tokio::spawn(async move {
                    let _permit = permit;
                    match result.await {
                        Ok(Ok(resp)) => {
                            let index = resp.log_id.index;
                            for (outcome, reply) in resp.data.into_iter().zip(replies) {
                                let _ = reply.send(Ok((outcome, index)));
                            }
                        }
                        Ok(Err(ClientWriteError::ForwardToLeader(_))) => fail_all(replies, RemoteFailure::NotLeader),
                        Ok(Err(e)) => fail_all(replies, RemoteFailure::Other(e.to_string())),
                        Err(_) => fail_all(replies, RemoteFailure::Other("raft stopped".into())),
                    }
                });
            }
        }
    }
}

/// Routes each proposal to the forwarding task of its leader (one per leader, started on
/// first use), so that each leader has its own in-flight limit.
pub(crate) async fn run_forwarder(client: PeerClient, timeout: Duration, mut rx: mpsc::UnboundedReceiver<Forward>) {
    let mut per_leader: HashMap<NodeId, mpsc::UnboundedSender<Forward>> = HashMap::new();
    while let Some(item) = rx.recv().await {
        let leader = item.1;
        let tx = per_leader.entry(leader).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(forward_to_one_leader(client.clone(), timeout, rx));
            tx
        });
        if let Err(mpsc::error::SendError(item)) = tx.send(item) {
            let _ = item.3.send(Err(Error::ShuttingDown));
        }
    }
}

/// Forwards everything queued for one leader while earlier forwards were in flight in one
/// peer request.
async fn forward_to_one_leader(client: PeerClient, timeout: Duration, mut rx: mpsc::UnboundedReceiver<Forward>) {
    let in_flight = Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(pending) = next_batch(&mut rx).await else { return };
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (leader, node) = (pending[0].1, pending[0].2.clone());
            let (proposals, replies): (Vec<_>, Vec<_>) = pending.into_iter().map(|(p, _, _, r)| (p, r)).unzip();
            let sent = proposals.len();
            let answer = client
                .call_to::<_, Vec<Result<(ProposalOutcome, u64), RemoteFailure>>>(
                    Some(leader),
                    &node.peer_addr,
                    "/raft/forward",
                    &proposals,
                    timeout,
                )
                .await;
            match answer {
                Ok(results) if results.len() == sent => {
                    for (r, reply) in results.into_iter().zip(replies) {
                        let _ = reply.send(r.map_err(Error::from));
                    }
                }
                other => {
                    // Every proposal of the request failed the same way.
                    let message = match other {
                        Err(CallError::Unauthorized) => None,
                        Err(e) => Some(e.to_string()),
                        Ok(_) => Some("the leader answered a different number of proposals".to_string()),
                    };
                    for reply in replies {
                        let err = match &message {
                            None => Error::Unauthorized,
                            Some(m) => Error::Peer { addr: node.peer_addr.clone(), message: m.clone() },
                        };
                        let _ = reply.send(Err(err));
                    }
                }
            }
        });
    }
}
