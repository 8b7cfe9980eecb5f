//! The near-cache: a bounded moka cache in front of a remote store, with the guard that keeps
//! a fill from re-inserting what an invalidation just removed. What keeps it coherent across
//! instances (the invalidation messages, the connection flags) belongs to each store (for
//! Redis: `redis/watch` and `redis/shared`; for PostgreSQL: `postgres/listen`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::id::SessionKey;
use crate::record::SessionRecord;

/// Stripes of the near-cache's fill guard (see [`NearCache`]).
const STRIPES: usize = 64;

/// What a fill must see unchanged to be allowed: the clear epoch and its key's stripe.
pub(super) type Stamp = (u64, u64);

/// The bounded near-cache, and the guard that keeps a slow fill from re-inserting what an
/// invalidation just removed: every invalidation bumps its key's stripe counter, every
/// clear bumps the epoch, and a fill is applied only if neither moved since before its read
/// (and is undone if one moved while it was being inserted).
pub(super) struct NearCache {
    cache: Option<Cache<SessionKey, Arc<SessionRecord>>>,
    epoch: AtomicU64,
    stripes: [AtomicU64; STRIPES],
    hits: AtomicU64,
    misses: AtomicU64,
}

impl NearCache {
    pub(super) fn new(ttl: Duration, capacity: u64) -> Self {
        let cache = (!ttl.is_zero() && capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        NearCache {
            cache,
            epoch: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether there is a cache at all (a zero TTL or capacity turns it off).
    pub(super) fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// Counts a load served from the cache.
    pub(super) fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a load that went to the store behind (Redis, PostgreSQL).
    pub(super) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> NearCacheStats {
        NearCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn stripe(key: &SessionKey) -> usize {
        usize::from(key.as_bytes()[0]) % STRIPES
    }

    pub(super) fn stamp(&self, key: &SessionKey) -> Stamp {
        (
            self.epoch.load(Ordering::SeqCst),
            self.stripes[Self::stripe(key)].load(Ordering::SeqCst),
        )
    }

    pub(super) fn get(&self, key: &SessionKey) -> Option<Arc<SessionRecord>> {
        self.cache.as_ref()?.get(key)
    }

    /// Drops one entry and fences off fills that read before now.
    pub(super) fn invalidate(&self, key: &SessionKey) {
        self.stripes[Self::stripe(key)].fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.invalidate(key);
        }
    }

    /// Drops everything and fences off every fill that read before now.
    pub(super) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    /// Inserts `record` unless an invalidation happened since `stamp` or a newer version of
    /// it is cached.
    ///
    /// A fill that may not insert still removes the key's entry: the caller fills because it
    /// read or wrote a newer record than the cache may hold (after its own write, the cached
    /// entry is the previous version), and a stripe counter also moves for other keys that
    /// share the stripe. Leaving the entry would serve the old version until its TTL ends;
    /// removing it costs one round trip at most.
    pub(super) fn fill(&self, key: SessionKey, record: Arc<SessionRecord>, stamp: Stamp) {
        let Some(cache) = &self.cache else {
            return;
        };
        if self.stamp(&key) != stamp {
            cache.invalidate(&key);
            return;
        }
        let version = record.version;
        let _ = cache
            .entry(key)
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().version >= version => Op::Nop,
                _ => Op::Put(record),
            });
        if self.stamp(&key) != stamp {
            cache.invalidate(&key);
        }
    }
}

/// Near-cache counters, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Loads served from the near-cache (no round trip).
    pub hits: u64,
    /// Loads that went to the store behind, Redis or PostgreSQL (near-cache miss, or near-cache
    /// bypassed).
    pub misses: u64,
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn record(version: u64) -> Arc<SessionRecord> {
        let mut r = SessionRecord::new(SystemTime::now());
        r.version = version;
        Arc::new(r)
    }

    /// A key whose first byte (and so stripe) is `first`, the rest from `fill`.
    fn key(first: u8, fill: u8) -> SessionKey {
        let mut bytes = [fill; 32];
        bytes[0] = first;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        SessionKey::from_hex(hex.as_bytes()).expect("64 hex digits")
    }

    #[test]
    fn fills_lose_to_invalidations() {
        let near = NearCache::new(Duration::from_secs(5), 100);
        let key = key(7, 1);
        let stamp = near.stamp(&key);
        near.invalidate(&key);
        near.fill(key, record(1), stamp);
        assert!(
            near.get(&key).is_none(),
            "a fill that read before an invalidation"
        );
        let stamp = near.stamp(&key);
        near.clear();
        near.fill(key, record(1), stamp);
        assert!(near.get(&key).is_none(), "a fill that read before a clear");
        near.fill(key, record(3), near.stamp(&key));
        near.fill(key, record(2), near.stamp(&key));
        assert_eq!(near.get(&key).map(|r| r.version), Some(3), "never older");
    }

    /// The writing instance reads its own writes: when an invalidation of another key in the
    /// same stripe lands during a write's round trip, the write's fill may not insert, and it
    /// must not leave the previous version behind either (issue 13: 1 % of own writes were
    /// followed by a stale read for the near-cache TTL under cross-instance load).
    #[test]
    fn a_refused_fill_still_drops_the_previous_version() {
        let near = NearCache::new(Duration::from_secs(5), 100);
        let mine = key(42, 1);
        let neighbour = key(42 + STRIPES as u8, 2);
        assert_eq!(NearCache::stripe(&mine), NearCache::stripe(&neighbour));
        near.fill(mine, record(1), near.stamp(&mine));
        assert_eq!(near.get(&mine).map(|r| r.version), Some(1));

        let before_write = near.stamp(&mine);
        near.invalidate(&neighbour); // another instance's write, seen mid round trip
        near.fill(mine, record(2), before_write);

        assert_ne!(
            near.get(&mine).map(|r| r.version),
            Some(1),
            "the previous version outlived this instance's own write"
        );
        // The same after a clear (a reconnection) during the round trip.
        near.fill(mine, record(2), near.stamp(&mine));
        let before_write = near.stamp(&mine);
        near.clear();
        near.fill(mine, record(3), before_write);
        assert_ne!(near.get(&mine).map(|r| r.version), Some(2));
    }
}
