//! The embedded store: a bounded moka cache with per-entry expiry.

use std::future::{ready, Future};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use moka::Expiry;

use super::{SessionStore, StoreError, Write};
use crate::id::SessionKey;
use crate::record::SessionRecord;

/// Default capacity: enough for a busy single instance; each live session costs a few hundred
/// bytes, so this bounds the store near 100 MB in the worst case.
pub const DEFAULT_CAPACITY: u64 = 200_000;

#[derive(Clone)]
struct Stored {
    record: Arc<SessionRecord>,
    ttl: Duration,
}

/// Each entry lives exactly as long as the layer said it is valid, so moka drops expired
/// sessions during its normal maintenance, with no sweeper thread.
struct PerEntryTtl;

impl Expiry<SessionKey, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &SessionKey, value: &Stored, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &SessionKey,
        value: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Sessions in process memory, on [moka](https://docs.rs/moka).
///
/// Bounded: when full, moka evicts the least valuable entries (TinyLFU), which logs those
/// users out; size the capacity for your peak of live sessions. Expired entries are evicted by
/// their own TTL. Every write is a per-key atomic compute, which gives the compare-and-set the
/// [`SessionStore`] contract asks for. Clones share the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<SessionKey, Stored>,
}

impl MemoryStore {
    /// A store holding at most [`DEFAULT_CAPACITY`] sessions.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store holding at most `max_sessions` sessions.
    pub fn with_capacity(max_sessions: u64) -> Self {
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(max_sessions)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// How many sessions are held (approximate until moka's pending work runs).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn create_now(&self, key: SessionKey, record: Arc<SessionRecord>, ttl: Duration) -> Write {
        let result = self
            .cache
            .entry(key)
            .and_compute_with(|existing| match existing {
                Some(_) => Op::Nop,
                None => Op::Put(Stored { record, ttl }),
            });
        match result {
            CompResult::Inserted(_) => Write::Applied,
            _ => Write::Conflict,
        }
    }

    fn update_now(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Write {
        let result = self
            .cache
            .entry(key)
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().record.version == expected => Op::Put(Stored { record, ttl }),
                _ => Op::Nop,
            });
        match result {
            CompResult::ReplacedWith(_) => Write::Applied,
            _ => Write::Conflict,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl SessionStore for MemoryStore {
    fn load(
        &self,
        key: SessionKey,
    ) -> impl Future<Output = Result<Option<Arc<SessionRecord>>, StoreError>> + Send {
        ready(Ok(self.cache.get(&key).map(|s| s.record)))
    }

    fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send {
        ready(Ok(self.create_now(key, record, ttl)))
    }

    fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send {
        ready(Ok(self.update_now(key, expected, record, ttl)))
    }

    fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send {
        // New first, then old: there is never an instant with neither. The new key has not
        // been sent to any client yet, so the instant with both is invisible to clients.
        if self.create_now(new, record, ttl) == Write::Conflict {
            return ready(Ok(Write::Conflict));
        }
        let removed = self
            .cache
            .entry(old)
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().record.version == expected => Op::Remove,
                _ => Op::Nop,
            });
        let outcome = if matches!(removed, CompResult::Removed(_)) {
            Write::Applied
        } else {
            // The old session changed or ended meanwhile (a concurrent logout, say): undo.
            self.cache.invalidate(&new);
            Write::Conflict
        };
        ready(Ok(outcome))
    }

    fn delete(&self, key: SessionKey) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.cache.remove(&key).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionToken;
    use std::time::SystemTime;

    fn rec(version: u64) -> Arc<SessionRecord> {
        let mut r = SessionRecord::new(SystemTime::now());
        r.version = version;
        Arc::new(r)
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn create_refuses_existing_key() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        assert_eq!(s.create_now(k, rec(1), TTL), Write::Applied);
        assert_eq!(s.create_now(k, rec(7), TTL), Write::Conflict);
        assert_eq!(s.cache.get(&k).map(|e| e.record.version), Some(1));
    }

    #[test]
    fn update_is_compare_and_set() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        assert_eq!(
            s.update_now(k, 1, rec(2), TTL),
            Write::Conflict,
            "absent stays absent"
        );
        assert!(s.cache.get(&k).is_none());
        let _ = s.create_now(k, rec(1), TTL);
        assert_eq!(s.update_now(k, 1, rec(2), TTL), Write::Applied);
        assert_eq!(
            s.update_now(k, 1, rec(2), TTL),
            Write::Conflict,
            "stale version"
        );
    }

    #[tokio::test]
    async fn rotate_moves_only_from_expected_version() {
        let s = MemoryStore::new();
        let (old, new) = (
            SessionToken::generate().key(),
            SessionToken::generate().key(),
        );
        let _ = s.create_now(old, rec(3), TTL);
        assert_eq!(
            s.rotate(old, 2, new, rec(1), TTL).await.unwrap(),
            Write::Conflict
        );
        assert!(
            s.cache.get(&new).is_none(),
            "a failed rotation leaves no new record"
        );
        assert_eq!(
            s.rotate(old, 3, new, rec(1), TTL).await.unwrap(),
            Write::Applied
        );
        assert!(s.cache.get(&old).is_none());
        assert!(s.cache.get(&new).is_some());
    }
}
