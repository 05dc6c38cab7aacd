//! The state machine: applies committed entries to the application's SQLite database,
//! builds and installs snapshots.
//!
//! A batch of entries is applied in one transaction that also records the last applied log
//! id and the membership, so a crash can never leave them disagreeing with the data.
//! Snapshots are `VACUUM INTO` copies of the database (a consistent read transaction), kept
//! as files under `snapshots/` and installed with SQLite's backup API in one transaction.
//!
//! The state database does not fsync each apply: the log is durable, so after a power loss
//! the lost tail is applied again from the log. Should the log already be purged past what
//! survived, `open` first restores the (fsynced) current snapshot.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::{Application, ApplyContext};
use crate::db::{blocking, open_ro, open_rw, ReadPool, SyncMode};
use crate::types::{
    Entry, LogId, Proposal, ProposalOutcome, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The longest an idempotency key is remembered after its first use.
pub const MAX_IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// Expired idempotency keys are swept at every entry whose index is a multiple of this
/// (an index, not a batch boundary, so every replica sweeps at the same point).
const SWEEP_EVERY: u64 = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _raft_state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS _raft_idempotency (
    key TEXT PRIMARY KEY,
    command_hash TEXT NOT NULL,
    outcome TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);";

/// The replicated state machine. Cheap to clone; clones share the database.
pub struct StateMachine<A: Application> {
    shared: Arc<Shared<A>>,
}

impl<A: Application> Clone for StateMachine<A> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

struct Shared<A> {
    app: A,
    db_path: PathBuf,
    snapshot_dir: PathBuf,
    writer: Mutex<Connection>,
    reads: ReadPool,
    /// Serialises replacing the current snapshot (a build racing an install).
    snapshot_lock: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: String,
}

fn sql_err(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn read_state<T: serde::de::DeserializeOwned>(conn: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    let raw: Option<Vec<u8>> = conn
        .prepare_cached("SELECT value FROM _raft_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    raw.map(|b| serde_json::from_slice(&b).map_err(sql_err)).transpose()
}

fn write_state<T: Serialize>(conn: &Connection, key: &str, v: &T) -> rusqlite::Result<()> {
    let bytes = serde_json::to_vec(v).map_err(sql_err)?;
    conn.prepare_cached(
        "INSERT INTO _raft_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, bytes])?;
    Ok(())
}

fn applied_state_of(conn: &Connection) -> rusqlite::Result<(Option<LogId>, StoredMembership)> {
    let last: Option<LogId> = read_state(conn, "last_applied")?;
    let membership: StoredMembership = read_state(conn, "membership")?.unwrap_or_default();
    Ok((last, membership))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl<A: Application> StateMachine<A> {
    /// Opens (or creates) the state database in `dir` and runs the application's migrations.
    pub fn open(dir: &Path, app: A) -> Result<Self, crate::Error> {
        let db_path = dir.join("state.db");
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        let mut conn = open_rw(&db_path, SyncMode::Normal)?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        app.migrate(&tx)?;
        tx.commit()?;
        let sm = Self {
            shared: Arc::new(Shared {
                app,
                reads: ReadPool::new(db_path.clone()),
                db_path,
                snapshot_dir,
                writer: Mutex::new(conn),
                snapshot_lock: Mutex::new(()),
            }),
        };
        sm.restore_snapshot_if_ahead()?;
        Ok(sm)
    }

    /// Restores the current snapshot when it is newer than the database (the database lost
    /// its last commits in a power loss, and the log behind the snapshot is purged).
    fn restore_snapshot_if_ahead(&self) -> Result<(), crate::Error> {
        let Some(current) = self.current_snapshot_meta()? else {
            return Ok(());
        };
        let applied = {
            let conn = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            applied_state_of(&conn)?.0
        };
        if current.meta.last_log_id > applied {
            tracing::warn!(snapshot = %current.meta, "state database is behind its snapshot; restoring the snapshot");
            let data = std::fs::read(self.shared.snapshot_dir.join(&current.file))?;
            self.install_snapshot_blocking(&current.meta, data)?;
        }
        Ok(())
    }

    /// Runs a short read on a pooled read-only connection, on this thread (see [`ReadPool`]).
    pub fn read<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> Result<T, crate::Error> {
        Ok(self.shared.reads.run(f)?)
    }

    /// Runs a long read (every row of the state) on a pooled connection, off the async runtime.
    async fn read_long<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, crate::Error> {
        let this = self.clone();
        blocking(move || this.read(f)).await
    }

    /// The last applied log id as recorded in the database.
    pub async fn last_applied(&self) -> Result<Option<LogId>, crate::Error> {
        self.read(|c| applied_state_of(c).map(|(l, _)| l))?.map_err(Into::into)
    }

    /// SHA-256 over every table's rows (in a stable order), with the applied index it was
    /// taken at. Equal on two replicas that applied the same index, or they have diverged.
    pub async fn checksum(&self) -> Result<(u64, String), crate::Error> {
        self.read_long(|conn| -> rusqlite::Result<(u64, String)> {
            let tx = conn.transaction()?;
            let index = applied_state_of(&tx)?.0.map(|l| l.index).unwrap_or(0);
            let hash = checksum_tables(&tx)?;
            Ok((index, hash))
        })
        .await?
        .map_err(Into::into)
    }

    /// Writes a consistent copy of the current state to `dest` (a SQLite file).
    pub async fn backup_to(&self, dest: PathBuf) -> Result<(), crate::Error> {
        let path = self.shared.db_path.clone();
        blocking(move || -> Result<(), crate::Error> {
            let conn = open_ro(&path)?;
            if dest.exists() {
                std::fs::remove_file(&dest)?;
            }
            conn.execute("VACUUM INTO ?1", [dest.to_string_lossy()])?;
            Ok(())
        })
        .await
    }

    /// Makes `backup` (a file written by [`StateMachine::backup_to`]) the state database of
    /// a new node in `dir`, forgetting the Raft position it was taken at (applied log id
    /// and membership belong to the old cluster's log). Returns the open database for the
    /// application's own clean-up. Refuses a file that is not a state database.
    pub fn seed_from_backup(backup: &Path, dir: &Path) -> Result<Connection, crate::Error> {
        let is_state_db = |conn: &Connection| -> rusqlite::Result<bool> {
            conn.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_raft_state'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n == 1)
        };
        let not_a_backup =
            |why: String| crate::Error::Invalid(format!("{} is not a Panal backup: {why}", backup.display()));
        let source = open_ro(backup).map_err(|e| not_a_backup(e.to_string()))?;
        if !is_state_db(&source).map_err(|e| not_a_backup(e.to_string()))? {
            return Err(not_a_backup("it has no _raft_state table".into()));
        }
        std::fs::create_dir_all(dir.join("snapshots"))?;
        let db_path = dir.join("state.db");
        if db_path.exists() {
            return Err(crate::Error::Invalid(format!("{} already exists", db_path.display())));
        }
        source.execute("VACUUM INTO ?1", [db_path.to_string_lossy()])?;
        let conn = open_rw(&db_path, SyncMode::Normal)?;
        conn.execute("DELETE FROM _raft_state", [])?;
        Ok(conn)
    }

    fn apply_batch(&self, entries: Vec<Entry>) -> rusqlite::Result<Vec<Vec<ProposalOutcome>>> {
        tracing::trace!(entries = entries.len(), "applying batch");
        let mut conn = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        let (mut last, mut membership) = applied_state_of(&tx)?;
        let mut clock: i64 = read_state(&tx, "clock")?.unwrap_or(0);
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            last = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
                EntryPayload::Normal(batch) => {
                    if entry.log_id.index.is_multiple_of(SWEEP_EVERY) {
                        tx.execute("DELETE FROM _raft_idempotency WHERE expires_ms <= ?1", [clock])?;
                    }
                    let mut results = Vec::with_capacity(batch.0.len());
                    for p in batch.0 {
                        // The replicated clock never goes back, whichever leader stamped the entry.
                        clock = clock.max(p.proposed_at_ms);
                        let ctx = ApplyContext { index: entry.log_id.index, now_ms: clock };
                        results.push(self.apply_proposal(&tx, ctx, p)?);
                    }
                    results
                }
            };
            outcomes.push(outcome);
        }
        write_state(&tx, "last_applied", &last)?;
        write_state(&tx, "membership", &membership)?;
        write_state(&tx, "clock", &clock)?;
        tx.commit()?;
        Ok(outcomes)
    }

    fn apply_proposal(&self, tx: &Connection, ctx: ApplyContext, p: Proposal) -> rusqlite::Result<ProposalOutcome> {
        let index = ctx.index;
        let hash = hex::encode(Sha256::digest(p.command.as_bytes()));
        if let Some(key) = &p.idempotency_key {
            let seen: Option<(String, String)> = tx
                .prepare_cached(
                    "SELECT command_hash, outcome FROM _raft_idempotency WHERE key = ?1 AND expires_ms > ?2",
                )?
                .query_row(params![key, ctx.now_ms], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((seen_hash, outcome)) = seen {
                return Ok(if seen_hash == hash {
                    ProposalOutcome::Replayed(outcome)
                } else {
                    ProposalOutcome::KeyReused
                });
            }
        }
        tx.execute_batch("SAVEPOINT apply_entry")?;
        let result = match serde_json::from_str::<A::Command>(&p.command) {
            Err(e) => Err(format!("undecodable command: {e}")),
            Ok(cmd) => match catch_unwind(AssertUnwindSafe(|| self.shared.app.apply(tx, &ctx, cmd))) {
                Ok(Ok(resp)) => serde_json::to_string(&resp).map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(panic) => Err(format!("apply panicked: {}", panic_message(&panic))),
            },
        };
        match result {
            Ok(json) => {
                tx.execute_batch("RELEASE apply_entry")?;
                if let Some(key) = &p.idempotency_key {
                    let expires = ctx.now_ms.saturating_add(p.idempotency_ttl_ms.clamp(0, MAX_IDEMPOTENCY_TTL_MS));
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO _raft_idempotency (key, command_hash, outcome, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![key, hash, json, expires])?;
                }
                Ok(ProposalOutcome::Applied(json))
            }
            Err(message) => {
                tracing::warn!(index, %message, "apply failed; entry rolled back on every replica");
                tx.execute_batch("ROLLBACK TO apply_entry; RELEASE apply_entry")?;
                Ok(ProposalOutcome::Failed(message))
            }
        }
    }

    fn current_snapshot_meta(&self) -> std::io::Result<Option<CurrentSnapshot>> {
        match std::fs::read(self.shared.snapshot_dir.join("current.json")) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the snapshot file `tmp` the current snapshot unless a newer one is already
    /// current (a slow build must not replace a snapshot installed meanwhile).
    fn promote_snapshot(&self, tmp: &Path, meta: &SnapshotMeta) -> std::io::Result<bool> {
        let _guard = self.shared.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = &self.shared.snapshot_dir;
        let previous = self.current_snapshot_meta()?;
        if let Some(prev) = &previous {
            if prev.meta.last_log_id > meta.last_log_id {
                std::fs::remove_file(tmp)?;
                return Ok(false);
            }
        }
        let file = format!("{}.db", meta.snapshot_id);
        std::fs::File::open(tmp)?.sync_all()?;
        std::fs::rename(tmp, dir.join(&file))?;
        let pointer = serde_json::to_vec(&CurrentSnapshot { meta: meta.clone(), file: file.clone() })?;
        let pointer_tmp = dir.join("current.json.tmp");
        std::fs::write(&pointer_tmp, pointer)?;
        std::fs::File::open(&pointer_tmp)?.sync_all()?;
        std::fs::rename(&pointer_tmp, dir.join("current.json"))?;
        fsync_dir(dir)?;
        if let Some(prev) = previous {
            if prev.file != file {
                let _ = std::fs::remove_file(dir.join(prev.file));
            }
        }
        Ok(true)
    }

    fn build_snapshot_blocking(&self) -> Result<Snapshot, crate::Error> {
        let dir = &self.shared.snapshot_dir;
        let tmp = dir.join(format!("build-{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        // VACUUM INTO copies one read transaction: data, applied id and membership agree.
        let conn = open_ro(&self.shared.db_path)?;
        conn.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])?;
        drop(conn);
        let (last, membership) = applied_state_of(&open_ro(&tmp)?)?;
        let snapshot_id = match &last {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, unique_suffix()),
            None => format!("0-0-{}", unique_suffix()),
        };
        let meta = SnapshotMeta { last_log_id: last, last_membership: membership, snapshot_id };
        let data = std::fs::read(&tmp)?;
        self.promote_snapshot(&tmp, &meta)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }

    fn install_snapshot_blocking(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), crate::Error> {
        let dir = &self.shared.snapshot_dir;
        let tmp = dir.join(format!("install-{}.tmp", unique_suffix()));
        std::fs::write(&tmp, &data)?;
        // Refuse a file that is not a sane database before touching the live one.
        {
            let check = open_ro(&tmp)?;
            let ok: String = check.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
            if ok != "ok" {
                let _ = std::fs::remove_file(&tmp);
                return Err(crate::Error::Raft(format!("received snapshot fails quick_check: {ok}")));
            }
            let (last, _) = applied_state_of(&check)?;
            if last != meta.last_log_id {
                let _ = std::fs::remove_file(&tmp);
                return Err(crate::Error::Raft("received snapshot does not match its metadata".into()));
            }
        }
        {
            let mut conn = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            // One backup transaction: readers see the old state or the new one, never a mix.
            conn.restore(rusqlite::MAIN_DB, &tmp, None::<fn(rusqlite::backup::Progress)>)?;
            let tx = conn.transaction()?;
            tx.execute_batch(SCHEMA)?;
            self.shared.app.migrate(&tx)?;
            tx.commit()?;
        }
        self.shared.reads.clear();
        self.promote_snapshot(&tmp, meta)?;
        Ok(())
    }

    fn current_snapshot_blocking(&self) -> std::io::Result<Option<Snapshot>> {
        let _guard = self.shared.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cur) = self.current_snapshot_meta()? else {
            return Ok(None);
        };
        let data = std::fs::read(self.shared.snapshot_dir.join(&cur.file))?;
        Ok(Some(Snapshot { meta: cur.meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:x}{:x}", N.fetch_add(1, Ordering::Relaxed))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Hashes every table except the Raft bookkeeping (which names the local snapshot ids).
fn checksum_tables(conn: &Connection) -> rusqlite::Result<String> {
    let mut hasher = Sha256::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != '_raft_state' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in tables {
        hasher.update(table.as_bytes());
        let stmt = conn.prepare(&format!("SELECT * FROM \"{}\"", table.replace('"', "\"\"")))?;
        let n = stmt.column_count();
        let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        drop(stmt);
        let mut stmt =
            conn.prepare(&format!("SELECT * FROM \"{}\" ORDER BY {}", table.replace('"', "\"\""), order.join(",")))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            for i in 0..n {
                use rusqlite::types::ValueRef;
                match row.get_ref(i)? {
                    ValueRef::Null => hasher.update([0u8]),
                    ValueRef::Integer(v) => {
                        hasher.update([1u8]);
                        hasher.update(v.to_le_bytes());
                    }
                    ValueRef::Real(v) => {
                        hasher.update([2u8]);
                        hasher.update(v.to_le_bytes());
                    }
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        hasher.update([3u8]);
                        hasher.update((t.len() as u64).to_le_bytes());
                        hasher.update(t);
                    }
                }
            }
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

impl<A: Application> RaftSnapshotBuilder<TypeConfig> for StateMachine<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let sm = self.clone();
        blocking(move || sm.build_snapshot_blocking())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl<A: Application> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let shared = self.shared.clone();
        blocking(move || {
            let conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            applied_state_of(&conn)
        })
        .await
        .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ProposalOutcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let sm = self.clone();
        blocking(move || sm.apply_batch(entries)).await.map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sm = self.clone();
        let meta = meta.clone();
        let data = snapshot.into_inner();
        let signature = meta.signature();
        blocking(move || sm.install_snapshot_blocking(&meta, data))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let sm = self.clone();
        blocking(move || sm.current_snapshot_blocking())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}
