//! The Raft log on SQLite: entries, vote and purged log id in one file.
//!
//! Group commit: `append` hands entries to a dedicated writer thread and returns; the
//! thread writes everything queued meanwhile in one transaction, commits it with
//! `synchronous=FULL` (one fsync per batch, however many client writes it holds), and only
//! then tells openraft the entries are durable. Truncate, purge and vote go through the
//! same queue, so every change reaches the file in the order openraft made it.
//!
//! The newest entries are also kept in memory from the moment they are appended, so
//! replication reads them without touching the file or decoding them again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::db::{blocking, open_ro, open_rw, SyncMode};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const META_VOTE: &str = "vote";
const META_PURGED: &str = "last_purged";
/// How many of the newest entries are kept in memory (older ones are read from the file).
const CACHE_ENTRIES: usize = 8192;

/// A change to the log file, executed in order by the writer thread.
enum Op {
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    Truncate(u64, oneshot::Sender<rusqlite::Result<()>>),
    Purge(LogId, oneshot::Sender<rusqlite::Result<()>>),
    SaveVote(Vote, oneshot::Sender<rusqlite::Result<()>>),
}

/// The Raft log store. Clones share the writer, the read connection and the cache (the
/// reader handed to replication tasks is a clone).
#[derive(Clone)]
pub struct LogStore {
    writer: mpsc::Sender<Op>,
    reader: Arc<Mutex<Connection>>,
    tail: Arc<Tail>,
}

/// The in-memory suffix of the log.
struct Tail {
    entries: Mutex<BTreeMap<u64, Entry>>,
    /// Highest index known to be on disk; only durable entries are evicted.
    flushed: AtomicU64,
}

impl Tail {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries `[start, end)` from memory, if the range starts inside the cached suffix.
    fn range(&self, start: i64, end: i64) -> Option<Vec<Entry>> {
        let cache = self.lock();
        let first = *cache.keys().next()? as i64;
        let last = *cache.keys().next_back()? as i64;
        if start < first || start > last + 1 {
            return None;
        }
        let end = end.min(last + 1).max(start);
        Some(cache.range(start as u64..end as u64).map(|(_, e)| e.clone()).collect())
    }

    fn push(&self, entries: &[Entry]) {
        let mut cache = self.lock();
        // Keep the cache contiguous: a gap (never expected) restarts it.
        if let (Some(first), Some(last)) = (entries.first(), cache.keys().next_back().copied()) {
            if first.log_id.index > last + 1 {
                cache.clear();
            }
        }
        for e in entries {
            cache.insert(e.log_id.index, e.clone());
        }
        let flushed = self.flushed.load(Ordering::Acquire);
        while cache.len() > CACHE_ENTRIES && cache.keys().next().is_some_and(|i| *i <= flushed) {
            cache.pop_first();
        }
    }
}

impl LogStore {
    /// Opens (or creates) the log file and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, crate::Error> {
        let conn = open_rw(path, SyncMode::Full)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )?;
        let reader = open_ro(path)?;
        let tail = Arc::new(Tail { entries: Mutex::new(BTreeMap::new()), flushed: AtomicU64::new(0) });
        let (tx, rx) = mpsc::channel();
        let writer_tail = tail.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(conn, rx, &writer_tail))
            .map_err(crate::Error::Io)?;
        Ok(Self { writer: tx, reader: Arc::new(Mutex::new(reader)), tail })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        err: fn(&rusqlite::Error) -> StorageIOError<u64>,
    ) -> Result<T, StorageError> {
        let conn = self.reader.clone();
        blocking(move || f(&conn.lock().unwrap_or_else(|p| p.into_inner()))).await.map_err(|e| err(&e).into())
    }

    /// Queues `op` (built around a reply channel) and waits until the writer did it.
    async fn write(
        &self,
        op: impl FnOnce(oneshot::Sender<rusqlite::Result<()>>) -> Op,
        err: fn(&rusqlite::Error) -> StorageIOError<u64>,
    ) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        let stopped =
            || -> StorageError { StorageIOError::write_logs(&std::io::Error::other("log writer stopped")).into() };
        self.writer.send(op(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(|e| err(&e).into())
    }
}

