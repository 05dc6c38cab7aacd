//! The Raft log on SQLite: entries, vote, committed and purged log ids in one file.
//!
//! Every append is one transaction committed with `synchronous=FULL` before openraft is
//! told the entries are durable; a batch of entries costs one fsync (group commit).
//! The newest entries are also kept in memory, so replication reads them without waiting
//! behind an append's fsync or decoding them again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{blocking, open_rw, SyncMode};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_PURGED: &str = "last_purged";

/// How many of the newest entries are kept in memory.
const CACHE_ENTRIES: usize = 8192;

/// The Raft log store. Cloning shares the same connection and cache (the reader handed
/// to replication tasks is a clone).
#[derive(Clone)]
pub struct LogStore {
    conn: Arc<Mutex<Connection>>,
    /// The newest durable entries, by index: a contiguous suffix of the log.
    cache: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<Self, crate::Error> {
        let conn = open_rw(path, SyncMode::Full)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            cache: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries `[start, end)` from memory, if all of them are cached.
    fn cached(&self, start: i64, end: i64) -> Option<Vec<Entry>> {
        let cache = self.cache();
        let first = *cache.keys().next()? as i64;
        let last = *cache.keys().next_back()? as i64;
        if start < first || start > last + 1 {
            return None;
        }
        let end = end.min(last + 1);
        Some(
            cache
                .range(start as u64..end.max(start) as u64)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        err: fn(&rusqlite::Error) -> StorageIOError<u64>,
    ) -> Result<T, StorageError> {
        let conn = self.conn.clone();
        blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| err(&e).into())
    }
}

fn encode<T: Serialize>(v: &T) -> rusqlite::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> rusqlite::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn read_meta<T: DeserializeOwned>(conn: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    let raw: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    raw.map(|b| decode(&b)).transpose()
}

fn write_meta<T: Serialize>(conn: &Connection, key: &str, value: &T) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, encode(value)?],
    )?;
    Ok(())
}

fn bounds(range: &impl RangeBounds<u64>) -> (i64, i64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s as i64,
        Bound::Excluded(s) => *s as i64 + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => (*e as i64).saturating_add(1),
        Bound::Excluded(e) => *e as i64,
        Bound::Unbounded => i64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        if let Some(hit) = self.cached(start, end) {
            return Ok(hit);
        }
        self.run(
            move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
                )?;
                let rows = stmt.query_map(params![start, end], |r| r.get::<_, Vec<u8>>(0))?;
                rows.map(|b| decode(&b?)).collect()
            },
            |e| StorageIOError::read_logs(e),
        )
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.run(
            |conn| {
                let purged: Option<LogId> = read_meta(conn, META_PURGED)?;
                let last: Option<Vec<u8>> = conn
                    .query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let last = match last {
                    Some(b) => Some(decode::<Entry>(&b)?.log_id),
                    None => purged,
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id: last,
                })
            },
            |e| StorageIOError::read_logs(e),
        )
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.run(
            move |conn| write_meta(conn, META_VOTE, &vote),
            |e| StorageIOError::write_vote(e),
        )
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.run(
            |conn| read_meta(conn, META_VOTE),
            |e| StorageIOError::read_vote(e),
        )
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.run(
            move |conn| write_meta(conn, META_COMMITTED, &committed),
            |e| StorageIOError::write(e),
        )
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.run(
            |conn| Ok(read_meta::<Option<LogId>>(conn, META_COMMITTED)?.flatten()),
            |e| StorageIOError::read(e),
        )
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let to_cache = entries.clone();
        let res = self
            .run(
                move |conn| {
                    let tx = conn.transaction()?;
                    {
                        let mut stmt = tx.prepare_cached(
                            "INSERT OR REPLACE INTO log (idx, entry) VALUES (?1, ?2)",
                        )?;
                        for entry in &entries {
                            stmt.execute(params![entry.log_id.index as i64, encode(entry)?])?;
                        }
                    }
                    tx.commit()
                },
                |e| StorageIOError::write_logs(e),
            )
            .await;
        if res.is_ok() {
            let mut cache = self.cache();
            // Keep the cache a contiguous suffix: a gap (never expected) restarts it.
            if let (Some(first), Some(last)) = (to_cache.first(), cache.keys().next_back().copied())
            {
                if first.log_id.index > last + 1 {
                    cache.clear();
                }
            }
            for e in to_cache {
                cache.insert(e.log_id.index, e);
            }
            while cache.len() > CACHE_ENTRIES {
                cache.pop_first();
            }
        }
        // Only now is the batch on disk: tell openraft, success or not.
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache().retain(|i, _| *i < log_id.index);
        self.run(
            move |conn| {
                conn.execute("DELETE FROM log WHERE idx >= ?1", [log_id.index as i64])
                    .map(|_| ())
            },
            |e| StorageIOError::write_logs(e),
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache().retain(|i, _| *i > log_id.index);
        self.run(
            move |conn| {
                // The purged id is recorded in the same transaction as the deletion, so
                // `get_log_state` reports it even when the log is now empty.
                let tx = conn.transaction()?;
                write_meta(&tx, META_PURGED, &log_id)?;
                tx.execute("DELETE FROM log WHERE idx <= ?1", [log_id.index as i64])?;
                tx.commit()
            },
            |e| StorageIOError::write_logs(e),
        )
        .await
    }
}
