//! Values that hold until the next applied write ([`AtIndex`]): the encoded answers of
//! pure reads here, the verified bearer tokens at the gateway.
//!
//! A read whose answer depends only on its input, its caller and the replicated state
//! ([`Operation::CACHED`]) answers the same bytes until the state changes, and the state
//! changes only when this node applies a log entry. So the answer is kept with the applied
//! index it was read at and served again while that index holds: the hot catalog page
//! costs neither SQLite nor JSON until the next write. Any applied write (or installed
//! snapshot) moves the index and drops every kept answer at once: nothing is ever served
//! older than a direct read would be.
//!
//! Memory is bounded whatever strangers ask: at most [`MAX_ENTRIES`] values and
//! [`MAX_BYTES`] in all, none above [`MAX_ANSWER`]; a full cache is emptied, not grown.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Mutex;

use metrics::Counter;

use super::{Body, Operation};
use crate::auth::Identity;

pub const MAX_ENTRIES: usize = 1024;
pub const MAX_BYTES: usize = 4 << 20;
pub const MAX_ANSWER: usize = 256 << 10;

/// The operation's type and its input and caller, encoded: two reads share an answer only
/// when all three are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnswerKey(TypeId, Vec<u8>);

impl AnswerKey {
    pub fn new<Op: Operation>(op: &Op, caller: Option<&Identity>) -> Option<Self> {
        // The token's own fields (jti, expiry) change nothing an operation answers.
        let caller = caller.map(|i| (i.user_id, &i.username, i.role));
        rmp_serde::to_vec(&(op, caller)).ok().map(|bytes| AnswerKey(TypeId::of::<Op>(), bytes))
    }
}

/// Kept answers of cacheable reads (see the module's documentation).
pub type AnswerCache = AtIndex<AnswerKey, (u16, Body)>;

impl Default for AnswerCache {
    fn default() -> Self {
        AtIndex::new("panal_answer_cache_total")
    }
}

/// Values that hold as long as the replicated state does: each is kept with the applied
/// index it was computed at and served only while this node's applied index is the same.
/// Bounded: at most [`MAX_ENTRIES`] values and [`MAX_BYTES`] in all (as weighed by the
/// caller), none above [`MAX_ANSWER`]; a full cache is emptied, not grown.
pub struct AtIndex<K, V> {
    kept: Mutex<Kept<K, V>>,
    hits: Counter,
    misses: Counter,
}

struct Kept<K, V> {
    /// The applied index every kept value was computed at.
    index: u64,
    bytes: usize,
    values: HashMap<K, (V, usize)>,
}

impl<K, V> Kept<K, V> {
    fn clear(&mut self, index: u64) {
        self.values.clear();
        self.bytes = 0;
        self.index = index;
    }
}

