//! Failed-attempt throttling: exponential backoff per key (an account, a client address).
//!
//! After `free_failures` failures in a row a key is locked for `base`, doubling with each
//! further failure up to `max`. While any key of an attempt is locked the attempt is
//! refused before any password is checked — a correct password waits too, so guessing
//! cannot continue by trying the right one "in between". Attempts refused while locked
//! do not extend the lock (an attacker cannot keep an account locked for longer than
//! `max` past their last real guess). A key forgets its failures after `forget_after`
//! without one. Per node and in memory: see `README.md` (Login throttling) for why.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
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

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self { config, entries: Mutex::new(HashMap::new()) }
    }

    pub fn config(&self) -> ThrottleConfig {
        self.config
    }

    /// `Err(wait)` while any of `keys` is locked.
    pub fn check(&self, keys: &[ThrottleKey], now: Instant) -> Result<(), Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| entries.get(k)?.locked_until)
            .filter_map(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
            // `now` may predate a lock set by a concurrent failure: never report more than a lock lasts.
            .map(|wait| wait.min(self.config.max));
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Records a failure of every key; returns the longest lock it started, if any.
    pub fn failure(&self, keys: &[ThrottleKey], now: Instant) -> Option<Duration> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() + keys.len() > self.config.max_keys {
            self.make_room(&mut entries, now, keys.len());
        }
        let mut longest = None;
        for key in keys {
            let entry =
                entries.entry(key.clone()).or_insert(Entry { failures: 0, last_failure: now, locked_until: None });
            if now.saturating_duration_since(entry.last_failure) > self.config.forget_after {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            if entry.failures > self.config.free_failures {
                let doublings = (entry.failures - self.config.free_failures - 1).min(31);
                let lock = self.config.base.saturating_mul(1u32 << doublings).min(self.config.max);
                entry.locked_until = Some(now + lock);
                longest = longest.max(Some(lock));
            }
        }
        longest
    }

    /// A successful attempt clears `keys` (the account's count; never pass the client
    /// address here, or one valid account would reset a guesser's address).
    pub fn success(&self, keys: &[ThrottleKey]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            entries.remove(key);
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops forgotten keys, then, if still full, the ones whose last failure is oldest.
    fn make_room(&self, entries: &mut HashMap<ThrottleKey, Entry>, now: Instant, needed: usize) {
        let forget_after = self.config.forget_after;
        entries.retain(|_, e| {
            now.saturating_duration_since(e.last_failure) <= forget_after || e.locked_until.is_some_and(|u| u > now)
        });
        let excess = (entries.len() + needed).saturating_sub(self.config.max_keys);
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

    #[test]
    fn backoff_starts_after_the_free_failures_and_doubles_up_to_the_max() {
        let t = Throttle::new(config());
        let keys = [account("ada"), ThrottleKey::Client("10.0.0.1".parse().unwrap())];
        let mut now = Instant::now();
        for _ in 0..3 {
            t.check(&keys, now).unwrap();
            assert_eq!(t.failure(&keys, now), None);
        }
        let mut locks = Vec::new();
        for _ in 0..6 {
            let lock = t.failure(&keys, now).unwrap();
            assert_eq!(t.check(&keys, now), Err(lock));
            locks.push(lock.as_secs());
            now += lock;
            t.check(&keys, now).unwrap();
        }
        assert_eq!(locks, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn a_lock_on_either_key_refuses_and_success_clears_only_what_it_is_given() {
        let t = Throttle::new(ThrottleConfig { max_keys: 100, ..config() });
        let now = Instant::now();
        let client = ThrottleKey::Client("10.0.0.2".parse().unwrap());
        // Guessing many accounts from one address locks the address for every account.
        for name in ["a", "b", "c", "d"] {
            t.failure(&[account(name), client.clone()], now);
        }
        assert!(t.check(&[account("e"), client.clone()], now).is_err());
        t.check(&[account("e"), ThrottleKey::Client("10.0.0.3".parse().unwrap())], now).unwrap();
        t.success(&[account("e")]);
        assert!(t.check(&[account("e"), client], now).is_err(), "the address stays locked");
    }

    #[test]
    fn failures_are_forgotten_and_memory_is_bounded() {
        let t = Throttle::new(config());
        let now = Instant::now();
        for _ in 0..3 {
            t.failure(&[account("ada")], now);
        }
        // A minute later the count starts again: three more free failures.
        let later = now + Duration::from_secs(61);
        for _ in 0..3 {
            assert_eq!(t.failure(&[account("ada")], later), None);
        }
        for n in 0..100 {
            t.failure(&[account(&format!("user{n}"))], later + Duration::from_millis(n));
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
