//! One request being served by a worker: the caller and the two ways to touch state — a
//! write proposed through Raft, or a read of the local replica at the request's
//! consistency level. Every operation's handler is written against this.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use panal_raft::rusqlite::Connection;

use super::answers::AnswerKey;
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
    /// The request's read barrier was passed: the applied index only grows, so later
    /// reads of this call need not wait again.
    barrier_passed: AtomicBool,
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
        Self { ctx, meta, slot, written: AtomicU64::new(0), barrier_passed: AtomicBool::new(false) }
    }

    /// Serves `op` and encodes its answer; the compiler ties the handler's result to
    /// the operation's declared output.
    pub async fn run<Op: Operation>(&self, op: Op) -> Result<Answer, Error> {
        if Op::CACHED {
            return self.run_cached(op).await;
        }
        self.run_uncached(op).await
    }

    /// Serves a cacheable read from the answer kept at the index the read would see, or
    /// reads, encodes and keeps it when no write was applied meanwhile.
    async fn run_cached<Op: Operation>(&self, op: Op) -> Result<Answer, Error> {
        let replica = &self.ctx.replica;
        let index = replica.read_barrier(self.meta.consistency, self.meta.min_index, READ_TIMEOUT).await?;
        self.barrier_passed.store(true, Ordering::Relaxed);
        let Some(key) = AnswerKey::new(&op, self.meta.identity.as_ref()) else {
            return self.run_uncached(op).await;
        };
        if let Some((status, body)) = self.ctx.answers.get(&key, index) {
            return Ok(Answer { status, body, index: None });
        }
        let answer = self.run_uncached(op).await?;
        if answer.index.is_none() && replica.applied_index() == index {
            self.ctx.answers.keep(key, index, answer.status, &answer.body);
        }
        Ok(answer)
    }

    async fn run_uncached<Op: Operation>(&self, op: Op) -> Result<Answer, Error> {
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
        let level = match self.barrier_passed.load(Ordering::Relaxed) {
            true => panal_raft::Consistency::Stale,
            false => self.meta.consistency,
        };
        let (value, _) = self.ctx.replica.read(level, self.meta.min_index, READ_TIMEOUT, move |db| f(db)).await?;
        self.barrier_passed.store(true, Ordering::Relaxed);
        value
    }
}
