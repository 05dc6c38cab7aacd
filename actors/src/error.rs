//! The crate's error type, and the deterministic rejection that `apply` returns.

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
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The presented token is not acceptable; the message says why.
    #[error("{0}")]
    InvalidToken(String),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("the cluster has not been initialised yet")]
    NotInitialized,
    #[error("database: {0}")]
    Sqlite(#[from] panal_raft::rusqlite::Error),
    #[error("password hashing: {0}")]
    Hashing(String),
}
