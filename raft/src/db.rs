//! SQLite connection setup and the pool of read-only connections.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

/// How a read-write connection syncs its commits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SyncMode {
    /// Every commit is on disk when it returns: the Raft log ("durable before
    /// acknowledged").
    Full,
    /// Commits survive a process crash but may be lost on power loss: the state
    /// database, which is rebuilt from the log (and snapshot) after such a loss.
    Normal,
}

/// Opens a read-write connection in WAL mode.
pub(crate) fn open_rw(path: &Path, sync: SyncMode) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

pub(crate) fn open_ro(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Reads are served from the OS page cache too; a small private cache per pooled
    // connection keeps the node's memory flat.
    conn.pragma_update(None, "cache_size", -1024)?;
    Ok(conn)
}

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// A small pool of read-only connections to the state database. WAL lets readers run
/// alongside the applying writer, each seeing a committed state.
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `f` on a pooled connection. Blocking: call from `spawn_blocking`.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> rusqlite::Result<T> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_ro(&self.path)?,
        };
        let out = f(&mut conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        Ok(out)
    }

    /// Drops idle connections (after the database file was replaced by a snapshot).
    pub(crate) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Runs blocking database work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
