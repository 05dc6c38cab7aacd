//! A fixed-capacity ring buffer of timestamped, sequenced samples: the recent history behind the metrics
//! endpoints (the latest sample, replay after an SSE reconnect, downsampled time ranges).
//!
//! Items are expected to be pushed in order: `seq` strictly increasing and `ts_ms` non-decreasing, which is
//! what one [`super::system::Sampler`] fed with a wall clock produces (barring clock steps backwards).

use std::collections::VecDeque;

/// One hour at one sample per second.
pub const DEFAULT_CAPACITY: usize = 3600;

/// What the ring needs to know about an item.
pub trait Stamped {
    /// Milliseconds since the Unix epoch.
    fn ts_ms(&self) -> i64;
    /// Position in the stream; the SSE event id.
    fn seq(&self) -> u64;
}

/// The newest `capacity` items, oldest first.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl<T> Ring<T> {
    /// A ring holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { items: VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY)), capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends `item`, evicting and returning the oldest one if the ring was full.
    pub fn push(&mut self, item: T) -> Option<T> {
        let evicted = if self.items.len() >= self.capacity { self.items.pop_front() } else { None };
        self.items.push_back(item);
        evicted
    }

    /// The most recently pushed item.
    pub fn latest(&self) -> Option<&T> {
        self.items.back()
    }

    /// The oldest item still held.
    pub fn oldest(&self) -> Option<&T> {
        self.items.front()
    }

    /// All items, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }
}

impl<T: Stamped + Clone> Ring<T> {
    /// The items pushed after the one with sequence number `seq`, oldest first: what an SSE client that
    /// reconnects with `Last-Event-ID: seq` missed. `since_seq(0)` returns everything. If `seq` is older than
    /// the oldest item, everything still held is returned (the gap is lost); if it is not older than the
    /// latest, nothing is.
    pub fn since_seq(&self, seq: u64) -> Vec<T> {
        let newer = self.items.iter().rev().take_while(|item| item.seq() > seq).count();
        self.items.iter().skip(self.items.len() - newer).cloned().collect()
    }

