//! The node's one error type and its mapping to HTTP: every error leaves the node in the
//! one JSON shape `{"error": {"code", "message", "request_id"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use panal_actors::error::FieldError;
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
        let conflict = ["username_taken", "already_initialized", "name_taken"];
        if let Some(code) = conflict.iter().find(|c| **c == r.code) {
            Error::Conflict(code, r.message)
        } else {
            Error::Unprocessable(r.code, r.message)
        }
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
    /// HTTP status, stable error code and, for 503s, a Retry-After in seconds.
    fn parts(&self) -> (StatusCode, String, Option<u32>) {
        use StatusCode as S;
        match self {
            Error::BadRequest(code, _) => (S::BAD_REQUEST, (*code).into(), None),
            Error::InvalidToken(_) => (S::UNAUTHORIZED, "invalid_token".into(), None),
            Error::Unauthorized(_) => (S::UNAUTHORIZED, "unauthorized".into(), None),
            Error::Forbidden(_) => (S::FORBIDDEN, "forbidden".into(), None),
            Error::NotFound(_) => (S::NOT_FOUND, "not_found".into(), None),
            Error::Conflict(code, _) => (S::CONFLICT, (*code).into(), None),
            Error::Unprocessable(code, _) => (S::UNPROCESSABLE_ENTITY, code.clone(), None),
            Error::Unavailable(code, _) => (S::SERVICE_UNAVAILABLE, (*code).into(), Some(1)),
            Error::GatewayTimeout(_) => (S::GATEWAY_TIMEOUT, "gateway_timeout".into(), None),
            Error::Replica(e) => {
                let (status, code, retry) = panal_actors::error::replica_http(e);
                (S::from_u16(status).unwrap_or(S::INTERNAL_SERVER_ERROR), code, retry)
            }
            Error::Actors(e) => {
                let (status, code, retry) = e.http();
                (S::from_u16(status).unwrap_or(S::INTERNAL_SERVER_ERROR), code, retry)
            }
            Error::Internal(_) | Error::Fatal(_) => (S::INTERNAL_SERVER_ERROR, "internal".into(), None),
        }
    }
}

/// Builds the one error body.
pub fn error_response(status: StatusCode, code: &str, message: &str, retry_after: Option<u32>) -> Response {
    error_response_with_fields(status, code, message, retry_after, None)
}

/// The one error body, listing invalid fields for validation errors.
pub fn error_response_with_fields(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<u32>,
    fields: Option<&[FieldError]>,
) -> Response {
    let body = panal_actors::error::error_body(code, message, &current_request_id(), fields);
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, retry) = self.parts();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, request_id = %current_request_id(), "request failed");
        }
        let fields = match &self {
            Error::Actors(e) => e.fields(),
            _ => None,
        };
        error_response_with_fields(status, &code, &self.to_string(), retry, fields)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
