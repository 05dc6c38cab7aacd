//! The crate's error type, the deterministic rejection that `apply` returns, and the one
//! place where both (and the replica's errors) map to HTTP status codes.

use serde::{Deserialize, Serialize};

/// A business rule said no. Deterministic: every replica rejects the same command the
/// same way. `code` is stable and machine-readable (`username_taken`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new("not_found", what)
    }

    pub fn forbidden(what: impl Into<String>) -> Self {
        Self::new("forbidden", what)
    }

    /// The HTTP status of a rejection, by code.
    pub fn status(&self) -> u16 {
        match self.code.as_str() {
            "not_found" => 404,
            "validation_failed" => 400,
            "forbidden" => 403,
            "card_declined" | "insufficient_funds" => 402,
            "username_taken"
            | "already_initialized"
            | "name_taken"
            | "out_of_stock"
            | "invalid_state"
            | "order_expired"
            | "idempotency_key_reused" => 409,
            _ => 422,
        }
    }
}

/// One invalid field of a request: `{"field": "price_cents", "message": "must be positive"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Collects every bad field of a request before answering, so the client sees all of them.
#[derive(Debug, Default)]
pub struct Validator(Vec<FieldError>);

impl Validator {
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.0.push(FieldError { field: field.into(), message: message.into() });
        }
        self
    }

    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.check(false, field, message);
    }

    pub fn finish(&mut self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(std::mem::take(&mut self.0)))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The presented token is not acceptable; the message says why.
    #[error("{0}")]
    InvalidToken(String),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("{}", .0.message)]
    Rejected(#[from] Rejection),
    /// Request fields that fail validation, all of them.
    #[error("invalid request: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))]
    Validation(Vec<FieldError>),
    /// A malformed request that is not about one field (undecodable body, bad query).
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the cluster has not been initialised yet")]
    NotInitialized,
    #[error("{0}")]
    Replica(#[from] panal_raft::Error),
    #[error("database: {0}")]
    Sqlite(#[from] panal_raft::rusqlite::Error),
    #[error("password hashing: {0}")]
    Hashing(String),
    /// A bounded resource (the password hashing queue) is full: 503 with `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
    /// Too many failed attempts for the account or client address: 429 with `Retry-After`.
    #[error("too many failed attempts; try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u32 },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// HTTP status, stable error code and, for 503s, a `Retry-After` in seconds.
    pub fn http(&self) -> (u16, String, Option<u32>) {
        match self {
            Error::InvalidToken(_) => (401, "invalid_token".into(), None),
            Error::BadCredentials => (401, "invalid_credentials".into(), None),
            Error::Rejected(r) => (r.status(), r.code.clone(), None),
            Error::Validation(_) => (400, "validation_failed".into(), None),
            Error::BadRequest(code, _) => (400, (*code).into(), None),
            Error::NotFound(_) => (404, "not_found".into(), None),
            Error::Forbidden(_) => (403, "forbidden".into(), None),
            Error::NotInitialized => (503, "not_initialized".into(), Some(1)),
            Error::Overloaded(_) => (503, "overloaded".into(), Some(1)),
            Error::TooManyAttempts { retry_after_secs } => (429, "too_many_attempts".into(), Some(*retry_after_secs)),
            Error::Replica(e) => replica_http(e),
            Error::Sqlite(_) | Error::Hashing(_) | Error::Internal(_) => (500, "internal".into(), None),
        }
    }

    /// The invalid fields, for validation errors.
    pub fn fields(&self) -> Option<&[FieldError]> {
        match self {
            Error::Validation(f) => Some(f),
            _ => None,
        }
    }

    /// The one error body: `{"error": {"code", "message", "request_id", "fields"?}}`.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        error_body(&self.http().1, &self.to_string(), request_id, self.fields())
    }
}

/// Builds the one error body (DESIGN.md, Errors).
pub fn error_body(code: &str, message: &str, request_id: &str, fields: Option<&[FieldError]>) -> serde_json::Value {
    let mut error = serde_json::json!({ "code": code, "message": message, "request_id": request_id });
    if let Some(fields) = fields {
        error["fields"] = serde_json::json!(fields);
    }
    serde_json::json!({ "error": error })
}

/// How the replica's errors reach clients: no leader and lagging replicas are 503s with
/// `Retry-After`, a reused idempotency key is the client's mistake.
pub fn replica_http(e: &panal_raft::Error) -> (u16, String, Option<u32>) {
    use panal_raft::Error as E;
    match e {
        E::NoLeader => (503, "no_leader".into(), Some(1)),
        E::ReplicaLagging { .. } => (503, "replica_lagging".into(), Some(1)),
        // The client sent an index no write of this cluster produced (yet): its mistake.
        E::IndexAhead { .. } => (400, "index_ahead".into(), None),
        E::NodeRemoved => (503, "node_removed".into(), Some(1)),
        E::IdempotencyKeyReused => (422, "idempotency_key_reused".into(), None),
        E::Membership(_) => (409, "membership".into(), None),
        E::Peer { .. } => (503, "peer_unavailable".into(), Some(1)),
        E::ShuttingDown => (503, "shutting_down".into(), Some(1)),
        _ => (500, "internal".into(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_lists_every_field() {
        let mut v = Validator::default();
        v.check(false, "title", "required").check(true, "author", "x").check(false, "stock", "must be ≥ 0");
        let e = v.finish().unwrap_err();
        assert_eq!(e.http().0, 400);
        let body = e.body("r1");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["fields"].as_array().unwrap().len(), 2);
        assert_eq!(body["error"]["request_id"], "r1");
    }

    #[test]
    fn rejections_map_to_statuses() {
        assert_eq!(Rejection::new("out_of_stock", "").status(), 409);
        assert_eq!(Rejection::new("card_declined", "").status(), 402);
        assert_eq!(Rejection::not_found("").status(), 404);
        assert_eq!(Rejection::new("insufficient_history", "").status(), 422);
    }
}