    /// The items with `from_ms <= ts_ms <= to_ms`, oldest first, downsampled to at most one per `step_ms`
    /// bucket: the last item of each bucket. Buckets are aligned to multiples of `step_ms` since the epoch, so
    /// the same bucket yields the same item whatever `from_ms` is. `step_ms <= 1` returns every item in range.
    pub fn range(&self, from_ms: i64, to_ms: i64, step_ms: i64) -> Vec<T> {
        let mut out: Vec<T> = Vec::new();
        let mut last_bucket = None;
        for item in self.items.iter().filter(|item| (from_ms..=to_ms).contains(&item.ts_ms())) {
            let bucket = if step_ms > 1 { item.ts_ms().div_euclid(step_ms) } else { item.ts_ms() };
            match out.last_mut() {
                Some(last) if step_ms > 1 && last_bucket == Some(bucket) => *last = item.clone(),
                _ => out.push(item.clone()),
            }
            last_bucket = Some(bucket);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct S(i64, u64);

    impl Stamped for S {
        fn ts_ms(&self) -> i64 {
            self.0
        }

        fn seq(&self) -> u64 {
            self.1
        }
    }

    /// Samples every `every_ms`, seq 1.., the first at `start_ms`.
    fn ring(capacity: usize, n: u64, start_ms: i64, every_ms: i64) -> Ring<S> {
        let mut ring = Ring::new(capacity);
        for seq in 1..=n {
            ring.push(S(start_ms + (seq as i64 - 1) * every_ms, seq));
        }
        ring
    }

    fn seqs(items: &[S]) -> Vec<u64> {
        items.iter().map(|s| s.1).collect()
    }

    #[test]
    fn evicts_the_oldest() {
        let mut r = Ring::new(3);
        assert!(r.is_empty() && r.latest().is_none() && r.oldest().is_none());
        assert_eq!(r.push(S(0, 1)), None);
        assert_eq!(r.push(S(1, 2)), None);
        assert_eq!(r.push(S(2, 3)), None);
        assert_eq!(r.push(S(3, 4)), Some(S(0, 1)));
        assert_eq!(r.push(S(4, 5)), Some(S(1, 2)));
        assert_eq!((r.len(), r.capacity()), (3, 3));
        assert_eq!(r.latest(), Some(&S(4, 5)));
        assert_eq!(r.oldest(), Some(&S(2, 3)));
        assert_eq!(seqs(&r.iter().cloned().collect::<Vec<_>>()), [3, 4, 5]);

        let mut one = Ring::new(0);
        assert_eq!(one.capacity(), 1);
        one.push(S(0, 1));
        assert_eq!(one.push(S(1, 2)), Some(S(0, 1)));
        assert_eq!(Ring::<S>::default().capacity(), DEFAULT_CAPACITY);
        let big = ring(DEFAULT_CAPACITY, DEFAULT_CAPACITY as u64 + 10, 0, 1000);
        assert_eq!(big.len(), DEFAULT_CAPACITY);
        assert_eq!(big.oldest().map(|s| s.1), Some(11));
        let _huge: Ring<S> = Ring::new(usize::MAX);
    }

    #[test]
    fn since_seq_replays_what_a_client_missed() {
        let r = ring(5, 8, 0, 1000); // holds seq 4..=8
        assert_eq!(seqs(&r.since_seq(6)), [7, 8]);
        assert_eq!(seqs(&r.since_seq(0)), [4, 5, 6, 7, 8]);
        assert_eq!(seqs(&r.since_seq(2)), [4, 5, 6, 7, 8], "evicted: everything held");
        assert!(r.since_seq(8).is_empty());
        assert!(r.since_seq(u64::MAX).is_empty());
        assert!(Ring::<S>::new(3).since_seq(0).is_empty());
    }

    #[test]
    fn range_filters_inclusively() {
        let r = ring(100, 10, 10_000, 1000); // ts 10_000..=19_000
        assert_eq!(seqs(&r.range(12_000, 15_000, 0)), [3, 4, 5, 6]);
        assert_eq!(seqs(&r.range(12_000, 15_000, 1)), [3, 4, 5, 6]);
        assert_eq!(seqs(&r.range(11_500, 12_500, -5)), [3]);
        assert!(r.range(15_000, 12_000, 1000).is_empty());
        assert!(r.range(20_000, i64::MAX, 1000).is_empty());
        assert_eq!(seqs(&r.range(i64::MIN, i64::MAX, i64::MAX)), [10], "one bucket");
    }

    #[test]
    fn range_keeps_the_last_sample_of_each_step() {
        let r = ring(100, 10, 10_000, 1000); // ts 10_000..=19_000
                                             // Buckets [10_000, 15_000) and [15_000, 20_000).
        assert_eq!(seqs(&r.range(0, 100_000, 5000)), [5, 10]);
        // Buckets of 3 s: [9_000, 12_000) [12_000, 15_000) [15_000, 18_000) [18_000, 21_000).
        assert_eq!(seqs(&r.range(0, 100_000, 3000)), [2, 5, 8, 10]);
        // The bucket of an item does not depend on from_ms.
        assert_eq!(seqs(&r.range(13_000, 100_000, 3000)), [5, 8, 10]);
        // Range bounds cut inside buckets.
        assert_eq!(seqs(&r.range(10_000, 13_000, 3000)), [2, 4]);
        // Step larger than the span: one sample.
        assert_eq!(seqs(&r.range(0, 100_000, 60_000)), [10]);
        // Irregular timestamps, several per bucket and empty buckets.
        let mut r = Ring::new(10);
        for (ts, seq) in [(0, 1), (400, 2), (999, 3), (1000, 4), (3500, 5), (3999, 6), (-1, 7)] {
            r.push(S(ts, seq));
        }
        assert_eq!(seqs(&r.range(0, 4000, 1000)), [3, 4, 6]);
        assert_eq!(seqs(&r.range(-1000, 4000, 1000)), [3, 4, 6, 7], "out-of-order ts: own bucket");
    }
}
