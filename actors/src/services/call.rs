//! One request being served by a worker: the caller, the typed input, and the two ways to
//! touch state — a write proposed through Raft, or a read of the local replica at the
//! request's consistency level. Every service operation is written against this.

use std::sync::Arc;
use std::time::Duration;

use panal_raft::rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ServiceContext, ServiceRequest, ServiceResponse};
use crate::auth::{Identity, Role};
use crate::{Command, Error, Reply};

/// Deadline for a write, including forwarding and retries across an election.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for a read barrier (`session` / `linearizable`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Call {
    pub ctx: Arc<ServiceContext>,
    pub req: ServiceRequest,
}

/// What an operation answers: JSON, or text such as HTML and SVG.
#[derive(Debug)]
pub enum Output {
    Json { status: u16, body: serde_json::Value, index: Option<u64> },
    Text { content_type: &'static str, body: String },
}

impl Output {
    pub fn ok(body: impl Serialize) -> Result<Output, Error> {
        Ok(Output::Json { status: 200, body: to_json(body)?, index: None })
    }

    /// A write's answer, carrying its log index for `X-Panal-Index`.
    pub fn written(status: u16, body: impl Serialize, index: u64) -> Result<Output, Error> {
        Ok(Output::Json { status, body: to_json(body)?, index: Some(index) })
    }

    pub fn into_response(self, node: &str) -> ServiceResponse {
        match self {
            Output::Json { status, body, index } => {
                ServiceResponse { status, body, node: node.into(), index, content_type: None, retry_after: None }
            }
            Output::Text { content_type, body } => ServiceResponse {
                status: 200,
                body: serde_json::Value::String(body),
                node: node.into(),
                index: None,
                content_type: Some(content_type.into()),
                retry_after: None,
            },
        }
    }
}

fn to_json(body: impl Serialize) -> Result<serde_json::Value, Error> {
    serde_json::to_value(body).map_err(|e| Error::Internal(format!("cannot encode the answer: {e}")))
}

impl Call {
    /// The verified caller; requests without a token are refused.
    pub fn caller(&self) -> Result<&Identity, Error> {
        self.req
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

    /// The request's input, typed.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&self.req.body).map_err(|e| Error::BadRequest("invalid_body", e.to_string()))
    }

    /// Proposes `command`; a rejection becomes an error. Returns the reply and its index.
    pub async fn write(&self, command: Command) -> Result<(Reply, u64), Error> {
        let out = self.ctx.replica.write(&command, self.req.idempotency_key.clone(), WRITE_TIMEOUT).await?;
        Ok((out.response?, out.index))
    }

    /// Reads the local replica once it satisfies the request's consistency level.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (value, _) =
            self.ctx.replica.read(self.req.consistency, self.req.min_index, READ_TIMEOUT, move |db| f(db)).await?;
        value
    }
}

/// The input of an operation on one resource: its id (from the path).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Id {
    pub id: i64,
}

/// The input of a change to one resource: its id (from the path) and the request body.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ById<T> {
    pub id: i64,
    pub body: T,
}
