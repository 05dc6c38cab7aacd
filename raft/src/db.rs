//! SQLite connection setup and the pool of read-only connections.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    stable_plans(&conn)?;
    Ok(conn)
}

/// One query plan per statement, whatever the values bound. Without it SQLite prepares a
/// cached statement again at each run when its plan looked at a bound value (a join on a
/// parameter's row, a LIMIT), and `prepare_cached` saves nothing.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
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
    stable_plans(&conn)?;
    Ok(conn)
}

/// Read-only connections to the state database, kept open for the life of the pool so
/// their page caches and prepared statements (the statement cache of `prepare_cached`)
/// serve every read after the first. WAL lets them run alongside the applying writer, each
/// seeing a committed state.
///
/// A read runs on the thread that asks for it. The reads of a request are short (a page,
/// a row, a day of readings: tens of microseconds) and a hand-off to a reader thread and
/// back cost more than that in wake-ups. A read never waits for a connection: a thread
/// holds at most one while it reads, so there are never more in use than threads reading;
/// a few idle ones per core are kept.
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// Bumped when the database file was replaced: older connections are closed.
    generation: AtomicU64,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Self {
        let max_idle = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2) * 2;
        Self { path, idle: Mutex::new(Vec::new()), max_idle, generation: AtomicU64::new(0) }
    }

    /// Runs `f` with a read-only connection on this thread. A panic in `f` unwinds to the
    /// caller; its connection is closed rather than reused.
    pub(crate) fn run<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> rusqlite::Result<T> {
        let current = self.generation.load(Ordering::Acquire);
        // Only connections of the current generation are ever put back (see `clear`).
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => open_ro(&self.path)?,
        };
        let out = f(&mut conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle && self.generation.load(Ordering::Acquire) == current {
            idle.push(conn);
        }
        Ok(out)
    }

    /// Closes every connection opened before now (the database file was replaced by a
    /// snapshot); reads in progress finish on the old file.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_join_on_a_parameter_is_prepared_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let writer = open_rw(&path, SyncMode::Normal).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
                 CREATE TABLE books (id INTEGER PRIMARY KEY, seller_id INTEGER, deleted INTEGER NOT NULL);
                 INSERT INTO users VALUES (1, 'ana');
                 INSERT INTO books VALUES (1, 1, 0), (2, 1, 0);",
            )
            .unwrap();
        let sql =
            "SELECT u.name FROM books b LEFT JOIN users u ON u.id = b.seller_id WHERE b.id = ?1 AND b.deleted = 0";
        let reads = ReadPool::new(path);
        let reprepared = |conn: &Connection| {
            for id in [1, 2, 1] {
                conn.prepare_cached(sql).unwrap().query_row([id], |r| r.get::<_, String>(0)).unwrap();
            }
            conn.prepare_cached(sql).unwrap().get_status(rusqlite::StatementStatus::RePrepare)
        };
        assert_eq!(reprepared(&writer), 0, "the writer prepared it again");
        assert_eq!(reads.run(|conn| reprepared(conn)).unwrap(), 0, "a reader prepared it again");
    }
}
