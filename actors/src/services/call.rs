//! One request being served by a worker: the caller and the two ways to touch state — a
//! write proposed through Raft, or a read of the local replica at the request's
//! consistency level. Every operation's handler is written against this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use panal_raft::rusqlite::Connection;

use super::{Body, Operation, RequestMeta, ServiceContext, ServiceResponse};
use crate::auth::{Identity, Role};
use crate::{propose, Error, Proposal};

/// Deadline for a write, including forwarding and retries across an election.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for a read barrier (`session` / `linearizable`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Call {
    pub ctx: Arc<ServiceContext>,
    pub meta: RequestMeta,
    /// The pool slot of the worker serving the call.
    pub slot: usize,
    /// Log index of the last write this call made (0: none), for `X-Panal-Index`.
    written: AtomicU64,
}

/// An operation's successful answer, encoded.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Body,
    pub index: Option<u64>,
}

impl Answer {
    pub fn into_response(self, node: &str) -> ServiceResponse {
        ServiceResponse {
            status: self.status,
            content_type: self.body.content_type.into(),
            body: self.body.bytes,
            node: node.into(),
            index: self.index,
            retry_after: None,
        }
    }
}

impl Call {
    pub fn new(ctx: Arc<ServiceContext>, meta: RequestMeta, slot: usize) -> Self {
        Self { ctx, meta, slot, written: AtomicU64::new(0) }
    }

    /// Serves `op` and encodes its answer; the compiler ties the handler's result to
    /// the operation's declared output.
    pub async fn run<Op: Operation>(&self, op: Op) -> Result<Answer, Error> {
        let output = op.handle(self).await?;
        let index = self.written.load(Ordering::Relaxed);
        Ok(Answer { status: Op::STATUS, body: Op::encode(output)?, index: (index > 0).then_some(index) })
    }

    /// The verified caller; requests without a token are refused.
    pub fn caller(&self) -> Result<&Identity, Error> {
        self.meta
            .identity
            .as_ref()
            .ok_or_else(|| Error::InvalidToken("missing token: send Authorization: Bearer <token>".into()))
    }

    /// The caller, who must be an admin.
    pub fn admin(&self) -> Result<&Identity, Error> {
        let who = self.caller()?;
        if who.role != Role::Admin {
            return Err(Error::Forbidden("this endpoint needs the admin role".into()));
        }
        Ok(who)
    }

    /// Proposes `proposal` with the request's idempotency key and answers the reply its
    /// command declares (`P::Reply`); a rejection becomes an error. The index is kept for
    /// the answer.
    pub async fn write<P: Proposal>(&self, proposal: P) -> Result<P::Reply, Error> {
        let out = propose(&self.ctx.replica, proposal, self.meta.idempotency_key.clone(), WRITE_TIMEOUT).await?;
        self.written.store(out.index, Ordering::Relaxed);
        Ok(out.response)
    }

    /// Reads the local replica once it satisfies the request's consistency level.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (value, _) =
            self.ctx.replica.read(self.meta.consistency, self.meta.min_index, READ_TIMEOUT, move |db| f(db)).await?;
        value
    }
}
