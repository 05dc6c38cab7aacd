//! The seam between the replication machinery and the application it replicates.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Facts about the entry being applied. Everything `apply` may depend on besides the
/// database and the command, so that every replica computes the same result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyContext {
    /// Raft log index of the entry.
    pub index: u64,
    /// Leader's wall clock when the command was proposed (ms since the epoch).
    pub now_ms: i64,
}

/// An application whose state lives in the replicated SQLite database.
///
/// `apply` must be deterministic: same database, same command, same context → same
/// changes and same response on every replica. It must not read clocks, random numbers or
/// anything outside the transaction.
pub trait Application: Send + Sync + 'static {
    type Command: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static;
    type Response: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static;

    /// Creates or upgrades the application's tables. Runs at every start, in one
    /// transaction, before any entry is applied; must be idempotent.
    fn migrate(&self, db: &rusqlite::Connection) -> rusqlite::Result<()>;

    /// Applies one command inside the batch's transaction. A returned SQL error (or a
    /// panic) rolls back this command's changes only and is reported to the proposer;
    /// business rejections belong in `Response`.
    fn apply(
        &self,
        db: &rusqlite::Connection,
        ctx: &ApplyContext,
        command: Self::Command,
    ) -> rusqlite::Result<Self::Response>;
}
