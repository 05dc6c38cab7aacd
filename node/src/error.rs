//! The node's one error type: every error leaves the node in the one JSON shape
//! `{"error": {"code", "message", "request_id", "fields"?}}`. Each variant names a code;
//! the status of a code comes from the one table, `panal_actors::error::status_of`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use panal_actors::error::{retry_after_of, status_of, FieldError};
use panal_raft::Error as RaftError;

tokio::task_local! {
    /// The id of the request being served, for error bodies and logs.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("{1}")]
    Unprocessable(String, String),
    /// 503 with `Retry-After`: no instance can take the request right now.
    #[error("{1}")]
    Unavailable(&'static str, String),
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Replica(#[from] RaftError),
    #[error("{0}")]
    Actors(#[from] panal_actors::Error),
    #[error("{0}")]
    Internal(String),
    /// Start-up and CLI failures (printed, not served).
    #[error("{0}")]
    Fatal(String),
}

impl From<panal_actors::Rejection> for Error {
    fn from(r: panal_actors::Rejection) -> Self {
        Error::Actors(panal_actors::Error::Rejected(r))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("i/o: {e}"))
    }
}

impl From<panal_raft::rusqlite::Error> for Error {
    fn from(e: panal_raft::rusqlite::Error) -> Self {
        Error::Internal(format!("database: {e}"))
    }
}

impl Error {
    /// Invalid request fields, every one of them.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        Error::Actors(panal_actors::Error::Validation(fields))
    }

    /// The stable error code; its status comes from the one table.
    pub fn code(&self) -> &str {
        match self {
            Error::BadRequest(code, _) | Error::Conflict(code, _) | Error::Unavailable(code, _) => code,
            Error::Unprocessable(code, _) => code,
            Error::InvalidToken(_) => "invalid_token",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::GatewayTimeout(_) => "gateway_timeout",
            Error::Replica(e) => panal_actors::error::replica_code(e),
            Error::Actors(e) => e.code(),
            Error::Internal(_) | Error::Fatal(_) => "internal",
        }
    }
}

/// The one error body, with the status (and `Retry-After`) the one table gives `code`.
pub fn error_response(code: &str, message: &str) -> Response {
    error_response_with_fields(code, message, None)
}

/// The one error body, listing invalid fields for validation errors.
pub fn error_response_with_fields(code: &str, message: &str, fields: Option<&[FieldError]>) -> Response {
    let status = StatusCode::from_u16(status_of(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = panal_actors::error::error_body(code, message, &current_request_id(), fields);
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after_of(code) {
        resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        if status_of(code) >= 500 && status_of(code) != 503 {
            tracing::error!(error = %self, request_id = %current_request_id(), "request failed");
        }
        let fields = match &self {
            Error::Actors(e) => e.fields(),
            _ => None,
        };
        error_response_with_fields(code, &self.to_string(), fields)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
