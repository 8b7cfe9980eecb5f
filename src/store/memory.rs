//! The embedded store: a bounded moka cache with per-entry expiry.

use std::collections::{HashMap, HashSet};
use std::future::{ready, Future};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use moka::Expiry;

use super::{LimitPolicy, LoginWrite, SessionLimit, SessionStore, StoreError, Write};
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

/// user id → keys of that user's sessions.
type UserIndex = Arc<Mutex<HashMap<Arc<str>, HashSet<SessionKey>>>>;

fn lock(
    index: &Mutex<HashMap<Arc<str>, HashSet<SessionKey>>>,
) -> MutexGuard<'_, HashMap<Arc<str>, HashSet<SessionKey>>> {
    // Every critical section is a single insert or remove, so a poisoned map is consistent.
    index.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sessions in process memory, on [moka](https://docs.rs/moka).
///
/// Bounded: when full, moka evicts the least valuable entries (TinyLFU), which logs those
/// users out; size the capacity for your peak of live sessions. Expired entries are evicted by
/// their own TTL. Every write is a per-key atomic compute, which gives the compare-and-set the
/// [`SessionStore`] contract asks for. The per-user index is kept by moka's eviction
/// listener, so expiry, eviction and deletion all leave it in step. Clones share the same
/// sessions.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<SessionKey, Stored>,
    index: UserIndex,
    /// Serialises logins, so the session limit holds under concurrent logins of one user.
    logins: Arc<Mutex<()>>,
}

impl MemoryStore {
    /// A store holding at most [`DEFAULT_CAPACITY`] sessions.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store holding at most `max_sessions` sessions.
    pub fn with_capacity(max_sessions: u64) -> Self {
        let index = UserIndex::default();
        let listener_index = Arc::downgrade(&index);
        let cache = Cache::builder()
            .max_capacity(max_sessions)
            .expire_after(PerEntryTtl)
            .eviction_listener(move |key: Arc<SessionKey>, value: Stored, cause| {
                if cause == RemovalCause::Replaced {
                    return; // same key, new value: still indexed
                }
                let (Some(index), Some(identity)) =
                    (listener_index.upgrade(), &value.record.identity)
                else {
                    return;
                };
                let mut map = lock(&index);
                if let Some(keys) = map.get_mut(identity.user_id.as_str()) {
                    keys.remove(&*key);
                    if keys.is_empty() {
                        map.remove(identity.user_id.as_str());
                    }
                }
            })
            .build();
        MemoryStore {
            cache,
            index,
            logins: Arc::default(),
        }
    }

    fn index_add(&self, key: SessionKey, record: &SessionRecord) {
        if let Some(identity) = &record.identity {
            lock(&self.index)
                .entry(Arc::from(identity.user_id.as_str()))
                .or_default()
                .insert(key);
        }
    }

    /// The user's live sessions, oldest first.
    fn live_sessions(&self, user_id: &str) -> Vec<(SessionKey, Arc<SessionRecord>)> {
        let keys: Vec<SessionKey> = lock(&self.index)
            .get(user_id)
            .map(|k| k.iter().copied().collect())
            .unwrap_or_default();
        let mut live: Vec<_> = keys
            .into_iter()
            .filter_map(|k| self.cache.get(&k).map(|s| (k, s.record)))
            .filter(|(_, r)| r.identity.as_ref().is_some_and(|i| i.user_id == user_id))
            .collect();
        live.sort_by_key(|(_, r)| r.created_at);
        live
    }

    /// Removes `old` if it is at version `expected`.
    fn remove_if(&self, old: SessionKey, expected: u64) -> bool {
        let removed = self
            .cache
            .entry(old)
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().record.version == expected => Op::Remove,
                _ => Op::Nop,
            });
        matches!(removed, CompResult::Removed(_))
    }

    fn rotate_now(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Write {
        // New first, then old: there is never an instant with neither. The new key has not
        // been sent to any client yet, so the instant with both is invisible to clients.
        if self.create_now(new, record, ttl) == Write::Conflict {
            return Write::Conflict;
        }
        if self.remove_if(old, expected) {
            Write::Applied
        } else {
            // The old session changed or ended meanwhile (a concurrent logout, say): undo.
            self.cache.invalidate(&new);
            Write::Conflict
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
        // Indexed before it is visible, so a concurrent listing never misses a live session;
        // an index entry whose record never appears is skipped and pruned by `user_sessions`.
        self.index_add(key, &record);
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
        ready(Ok(self.rotate_now(old, expected, new, record, ttl)))
    }

    fn delete(&self, key: SessionKey) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.cache.remove(&key).is_some()))
    }

    fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> impl Future<Output = Result<LoginWrite, StoreError>> + Send {
        let _serial = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        let user_id = record
            .identity
            .as_ref()
            .map(|i| i.user_id.clone())
            .unwrap_or_default();
        // The session being logged in does not count against its own user.
        let others: Vec<_> = self
            .live_sessions(&user_id)
            .into_iter()
            .filter(|(k, _)| Some(*k) != old.map(|(o, _)| o))
            .collect();
        if let Some(SessionLimit {
            max,
            policy: LimitPolicy::RejectNew,
        }) = limit
        {
            if others.len() >= max {
                return ready(Ok(LoginWrite::LimitReached));
            }
        }
        let written = match old {
            Some((old, expected)) => self.rotate_now(old, expected, new, record, ttl),
            None => self.create_now(new, record, ttl),
        };
        if written == Write::Conflict {
            return ready(Ok(LoginWrite::Conflict));
        }
        let mut evicted = Vec::new();
        if let Some(SessionLimit {
            max,
            policy: LimitPolicy::EvictOldest,
        }) = limit
        {
            // `others` is oldest first; keep room for the new session.
            let excess = (others.len() + 1).saturating_sub(max.max(1));
            for (key, _) in others.into_iter().take(excess) {
                if self.cache.remove(&key).is_some() {
                    evicted.push(key);
                }
            }
        }
        ready(Ok(LoginWrite::Applied { evicted }))
    }

    fn user_sessions(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError>> + Send
    {
        let live = self.live_sessions(user_id);
        // Prune index entries whose sessions are gone (expired entries that moka has not
        // yet reported, or creations that lost a race).
        let mut map = lock(&self.index);
        if let Some(keys) = map.get_mut(user_id) {
            keys.retain(|k| live.iter().any(|(l, _)| l == k));
            if keys.is_empty() {
                map.remove(user_id);
            }
        }
        drop(map);
        ready(Ok(live))
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
