//! Failed-attempt throttling: exponential backoff per key (an account, a client address).
//!
//! After `free_failures` failures in a row a key is locked for `base`, doubling with each
//! further failure up to `max`. While any key of an attempt is locked the attempt is
//! refused before any password is checked — a correct password waits too, so guessing
//! cannot continue by trying the right one "in between". Attempts refused while locked
//! do not extend the lock (an attacker cannot keep an account locked for longer than
//! `max` past their last real guess). A key forgets its failures after `forget_after`
//! without one. Per node and in memory: see `README.md` (Login throttling) for why.
//!
//! The password check is slow, so many attempts can pass [`Throttle::begin`] before the
//! first of them fails. An [`Attempt`] therefore looks at the lock again when it ends, in
//! the same critical section that records its outcome: one that ends inside a lock set
//! meanwhile is refused like one that began there (its outcome is neither told nor
//! counted). Concurrent guesses so learn no more than sequential ones — the free
//! failures, then one per lock — while concurrent logins that succeed are never held
//! back (issue 13: a flood's queued guesses used to be answered 401 after the lock).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a throttle counts failures of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    Account(String),
    Client(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed before the first lockout.
    pub free_failures: u32,
    /// First lockout; each further failure doubles it.
    pub base: Duration,
    /// Longest lockout.
    pub max: Duration,
    /// A key with no failure for this long starts again from zero.
    pub forget_after: Duration,
    /// Keys tracked at most; beyond it the stalest are dropped (memory stays bounded).
    pub max_keys: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    entries: Mutex<HashMap<ThrottleKey, Entry>>,
}

/// An attempt admitted by [`Throttle::begin`]; its outcome is recorded when it ends. One
/// that never reaches the check (the hashing pool was full) is simply dropped.
#[derive(Debug)]
#[must_use = "an attempt's outcome is recorded by ending it"]
pub struct Attempt<'t> {
    throttle: &'t Throttle,
    keys: Vec<ThrottleKey>,
}

