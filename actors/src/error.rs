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

    /// The HTTP status of a rejection: the one table, [`status_of`].
    pub fn status(&self) -> u16 {
        status_of(&self.code)
    }
}

/// THE mapping from error codes to HTTP statuses: every error of every route, service or
/// admin, local or served by a worker on another node, gets its status here and nowhere
/// else, so one code always has one status. Unknown codes are business-rule refusals (422).
pub fn status_of(code: &str) -> u16 {
    match code {
        // The request itself is malformed: a field, the path, the query, a header, the body.
        "validation_failed" | "malformed_json" | "invalid_body" | "invalid_query" | "invalid_path"
        | "invalid_header" | "invalid_node_id" | "invalid_role" | "invalid_service" | "invalid_name"
        | "invalid_key" | "invalid_join_token" => 400,
        "invalid_token" | "invalid_credentials" | "unauthorized" => 401,
        "card_declined" | "insufficient_funds" => 402,
        "forbidden" => 403,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "username_taken"
        | "already_initialized"
        | "name_taken"
        | "out_of_stock"
        | "invalid_state"
        | "order_expired"
        | "membership"
        | "ca_rotation_in_progress"
        | "ca_changed"
        | "no_ca_rotation" => 409,
        "payload_too_large" | "value_too_large" => 413,
        "unsupported_media_type" => 415,
        "rate_limited" | "too_many_attempts" => 429,
        "headers_too_large" => 431,
        "internal" => 500,
        "no_leader"
        | "replica_lagging"
        | "peer_unavailable"
        | "shutting_down"
        | "not_initialized"
        | "service_unavailable"
        | "catching_up"
        | "mesh_connecting"
        | "starting"
        | "unreachable"
        | "overloaded"
        | "node_removed"
        | "removed"
        | "no_quorum"
        | "no_ca_key"
        | "no_manager" => 503,
        "gateway_timeout" => 504,
        // `idempotency_key_reused`, `own_listing`, `insufficient_history`, `not_a_battery`, …
        _ => 422,
    }
}

/// Seconds a client should wait before retrying, for the codes that are worth a retry.
pub fn retry_after_of(code: &str) -> Option<u32> {
    match status_of(code) {
        429 | 503 => Some(1),
        _ => None,
    }
}

/// One invalid field of a request: `{"field": "price_cents", "message": "must be positive"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Collects every bad field of a request before answering, so the client sees all of them.
/// Two kinds: a value outside its documented schema (`check`/`fail`: 400
/// `validation_failed`) and a value the schema allows that a rule it cannot express
/// refuses (`rule`: a card checksum, an expired card, an end before its start; 422
/// `rule_violated` when nothing else is wrong).
#[derive(Debug, Default)]
pub struct Validator {
    /// Each bad field in the order checked, and whether only a rule refuses it.
    fields: Vec<(FieldError, bool)>,
}

impl Validator {
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.fields.push((FieldError { field: field.into(), message: message.into() }, false));
        }
        self
    }

    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.check(false, field, message);
    }

    /// A rule the documented schema cannot express.
    pub fn rule(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.fields.push((FieldError { field: field.into(), message: message.into() }, true));
        }
        self
    }

    pub fn finish(&mut self) -> Result<(), Error> {
        let fields = std::mem::take(&mut self.fields);
        if fields.is_empty() {
            return Ok(());
        }
        let only_rules = fields.iter().all(|(_, rule)| *rule);
        let fields = fields.into_iter().map(|(f, _)| f).collect();
        Err(if only_rules { Error::RuleViolated(fields) } else { Error::Validation(fields) })
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
    /// Fields within their schema that a rule refuses, all of them.
    #[error("refused: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))]
    RuleViolated(Vec<FieldError>),
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
    /// The stable error code; its status comes from [`status_of`].
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidToken(_) => "invalid_token",
            Error::BadCredentials => "invalid_credentials",
            Error::Rejected(r) => &r.code,
            Error::Validation(_) => "validation_failed",
            Error::RuleViolated(_) => "rule_violated",
            Error::BadRequest(code, _) => code,
            Error::NotFound(_) => "not_found",
            Error::Forbidden(_) => "forbidden",
            Error::NotInitialized => "not_initialized",
            Error::Overloaded(_) => "overloaded",
            Error::TooManyAttempts { .. } => "too_many_attempts",
            Error::Replica(e) => replica_code(e),
            Error::Sqlite(_) | Error::Hashing(_) | Error::Internal(_) => "internal",
        }
    }

    /// HTTP status, stable error code and, for 503s, a `Retry-After` in seconds.
    pub fn http(&self) -> (u16, String, Option<u32>) {
        if let Error::TooManyAttempts { retry_after_secs } = self {
            return (status_of("too_many_attempts"), "too_many_attempts".into(), Some(*retry_after_secs));
        }
        let code = self.code();
        (status_of(code), code.to_string(), retry_after_of(code))
    }

    /// The invalid fields, for validation errors.
    pub fn fields(&self) -> Option<&[FieldError]> {
        match self {
            Error::Validation(f) | Error::RuleViolated(f) => Some(f),
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

/// The code of a replica error: no leader and lagging replicas are retryable 503s, a
/// reused idempotency key is the client's mistake.
pub fn replica_code(e: &panal_raft::Error) -> &'static str {
    use panal_raft::Error as E;
    match e {
        E::NoLeader => "no_leader",
        E::ReplicaLagging { .. } => "replica_lagging",
        // The client sent an index no write of this cluster produced (yet): its mistake.
        E::IndexAhead { .. } => "index_ahead",
        E::NodeRemoved => "node_removed",
        E::IdempotencyKeyReused => "idempotency_key_reused",
        E::Membership(_) | E::MembershipBusy(_) => "membership",
        E::NotMember(_) => "not_found",
        E::Peer { .. } => "peer_unavailable",
        E::ShuttingDown => "shutting_down",
        _ => "internal",
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

    #[test]
    fn one_code_has_one_status_whatever_raised_it() {
        // The same code from a rejection, a validation error and a replica error.
        let from_rejection = Error::Rejected(Rejection::new("validation_failed", "x")).http();
        let from_validator = Error::Validation(vec![]).http();
        assert_eq!((from_rejection.0, from_validator.0), (400, 400));
        let from_raft = Error::Replica(panal_raft::Error::IdempotencyKeyReused).http();
        let from_apply = Rejection::new("idempotency_key_reused", "").status();
        assert_eq!((from_raft.0, from_apply), (422, 422));
        assert_eq!(Error::Replica(panal_raft::Error::NoLeader).http(), (503, "no_leader".into(), Some(1)));
        assert_eq!(Error::BadRequest("unsupported_media_type", String::new()).http().0, 415);
    }

    #[test]
    fn rules_answer_422_unless_the_schema_is_broken_too() {
        let mut v = Validator::default();
        v.rule(false, "card_number", "checksum");
        let e = v.finish().unwrap_err();
        assert_eq!((e.http().0, e.code()), (422, "rule_violated"));
        let mut v = Validator::default();
        v.rule(false, "card_number", "checksum").check(false, "cvc", "3 or 4 digits");
        let e = v.finish().unwrap_err();
        assert_eq!((e.http().0, e.fields().map(<[_]>::len)), (400, Some(2)));
    }
}
