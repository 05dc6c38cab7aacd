//! Password hashing on a dedicated, bounded pool.
//!
//! An argon2id check needs 19 MiB of working memory. Hashing on tokio's blocking pool let
//! every concurrent login allocate its own block, and glibc kept the freed blocks in its
//! per-thread arenas: a login flood left a node at gigabytes. Here a fixed number of
//! threads each own one block, reused for every hash they compute, and a bounded queue
//! sits in front of them: a hash beyond it is refused at once (`Error::Overloaded`,
//! 503 with `Retry-After`) instead of waiting or allocating.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::Error;

/// Sizes of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPoolConfig {
    /// Hashing threads (each keeps one argon2 block: 19 MiB with the default parameters).
    pub threads: usize,
    /// Hashes that may wait for a thread; more are refused with `Error::Overloaded`.
    pub queue: usize,
}

/// Default thread count: the cores, at most 4 (about 80 checks/s in release builds,
/// far more than a login form needs, for at most 76 MiB of working memory).
const DEFAULT_MAX_THREADS: usize = 4;

/// How long a thread keeps its block without work.
pub const RELEASE_AFTER: Duration = Duration::from_secs(3);

/// glibc serves allocations above this from their own mapping whatever its dynamic
/// threshold (which a freed 19 MiB block would raise, keeping later blocks in an arena
/// after they are freed). Blocks get at least this capacity, so dropping one always
/// unmaps it; untouched capacity is never resident.
const ALWAYS_MAPPED_BYTES: usize = 32 * 1024 * 1024 + 4096;

impl Default for HashPoolConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { threads: cores.min(DEFAULT_MAX_THREADS), queue: 32 }
    }
}

enum Work {
    Hash {
        password: String,
    },
    /// `phc` is `None` for an unknown user: a dummy check of the same cost, so that timing
    /// does not reveal which usernames exist.
    Verify {
        password: String,
        phc: Option<String>,
    },
}

enum Done {
    Hashed(String),
    Verified(bool),
}

struct Job {
    work: Work,
    reply: tokio::sync::oneshot::Sender<Result<Done, Error>>,
}

/// Jobs waiting for a thread. Threads wait on the condition variable (not on a lock),
/// so each idle one notices its own idleness and releases its block.
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

/// A fixed set of hashing threads behind a bounded queue.
pub struct HashPool {
    queue: Arc<Queue>,
    config: HashPoolConfig,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool").field("config", &self.config).finish()
    }
}

static POOL: OnceLock<HashPool> = OnceLock::new();

/// Sets the size of the process's hashing pool. Effective only before the first hash;
/// returns false when the pool already runs (with its earlier size).
pub fn configure(config: HashPoolConfig) -> bool {
    let mut fresh = false;
    POOL.get_or_init(|| {
        fresh = true;
        HashPool::start(config)
    });
    fresh
}

/// The process's hashing pool (started with the default size unless configured).
pub fn pool() -> &'static HashPool {
    POOL.get_or_init(|| HashPool::start(HashPoolConfig::default()))
}

impl HashPool {
    pub fn start(config: HashPoolConfig) -> Self {
        let config = HashPoolConfig { threads: config.threads.max(1), queue: config.queue.max(1) };
        let queue = Arc::new(Queue { jobs: Mutex::new(VecDeque::new()), ready: Condvar::new() });
        for n in 0..config.threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("panal-hash-{n}")).spawn(move || worker(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self { queue, config }
    }

    pub fn config(&self) -> HashPoolConfig {
        self.config
    }

    async fn submit(&self, work: Work) -> Result<Done, Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let mut jobs = self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if jobs.len() >= self.config.queue {
                return Err(Error::Overloaded("too many password checks are waiting; try again shortly".into()));
            }
            jobs.push_back(Job { work, reply });
        }
        self.queue.ready.notify_one();
        answer.await.map_err(|_| Error::Internal("a password hashing thread stopped".into()))?
    }

    /// Hashes a password with argon2id (default parameters) and a random salt: a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        match self.submit(Work::Hash { password }).await? {
            Done::Hashed(phc) => Ok(phc),
            Done::Verified(_) => Err(Error::Internal("hashing pool answered a hash with a check".into())),
        }
    }

    /// Whether `password` matches the PHC string `phc`; `None` (an unknown user) costs the
    /// same and is never a match.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Error> {
        match self.submit(Work::Verify { password, phc }).await? {
            Done::Verified(ok) => Ok(ok),
            Done::Hashed(_) => Err(Error::Internal("hashing pool answered a check with a hash".into())),
        }
    }
}

fn worker(queue: &Queue) {
    // This thread's argon2 working memory, allocated on first use and kept while busy.
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            let mut jobs = queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = jobs.pop_front() {
                    break Some(job);
                }
                let (next, waited) = queue.ready.wait_timeout(jobs, RELEASE_AFTER).unwrap_or_else(|p| p.into_inner());
                jobs = next;
                if waited.timed_out() && jobs.is_empty() && !memory.is_empty() {
                    break None;
                }
            }
        };
        let Some(job) = job else {
            memory = Vec::new();
            continue;
        };
        let done = match job.work {
            Work::Hash { password } => hash_with(&mut memory, &password).map(Done::Hashed),
            Work::Verify { password, phc } => verify_with(&mut memory, &password, phc.as_deref()).map(Done::Verified),
        };
        let _ = job.reply.send(done);
    }
}

