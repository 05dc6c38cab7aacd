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

/// A read job: runs on a reader thread with its connection (or the error opening it).
type ReadJob = Box<dyn FnOnce(rusqlite::Result<&mut Connection>) + Send>;

/// Reader threads for the state database, each with its own read-only connection kept
/// open for the life of the pool, so its page cache and prepared statements (the
/// statement cache of `prepare_cached`) serve every read after the first. WAL lets them
/// run alongside the applying writer, each seeing a committed state. A fixed number of
/// threads also bounds the connections (and their memory) however many requests arrive:
/// reads beyond them wait in the queue.
pub(crate) struct ReadPool {
    jobs: std::sync::mpsc::Sender<ReadJob>,
    /// Bumped when the database file was replaced: readers reopen their connection.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Reader threads: one per core, at least two, so a slow read leaves another reader free.
fn reader_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<ReadJob>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        for i in 0..reader_threads() {
            let (rx, path, generation) = (rx.clone(), path.clone(), generation.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || reader(&path, &rx, &generation));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a database reader thread");
            }
        }
        Self { jobs: tx, generation }
    }

    /// Runs `f` on a reader thread's connection. A panic in `f` is raised again here.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> rusqlite::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let out = conn.map(|c| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c))));
            let _ = tx.send(out);
        });
        if self.jobs.send(job).is_err() {
            return Err(rusqlite::Error::InvalidPath("the database readers stopped".into()));
        }
        match rx.await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(panic))) => std::panic::resume_unwind(panic),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(rusqlite::Error::InvalidPath("the database reader stopped during a read".into())),
        }
    }

    /// Makes every reader reopen its connection (after the database file was replaced by a
    /// snapshot).
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One reader thread: takes jobs until the pool is dropped, (re)opening its connection
/// when needed.
fn reader(path: &Path, jobs: &Mutex<std::sync::mpsc::Receiver<ReadJob>>, generation: &std::sync::atomic::AtomicU64) {
    let mut conn: Option<(Connection, u64)> = None;
    loop {
        // Only the waiting reader holds the lock; the others queue behind it.
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let current = generation.load(std::sync::atomic::Ordering::SeqCst);
        if conn.as_ref().is_some_and(|(_, g)| *g != current) {
            conn = None;
        }
        if conn.is_none() {
            match open_ro(path) {
                Ok(c) => conn = Some((c, current)),
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        if let Some((c, _)) = conn.as_mut() {
            job(Ok(c));
        }
    }
}

/// Runs blocking database work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