impl Attempt<'_> {
    /// Records a failure of every key, or `Err(wait)` when a key was locked while the
    /// attempt was being checked: then the caller refuses it and nothing is recorded.
    pub fn failed(self, now: Instant) -> Result<(), Duration> {
        let mut entries = self.throttle.entries();
        self.throttle.lock_of(&entries, &self.keys, now).map_or(Ok(()), Err)?;
        for key in &self.keys {
            let entry =
                entries.entry(key.clone()).or_insert(Entry { failures: 0, last_failure: now, locked_until: None });
            if now.saturating_duration_since(entry.last_failure) > self.throttle.config.forget_after {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            let config = &self.throttle.config;
            if entry.failures > config.free_failures {
                let doublings = (entry.failures - config.free_failures - 1).min(31);
                entry.locked_until = Some(now + config.base.saturating_mul(1u32 << doublings).min(config.max));
            }
        }
        let room_needed = entries.len() > self.throttle.config.max_keys;
        if room_needed {
            self.throttle.make_room(&mut entries, now);
        }
        Ok(())
    }

    /// Clears the attempt's account keys (client addresses keep their count: one valid
    /// account must not reset a guesser's address), or `Err(wait)` when a key was locked
    /// while the attempt was being checked: a correct password waits out a lock too.
    pub fn succeeded(self, now: Instant) -> Result<(), Duration> {
        let mut entries = self.throttle.entries();
        self.throttle.lock_of(&entries, &self.keys, now).map_or(Ok(()), Err)?;
        for key in self.keys.iter().filter(|k| matches!(k, ThrottleKey::Account(_))) {
            entries.remove(key);
        }
        Ok(())
    }
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self { config, entries: Mutex::new(HashMap::new()) }
    }

    pub fn config(&self) -> ThrottleConfig {
        self.config
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<ThrottleKey, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits an attempt, or `Err(wait)` while any of `keys` is locked.
    pub fn begin(&self, keys: &[ThrottleKey], now: Instant) -> Result<Attempt<'_>, Duration> {
        match self.lock_of(&self.entries(), keys, now) {
            Some(wait) => Err(wait),
            None => Ok(Attempt { throttle: self, keys: keys.to_vec() }),
        }
    }

    /// The longest lock still running on one of `keys`.
    fn lock_of(&self, entries: &HashMap<ThrottleKey, Entry>, keys: &[ThrottleKey], now: Instant) -> Option<Duration> {
        keys.iter()
            .filter_map(|k| entries.get(k)?.locked_until)
            .filter_map(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
            // `now` may predate a lock set by a concurrent failure: never report more than a lock lasts.
            .map(|wait| wait.min(self.config.max))
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops forgotten keys, then, if still over the limit, the ones whose last failure is
    /// oldest.
    fn make_room(&self, entries: &mut HashMap<ThrottleKey, Entry>, now: Instant) {
        let forget_after = self.config.forget_after;
        entries.retain(|_, e| {
            now.saturating_duration_since(e.last_failure) <= forget_after || e.locked_until.is_some_and(|u| u > now)
        });
        let excess = entries.len().saturating_sub(self.config.max_keys);
        if excess > 0 {
            let mut by_age: Vec<(Instant, ThrottleKey)> =
                entries.iter().map(|(k, e)| (e.last_failure, k.clone())).collect();
            by_age.sort_by_key(|(t, _)| *t);
            for (_, key) in by_age.into_iter().take(excess) {
                entries.remove(&key);
            }
        }
    }
}

/// Seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            free_failures: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
            max_keys: 4,
        }
    }

    fn account(name: &str) -> ThrottleKey {
        ThrottleKey::Account(name.into())
    }

    /// One wrong password, checked at `now`.
    fn fail(t: &Throttle, keys: &[ThrottleKey], now: Instant) {
        t.begin(keys, now).unwrap().failed(now).unwrap();
    }

    #[test]
    fn backoff_starts_after_the_free_failures_and_doubles_up_to_the_max() {
        let t = Throttle::new(config());
        let keys = [account("ada"), ThrottleKey::Client("10.0.0.1".parse().unwrap())];
        let mut now = Instant::now();
        for _ in 0..3 {
            fail(&t, &keys, now);
        }
        let mut locks = Vec::new();
        for _ in 0..6 {
            fail(&t, &keys, now);
            let lock = t.begin(&keys, now).unwrap_err();
            locks.push(lock.as_secs());
            now += lock;
        }
        assert_eq!(locks, [1, 2, 4, 8, 8, 8]);
        t.begin(&keys, now).unwrap().succeeded(now).unwrap();
    }

    #[test]
    fn a_lock_on_either_key_refuses_and_success_clears_only_the_account() {
        let t = Throttle::new(ThrottleConfig { max_keys: 100, ..config() });
        let now = Instant::now();
        let client = ThrottleKey::Client("10.0.0.2".parse().unwrap());
        // Guessing many accounts from one address locks the address for every account.
        for name in ["a", "b", "c", "d"] {
            fail(&t, &[account(name), client.clone()], now);
        }
        assert!(t.begin(&[account("e"), client.clone()], now).is_err());
        t.begin(&[account("d"), ThrottleKey::Client("10.0.0.3".parse().unwrap())], now)
            .unwrap()
            .succeeded(now)
            .unwrap();
        assert!(t.begin(&[account("e"), client.clone()], now).is_err(), "the address stays locked");
        let later = now + Duration::from_secs(1);
        t.begin(&[account("d"), client.clone()], later).unwrap().succeeded(later).unwrap();
        fail(&t, std::slice::from_ref(&client), later);
        assert_eq!(t.begin(&[client], later).unwrap_err(), Duration::from_secs(2), "the address kept its failures");
    }

    /// Issue 13: after a flood of concurrent wrong logins for one account, a later wrong
    /// login answered 401. Every attempt of the flood passes the check before the first
    /// failure is recorded (the password check is slow and queued), so each was answered
    /// with its own outcome, long after the lock was set. Now only the attempts that end
    /// before the lock tell their outcome; the others, and every later one, are refused.
    #[test]
    fn a_concurrent_flood_learns_no_more_than_sequential_attempts() {
        let t = Throttle::new(ThrottleConfig { max_keys: 1_000, ..config() });
        let keys = [account("ada"), ThrottleKey::Client("10.0.0.9".parse().unwrap())];
        let flood = 300;
        let checked = std::sync::Barrier::new(flood);
        let (told, refused) = (AtomicU32::new(0), AtomicU32::new(0));
        std::thread::scope(|scope| {
            for _ in 0..flood {
                scope.spawn(|| {
                    let attempt = t.begin(&keys, Instant::now()).expect("nothing has failed yet");
                    // Every attempt is through the check before any of them ends, as when
                    // the password checks are still queued.
                    checked.wait();
                    match attempt.failed(Instant::now()) {
                        Ok(()) => told.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                });
            }
        });
        let told = told.into_inner();
        assert_eq!(told, config().free_failures + 1, "the free failures, then the failure that locks");
        assert_eq!(refused.into_inner(), flood as u32 - told);
        assert!(t.begin(&keys, Instant::now()).is_err(), "the next wrong login is refused");
    }

    #[test]
    fn a_correct_password_checked_while_a_lock_began_waits_and_clears_nothing() {
        let t = Throttle::new(config());
        let keys = [account("ada")];
        let now = Instant::now();
        for _ in 0..3 {
            fail(&t, &keys, now);
        }
        let right = t.begin(&keys, now).unwrap();
        fail(&t, &keys, now);
        assert_eq!(right.succeeded(now), Err(Duration::from_secs(1)));
        assert!(t.begin(&keys, now).is_err(), "still locked");
        // Dropped without an outcome (the hashing pool was full): nothing recorded.
        drop(t.begin(&keys, now + Duration::from_secs(1)).unwrap());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn failures_are_forgotten_and_memory_is_bounded() {
        let t = Throttle::new(config());
        let now = Instant::now();
        for _ in 0..3 {
            fail(&t, &[account("ada")], now);
        }
        // A minute later the count starts again: three more free failures.
        let later = now + Duration::from_secs(61);
        for _ in 0..3 {
            fail(&t, &[account("ada")], later);
        }
        assert!(t.begin(&[account("ada")], later).is_ok());
        for n in 0..100 {
            fail(&t, &[account(&format!("user{n}"))], later + Duration::from_millis(n));
        }
        assert!(t.len() <= 4, "{} keys kept", t.len());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