impl<K, V> std::fmt::Debug for AtIndex<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtIndex").finish_non_exhaustive()
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> AtIndex<K, V> {
    /// A cache counting its hits and misses in the counter `series{result}`.
    pub fn new(series: &'static str) -> Self {
        Self {
            kept: Mutex::new(Kept { index: 0, bytes: 0, values: HashMap::new() }),
            hits: metrics::counter!(series, "result" => "hit"),
            misses: metrics::counter!(series, "result" => "miss"),
        }
    }

    /// The value kept for `key` if it was computed at `index`.
    pub fn get(&self, key: &K, index: u64) -> Option<V> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let found = (kept.index == index).then(|| kept.values.get(key).map(|(v, _)| v.clone())).flatten();
        drop(kept);
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// Keeps a value computed at `index` (the applied index both before and after it was
    /// computed) that weighs `size` bytes.
    pub fn put(&self, key: K, index: u64, value: V, size: usize) {
        if size > MAX_ANSWER {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if index < kept.index {
            return; // computed before a write this cache has already seen
        }
        if index > kept.index || kept.values.len() >= MAX_ENTRIES || kept.bytes + size > MAX_BYTES {
            kept.clear(index);
        }
        kept.bytes += size;
        if let Some((_, old)) = kept.values.insert(key, (value, size)) {
            kept.bytes -= old;
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let kept = self.kept.lock().unwrap();
        (kept.values.len(), kept.bytes)
    }

    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.len().0
    }
}

impl AnswerCache {
    /// Keeps an encoded answer read at `index`.
    pub fn keep(&self, key: AnswerKey, index: u64, status: u16, body: &Body) {
        let size = key.1.len() + body.bytes.len();
        self.put(key, index, (status, body.clone()), size);
    }
}

/// HELP text of the cache's series.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "panal_answer_cache_total",
        "Cacheable reads answered from the node's answer cache (hit) or read and encoded (miss)."
    );
    metrics::describe_counter!(
        "panal_token_cache_total",
        "Bearer tokens found verified and not revoked at the current applied index (hit) or checked again (miss)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::Ping;
    use crate::services::Service;

    fn body(text: &str) -> Body {
        Body::text("text/plain", text.into())
    }

    fn key(service: Service) -> AnswerKey {
        AnswerKey::new(&Ping { service }, None).unwrap()
    }

    #[test]
    fn an_answer_is_served_only_at_the_index_it_was_read_at() {
        let cache = AnswerCache::default();
        cache.keep(key(Service::Auth), 7, 200, &body("seven"));
        assert_eq!(cache.get(&key(Service::Auth), 7), Some((200, body("seven"))));
        assert_eq!(cache.get(&key(Service::Catalog), 7), None, "another input");
        assert_eq!(cache.get(&key(Service::Auth), 8), None, "a write was applied since");
        // An answer read before a write the cache has seen is not kept.
        cache.keep(key(Service::Auth), 8, 200, &body("eight"));
        cache.keep(key(Service::Catalog), 7, 200, &body("old"));
        assert_eq!(cache.get(&key(Service::Catalog), 8), None);
        assert_eq!(cache.len().0, 1, "the index-7 answers were dropped");
    }

    #[test]
    fn callers_do_not_share_answers() {
        let who = |user_id| Identity {
            user_id,
            username: format!("u{user_id}"),
            role: crate::auth::Role::User,
            jti: format!("jti{user_id}"),
            expires_at: 0,
        };
        let op = Ping { service: Service::Energy };
        let (a, b) = (AnswerKey::new(&op, Some(&who(1))).unwrap(), AnswerKey::new(&op, Some(&who(2))).unwrap());
        assert_ne!(a, b);
        assert_ne!(a, AnswerKey::new(&op, None).unwrap());
        let mut other_token = who(1);
        other_token.jti = "another".into();
        assert_eq!(a, AnswerKey::new(&op, Some(&other_token)).unwrap(), "a second token of the same user");
    }

    #[test]
    fn memory_stays_bounded_whatever_is_asked() {
        let cache = AnswerCache::default();
        cache.keep(key(Service::Auth), 1, 200, &Body::text("text/plain", "x".repeat(MAX_ANSWER + 1)));
        assert_eq!(cache.len().0, 0, "an answer above the limit is not kept");
        let (big, small) = (Body::text("text/plain", "x".repeat(MAX_ANSWER / 2)), body("small"));
        for n in 0..(4 * MAX_ENTRIES) {
            let k = AnswerKey(TypeId::of::<Ping>(), n.to_le_bytes().to_vec());
            cache.keep(k, 1, 200, if n % 2 == 0 { &big } else { &small });
            let (entries, bytes) = cache.len();
            assert!(entries <= MAX_ENTRIES && bytes <= MAX_BYTES, "{entries} answers, {bytes} bytes");
        }
        // Replacing an answer counts its bytes once.
        cache.keep(key(Service::Auth), 2, 200, &body("abc"));
        cache.keep(key(Service::Auth), 2, 200, &body("abcdef"));
        assert_eq!(cache.len(), (1, key(Service::Auth).1.len() + 6));
    }
}