/// The writer thread: executes ops in order, merging consecutive appends into one
/// transaction.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Op>, tail: &Tail) {
    let mut next = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        match op {
            Op::Append(entries, callback) => {
                let mut batch = vec![(entries, callback)];
                while let Ok(op) = rx.try_recv() {
                    match op {
                        Op::Append(e, c) => batch.push((e, c)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let result = append_batch(&mut conn, &batch);
                tracing::trace!(
                    calls = batch.len(),
                    entries = batch.iter().map(|(e, _)| e.len()).sum::<usize>(),
                    "log batch flushed"
                );
                if result.is_ok() {
                    if let Some(last) = batch.iter().filter_map(|(e, _)| e.last()).map(|e| e.log_id.index).max() {
                        tail.flushed.fetch_max(last, Ordering::AcqRel);
                    }
                }
                for (_, callback) in batch {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    callback.log_io_completed(r);
                }
            }
            Op::Truncate(index, reply) => {
                let _ = reply.send(conn.execute("DELETE FROM log WHERE idx >= ?1", [index as i64]).map(|_| ()));
            }
            Op::Purge(log_id, reply) => {
                // The purged id is recorded in the same transaction as the deletion, so
                // `get_log_state` reports it even when the log is now empty.
                let r = (|| {
                    let tx = conn.transaction()?;
                    write_meta(&tx, META_PURGED, &log_id)?;
                    tx.execute("DELETE FROM log WHERE idx <= ?1", [log_id.index as i64])?;
                    tx.commit()
                })();
                let _ = reply.send(r);
            }
            Op::SaveVote(vote, reply) => {
                let _ = reply.send(write_meta(&conn, META_VOTE, &vote));
            }
        }
    }
}

fn append_batch(conn: &mut Connection, batch: &[(Vec<Entry>, LogFlushed<TypeConfig>)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO log (idx, entry) VALUES (?1, ?2)")?;
        for entry in batch.iter().flat_map(|(e, _)| e) {
            stmt.execute(params![entry.log_id.index as i64, encode(entry)?])?;
        }
    }
    tx.commit()
}

fn encode<T: Serialize>(v: &T) -> rusqlite::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> rusqlite::Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e)))
}

fn read_meta<T: DeserializeOwned>(conn: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    let raw: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
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
        if let Some(hit) = self.tail.range(start, end) {
            return Ok(hit);
        }
        // Older than the cached suffix: those entries are durable, read them from the file.
        self.read(
            move |conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
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
        let cached_last = self.tail.lock().values().next_back().map(|e| e.log_id);
        let (purged, stored_last) = self
            .read(
                |conn| {
                    let purged: Option<LogId> = read_meta(conn, META_PURGED)?;
                    let last: Option<Vec<u8>> = conn
                        .query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| r.get(0))
                        .optional()?;
                    Ok((purged, last.map(|b| decode::<Entry>(&b)).transpose()?.map(|e| e.log_id)))
                },
                |e| StorageIOError::read_logs(e),
            )
            .await?;
        let last = cached_last.max(stored_last).or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.write(|tx| Op::SaveVote(vote, tx), |e| StorageIOError::write_vote(e)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read(|conn| read_meta(conn, META_VOTE), |e| StorageIOError::read_vote(e)).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.tail.push(&entries);
        // Durability is reported through `callback` once the writer has committed.
        self.writer
            .send(Op::Append(entries, callback))
            .map_err(|_| StorageIOError::write_logs(&std::io::Error::other("log writer stopped")).into())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.tail.lock().retain(|i, _| *i < log_id.index);
        self.write(|tx| Op::Truncate(log_id.index, tx), |e| StorageIOError::write_logs(e)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.tail.lock().retain(|i, _| *i > log_id.index);
        self.write(|tx| Op::Purge(log_id, tx), |e| StorageIOError::write_logs(e)).await
    }
}