fn hashing(e: impl std::fmt::Display) -> Error {
    Error::Hashing(e.to_string())
}

/// Computes the raw hash into `out`, reusing `memory`.
fn compute(
    memory: &mut Vec<Block>,
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let blocks = params.block_count();
    if memory.len() != blocks {
        // After an idle release, or when the parameters change (never with the
        // defaults): the block is otherwise kept and reused.
        let capacity = blocks.max(ALWAYS_MAPPED_BYTES / std::mem::size_of::<Block>());
        let mut fresh = Vec::with_capacity(capacity);
        fresh.resize(blocks, Block::default());
        *memory = fresh;
    }
    argon.hash_password_into_with_memory(password, salt, out, &mut memory[..]).map_err(hashing)
}

fn hash_with(memory: &mut Vec<Block>, password: &str) -> Result<String, Error> {
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(hashing)?;
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(hashing)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(memory, &argon, &params, password.as_bytes(), salt_bytes, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(hashing)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(hashing)?),
    };
    Ok(phc.to_string())
}

/// A stored hash of a known password, used for the dummy check of unknown users.
fn dummy_phc() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut memory = Vec::new();
        hash_with(&mut memory, "panal-unknown-user").unwrap_or_default()
    })
}

fn verify_with(memory: &mut Vec<Block>, password: &str, phc: Option<&str>) -> Result<bool, Error> {
    let known = phc.is_some();
    let hash = PasswordHash::new(phc.unwrap_or_else(|| dummy_phc())).map_err(hashing)?;
    let algorithm = Algorithm::try_from(hash.algorithm).map_err(hashing)?;
    let version = Version::try_from(hash.version.unwrap_or(Version::default().into())).map_err(hashing)?;
    let params = Params::try_from(&hash).map_err(hashing)?;
    let argon = Argon2::new(algorithm, version, params.clone());
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return Err(Error::Hashing("stored password hash has no salt or no hash".into()));
    };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(hashing)?;
    let mut out = vec![0u8; expected.len()];
    compute(memory, &argon, &params, password.as_bytes(), salt_bytes, &mut out)?;
    // `Output` compares in constant time.
    Ok(known && Output::new(&out).map_err(hashing)? == expected)
}

/// Hashes on the calling thread with its own (freed) memory: for one-off hashes outside
/// the server (cluster creation), where the pool's bound does not matter.
pub fn hash_now(password: &str) -> Result<String, Error> {
    hash_with(&mut Vec::new(), password)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn pool_hashes_are_standard_phc_strings_and_verify_both_ways() {
        let pool = HashPool::start(HashPoolConfig { threads: 1, queue: 4 });
        runtime().block_on(async {
            let ours = pool.hash("correct horse".into()).await.unwrap();
            // The argon2 crate accepts ours…
            Argon2::default().verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap()).unwrap();
            // …and we accept its own.
            let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
            let theirs = Argon2::default().hash_password(b"battery staple", &salt).unwrap().to_string();
            assert!(pool.verify("battery staple".into(), Some(theirs.clone())).await.unwrap());
            assert!(!pool.verify("battery stapler".into(), Some(theirs)).await.unwrap());
            assert!(pool.verify("correct horse".into(), Some(ours.clone())).await.unwrap());
            assert!(!pool.verify("wrong".into(), Some(ours)).await.unwrap());
            // An unknown user never matches, not even with the dummy's own password.
            assert!(!pool.verify("panal-unknown-user".into(), None).await.unwrap());
        });
    }

    #[test]
    fn idle_threads_release_their_block_and_hash_again_later() {
        let pool = HashPool::start(HashPoolConfig { threads: 2, queue: 4 });
        runtime().block_on(async {
            let phc = pool.hash("before the pause".into()).await.unwrap();
            tokio::time::sleep(RELEASE_AFTER + Duration::from_millis(500)).await;
            assert!(pool.verify("before the pause".into(), Some(phc)).await.unwrap());
        });
    }

    #[test]
    fn a_full_queue_refuses_at_once_instead_of_waiting() {
        let pool = Arc::new(HashPool::start(HashPoolConfig { threads: 1, queue: 1 }));
        let outcomes = runtime().block_on(async {
            let calls = (0..6).map(|_| {
                let pool = pool.clone();
                async move { pool.verify("x".repeat(10), None).await }
            });
            futures::future::join_all(calls).await
        });
        let overloaded = outcomes.iter().filter(|o| matches!(o, Err(Error::Overloaded(_)))).count();
        let checked = outcomes.iter().filter(|o| matches!(o, Ok(false))).count();
        // One running, one queued at most; the rest are refused, and nothing else happens.
        assert!(overloaded >= 4, "{overloaded} refused");
        assert_eq!(overloaded + checked, 6);
        assert_eq!(Error::Overloaded(String::new()).http().0, 503);
    }
}
