//! The embedded store: compact records in sharded maps, with a bounded moka cache of decoded
//! records as the hot path.
//!
//! Why two tiers: moka costs about 480 bytes per entry with per-entry expiry, before the
//! record itself (identity strings, vectors, a map: another few hundred bytes and a dozen
//! allocations). A million live sessions would then need around a gigabyte. Here every
//! session is one compact heap block ([`compact`](super::compact)) in a plain hash map keyed
//! by 64 bits of its key, about 200 bytes all told, while the sessions that are actually in
//! use sit decoded in moka, so a request on a hot session costs one moka lookup and no
//! decoding. See `docs/ARCHITECTURE.md` and `BENCHMARKS.md` for the measurements.
//!
//! Consistency between the tiers: every write to a shard updates or invalidates the moka
//! entry while it still holds the shard's write lock, and a read that misses moka fills it
//! while it holds the shard's read lock, so a stale record can never be put back into moka
//! after a write (in particular, a deleted session can never reappear).

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet};
use std::future::{ready, Future};
use std::hash::BuildHasher;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;

use super::compact::Blob;
use super::{LimitPolicy, LoginWrite, SessionLimit, SessionStore, StoreError, Write};
use crate::id::SessionKey;
use crate::record::SessionRecord;

/// Default capacity: enough for a busy single instance; a live session costs about 200 bytes
/// here, so this bounds the store near 40 MB.
pub const DEFAULT_CAPACITY: u64 = 200_000;
/// Default number of decoded sessions kept in the moka hot cache.
pub const DEFAULT_HOT_CAPACITY: u64 = 16_384;

const SHARDS: usize = 64;
/// A shard is swept for expired sessions after this many writes (or when full), so expiry
/// costs a few entry checks per write and needs no background thread.
const SWEEP_EVERY: u32 = 1024;
/// Entries looked at to pick an eviction victim when a shard is full of live sessions.
const EVICTION_SAMPLE: usize = 16;
/// A user's index list becomes a hash set beyond this many sessions, so that adding and
/// removing stay O(1) for a user with very many sessions (and it turns back into a list
/// below half of it).
const INDEX_LIST_MAX: usize = 32;

/// Session keys are SHA-256 outputs, already uniform: one multiply spreads 64 of their bits
/// over the table, where SipHash would cost ~20 ns for nothing. Nobody can plant keys: the
/// store only ever holds keys of tokens the layer generated.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type BuildKeyHasher = BuildHasherDefault<KeyHasher>;

fn prefix(key: &SessionKey) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&key.as_bytes()[..8]);
    u64::from_le_bytes(w)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A bitset of recently missed sessions, one bit per 64-bit key prefix modulo its size,
/// cleared after as many misses as it has bits so it always describes recent traffic.
/// False positives only mean a cache insert that was not strictly needed.
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    misses: AtomicUsize,
}

impl Doorkeeper {
    const WORDS: usize = 1 << 14; // 2^20 bits, 128 KiB

    fn new() -> Self {
        Doorkeeper {
            bits: (0..Self::WORDS).map(|_| AtomicU64::new(0)).collect(),
            misses: AtomicUsize::new(0),
        }
    }

    /// Records a miss of `p`; true if `p` already missed since the last clear.
    fn seen_before(&self, p: u64) -> bool {
        if self.misses.fetch_add(1, Ordering::Relaxed) >= Self::WORDS * 64 {
            self.misses.store(0, Ordering::Relaxed);
            for w in self.bits.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        // The high bits: the low ones pick the shard and are the map's hash input.
        let bit = (p >> 32) as usize % (Self::WORDS * 64);
        let mask = 1u64 << (bit % 64);
        self.bits[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0
    }
}

#[derive(Default)]
struct Shard {
    /// First 64 bits of the key → the session; the blob holds the full key, checked on
    /// every lookup.
    map: HashMap<u64, Blob, BuildKeyHasher>,
    writes: u32,
}

/// The per-user index, in shards: keyed SipHash of the user id → 64-bit key prefixes of
/// that user's sessions. Most users hold one session, which costs one 24-byte slot and no
/// allocation (`Keys::One`). A collision of two users' hashes only merges their lists, and
/// every reader checks the session's user id. SipHash with a random key, because user ids
/// are chosen by users and this map must not be floodable.
#[derive(Default)]
struct UserIndex {
    map: HashMap<u64, Keys, BuildKeyHasher>,
}

enum Keys {
    One(u64),
    /// Boxed so the common `One` case keeps the slot at 16 bytes instead of 24: at a
    /// million users that is 16 MB, for one extra allocation per user with several sessions.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u64>>),
    /// More than [`INDEX_LIST_MAX`] sessions: a set, so that adding and removing one stays
    /// O(1) (a list's removal is a scan, which made ending all of a big user's sessions
    /// quadratic).
    #[allow(clippy::box_collection)]
    Set(Box<HashSet<u64, BuildKeyHasher>>),
}

impl Keys {
    fn len(&self) -> usize {
        match self {
            Keys::One(_) => 1,
            Keys::Many(list) => list.len(),
            Keys::Set(set) => set.len(),
        }
    }

    /// After removals: a small set goes back to a list, a mostly empty set gives memory
    /// back. Returns whether nothing is left.
    fn settle(&mut self) -> bool {
        if let Keys::Set(set) = self {
            if set.len() <= INDEX_LIST_MAX / 2 {
                *self = Keys::Many(Box::new(set.iter().copied().collect()));
            } else if set.len() * 4 < set.capacity() {
                set.shrink_to_fit();
            }
        }
        self.len() == 0
    }
}

impl UserIndex {
    fn add(&mut self, h: u64, p: u64) {
        match self.map.entry(h) {
            Entry::Vacant(v) => {
                v.insert(Keys::One(p));
            }
            Entry::Occupied(mut o) => match o.get_mut() {
                Keys::One(q) if *q == p => {}
                Keys::One(q) => {
                    let q = *q;
                    *o.get_mut() = Keys::Many(Box::new(vec![q, p]));
                }
                // Prefixes are unique per live session (create refuses a taken one), so no
                // duplicate check: adding stays O(1) for users with many sessions.
                Keys::Many(list) if list.len() < INDEX_LIST_MAX => list.push(p),
                Keys::Many(list) => {
                    let mut set: HashSet<u64, BuildKeyHasher> = list.iter().copied().collect();
                    set.insert(p);
                    *o.get_mut() = Keys::Set(Box::new(set));
                }
                Keys::Set(set) => {
                    set.insert(p);
                }
            },
        }
    }

    fn remove(&mut self, h: u64, p: u64) {
        let now_empty = match self.map.get_mut(&h) {
            Some(Keys::One(q)) => *q == p,
            Some(keys) => {
                match keys {
                    Keys::Many(list) => {
                        // At most INDEX_LIST_MAX entries: the scan is bounded.
                        if let Some(i) = list.iter().position(|q| *q == p) {
                            list.swap_remove(i);
                        }
                    }
                    Keys::Set(set) => {
                        set.remove(&p);
                    }
                    Keys::One(_) => {}
                }
                keys.settle()
            }
            None => false,
        };
        if now_empty {
            self.map.remove(&h);
        }
    }

    /// Removes every prefix in `gone`: O(the user's sessions).
    fn remove_all(&mut self, h: u64, gone: &HashSet<u64, BuildKeyHasher>) {
        let now_empty = match self.map.get_mut(&h) {
            Some(Keys::One(q)) => gone.contains(q),
            Some(keys) => {
                match keys {
                    Keys::Many(list) => list.retain(|q| !gone.contains(q)),
                    Keys::Set(set) => {
                        if gone.len() < set.len() {
                            for q in gone {
                                set.remove(q);
                            }
                        } else {
                            set.retain(|q| !gone.contains(q));
                        }
                    }
                    Keys::One(_) => {}
                }
                keys.settle()
            }
            None => false,
        };
        if now_empty {
            self.map.remove(&h);
        }
    }

    fn get(&self, h: u64) -> Vec<u64> {
        match self.map.get(&h) {
            Some(Keys::One(p)) => vec![*p],
            Some(Keys::Many(list)) => list.to_vec(),
            Some(Keys::Set(set)) => set.iter().copied().collect(),
            None => Vec::new(),
        }
    }
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    hot: Cache<SessionKey, Arc<SessionRecord>, BuildKeyHasher>,
    index: Box<[Mutex<UserIndex>]>,
    /// The index's hash key.
    users: RandomState,
    /// Serialises logins, so the session limit holds under concurrent logins of one user.
    logins: Mutex<()>,
    /// Sessions held, against `capacity`.
    count: AtomicUsize,
    /// Which sessions missed the hot cache recently.
    doorkeeper: Doorkeeper,
    capacity: usize,
}

/// Sessions in process memory.
///
/// Bounded: when a shard is full, expired sessions go first, then the live session nearest
/// to its expiry among a small sample (which logs that user out); size the capacity for your
/// peak of live sessions. Expired sessions are swept as writes go by, with no background
/// thread. Writes are compare-and-set under a shard lock, which gives the [`SessionStore`]
/// contract. The per-user index is kept in step by every write, delete, sweep and eviction.
/// Clones share the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

// Locks only guard plain maps updated by single operations, so a poisoned lock still holds a
// consistent map.
fn read(s: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    s.read().unwrap_or_else(|p| p.into_inner())
}
fn write(s: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    s.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Oldest first (by creation, then key), at most `n`: O(len) to select, then a sort of `n`.
fn oldest_first(mut sessions: Vec<(u64, SessionKey)>, n: usize) -> Vec<(u64, SessionKey)> {
    if n < sessions.len() {
        sessions.select_nth_unstable(n);
        sessions.truncate(n);
    }
    sessions.sort_unstable();
    sessions
}

impl MemoryStore {
    /// A store holding at most [`DEFAULT_CAPACITY`] sessions.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store holding at most `max_sessions` sessions, with the default hot cache.
    pub fn with_capacity(max_sessions: u64) -> Self {
        Self::with_capacities(max_sessions, DEFAULT_HOT_CAPACITY.min(max_sessions.max(1)))
    }

    /// A store holding at most `max_sessions` sessions, of which up to `hot_sessions` are
    /// kept decoded in moka for the hot path. Size `hot_sessions` for the sessions active
    /// within a few minutes.
    pub fn with_capacities(max_sessions: u64, hot_sessions: u64) -> Self {
        let capacity = usize::try_from(max_sessions.max(1)).unwrap_or(usize::MAX);
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
                hot: Cache::builder()
                    .max_capacity(hot_sessions.max(1))
                    .build_with_hasher(BuildKeyHasher::default()),
                index: (0..SHARDS).map(|_| Mutex::default()).collect(),
                users: RandomState::new(),
                logins: Mutex::new(()),
                count: AtomicUsize::new(0),
                doorkeeper: Doorkeeper::new(),
                capacity,
            }),
        }
    }

    /// How many sessions are held (including expired ones not yet swept).
    pub fn len(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|s| read(s).map.len() as u64)
            .sum()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, p: u64) -> &RwLock<Shard> {
        // The low bits pick the shard; the hasher mixes all 64 bits for the map itself.
        &self.inner.shards[(p as usize) % SHARDS]
    }

    /// The user's index shard, locked, and the user's hash within it.
    fn index(&self, user: &str) -> (MutexGuard<'_, UserIndex>, u64) {
        let h = self.inner.users.hash_one(user);
        (lock(&self.inner.index[(h as usize) % SHARDS]), h)
    }

    fn index_add(&self, p: u64, record: &SessionRecord) {
        if let Some(identity) = &record.identity {
            let (mut index, h) = self.index(&identity.user_id);
            index.add(h, p);
        }
    }

    /// Removes `p` from a shard the caller holds, with the hot entry and the index entry.
    fn remove_locked(&self, shard: &mut Shard, p: u64) -> Option<Blob> {
        let blob = shard.map.remove(&p)?;
        self.inner.count.fetch_sub(1, Ordering::Relaxed);
        self.inner.hot.invalidate(&blob.key(p));
        if let Some(user) = blob.user_id() {
            let (mut index, h) = self.index(user);
            index.remove(h, p);
        }
        Some(blob)
    }

    /// Sweeps expired sessions now and then, and makes room when the shard is full.
    fn maintain(&self, shard: &mut Shard) {
        shard.writes += 1;
        let full = self.inner.count.load(Ordering::Relaxed) >= self.inner.capacity;
        if shard.writes < SWEEP_EVERY && !full {
            return;
        }
        shard.writes = 0;
        let now = now_ns();
        let expired: Vec<u64> = shard
            .map
            .iter()
            .filter(|(_, b)| b.expires_at() <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.remove_locked(shard, p);
        }
        // The bound is global; the victim comes from the shard being written, which is as
        // good as random since keys are spread uniformly over shards.
        while self.inner.count.load(Ordering::Relaxed) >= self.inner.capacity {
            let victim = shard
                .map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, b)| b.expires_at())
                .map(|(p, _)| *p);
            match victim {
                Some(p) => {
                    self.remove_locked(shard, p);
                }
                None => break,
            }
        }
    }

    /// When the store may drop a record written now. The layer computes `ttl` from its own
    /// clock; the store only needs it as a duration on the real clock that sweeps use.
    fn expires(ttl: Duration) -> SystemTime {
        SystemTime::now() + ttl
    }

    fn create_now(&self, key: SessionKey, record: Arc<SessionRecord>, ttl: Duration) -> Write {
        let p = prefix(&key);
        let mut shard = write(self.shard(p));
        if shard.map.contains_key(&p) {
            // Taken (by this key, or, once in 2^64, by another with the same 64 bits).
            return Write::Conflict;
        }
        self.maintain(&mut shard);
        shard
            .map
            .insert(p, Blob::encode(&key, &record, Self::expires(ttl)));
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        self.index_add(p, &record);
        self.inner.hot.insert(key, record);
        Write::Applied
    }

    fn update_now(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Write {
        let p = prefix(&key);
        let mut shard = write(self.shard(p));
        match shard.map.get_mut(&p) {
            Some(blob) if blob.is_for(&key) && blob.version() == expected => {
                *blob = Blob::encode(&key, &record, Self::expires(ttl));
                self.inner.hot.insert(key, record);
                Write::Applied
            }
            _ => Write::Conflict,
        }
    }

    /// Removes `key` if it is at version `expected`.
    fn remove_if(&self, key: SessionKey, expected: u64) -> bool {
        let p = prefix(&key);
        let mut shard = write(self.shard(p));
        let matches = shard
            .map
            .get(&p)
            .is_some_and(|b| b.is_for(&key) && b.version() == expected);
        matches && self.remove_locked(&mut shard, p).is_some()
    }

    fn delete_now(&self, key: SessionKey) -> bool {
        let p = prefix(&key);
        let mut shard = write(self.shard(p));
        let matches = shard.map.get(&p).is_some_and(|b| b.is_for(&key));
        matches && self.remove_locked(&mut shard, p).is_some()
    }

    fn read(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if let Some(hit) = self.inner.hot.get(&key) {
            return Ok(Some(hit));
        }
        let p = prefix(&key);
        let shard = read(self.shard(p));
        let Some(blob) = shard.map.get(&p).filter(|b| b.is_for(&key)) else {
            return Ok(None);
        };
        if blob.expires_at() <= now_ns() {
            return Ok(None);
        }
        let record = Arc::new(
            blob.decode()
                .ok_or_else(|| StoreError::new("memory store: undecodable record"))?,
        );
        // Filled under the read lock: a writer cannot change or remove the entry until we
        // are done, so moka never receives a record older than the shard's. Only sessions
        // seen at least twice recently are cached (a doorkeeper, as in TinyLFU): a session
        // read once in a long while would only evict a hot one and pay moka's insert.
        if self.inner.doorkeeper.seen_before(p) {
            self.inner.hot.insert(key, record.clone());
        }
        Ok(Some(record))
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
            self.delete_now(new);
            Write::Conflict
        }
    }

    /// The user's live sessions (creation time, key), in no order: O(the user's index).
    /// Index entries whose session is gone (ended, expired, or never the user's) are pruned.
    fn user_live(&self, user_id: &str) -> Vec<(u64, SessionKey)> {
        let prefixes = {
            let (index, h) = self.index(user_id);
            index.get(h)
        };
        let now = now_ns();
        let mut live = Vec::with_capacity(prefixes.len());
        let mut gone = HashSet::<u64, BuildKeyHasher>::default();
        for p in prefixes {
            let shard = read(self.shard(p));
            match shard.map.get(&p) {
                Some(b) => match b.user_id() {
                    Some(u) if u == user_id && b.expires_at() > now => {
                        live.push((b.created_at(), b.key(p)));
                    }
                    Some(u) if u == user_id => {
                        gone.insert(p);
                    }
                    // Another user whose hash collides with this one's: theirs to prune.
                    Some(_) => {}
                    None => {
                        gone.insert(p);
                    }
                },
                None => {
                    gone.insert(p);
                }
            }
        }
        if !gone.is_empty() {
            // Only what was seen gone: a session added meanwhile stays indexed.
            let (mut index, h) = self.index(user_id);
            index.remove_all(h, &gone);
        }
        live
    }

    /// Decodes the session under `key` if it is still the user's and live.
    fn decode_user_session(&self, key: SessionKey, user_id: &str) -> Option<Arc<SessionRecord>> {
        let p = prefix(&key);
        let shard = read(self.shard(p));
        let blob = shard.map.get(&p).filter(|b| {
            b.is_for(&key) && b.expires_at() > now_ns() && b.user_id() == Some(user_id)
        })?;
        blob.decode().map(Arc::new)
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
            .field("sessions", &self.len())
            .field("hot", &self.inner.hot.entry_count())
            .finish()
    }
}

impl SessionStore for MemoryStore {
    /// Always answers: every session is in memory.
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>> {
        Some(self.read(key))
    }

    fn load(
        &self,
        key: SessionKey,
    ) -> impl Future<Output = Result<Option<Arc<SessionRecord>>, StoreError>> + Send {
        ready(self.read(key))
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
        ready(Ok(self.delete_now(key)))
    }

    fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> impl Future<Output = Result<LoginWrite, StoreError>> + Send {
        let _serial = lock(&self.inner.logins);
        // The session being logged in does not count against its own user. Without a limit
        // there is nothing to count, so a login costs no scan of the user's sessions.
        let others: Vec<_> = match (limit, &record.identity) {
            (Some(_), Some(identity)) => {
                let old = old.map(|(o, _)| o);
                let mut live = self.user_live(&identity.user_id);
                live.retain(|(_, k)| Some(*k) != old);
                live
            }
            _ => Vec::new(),
        };
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
            // Keep room for the new session: the oldest of the others go.
            let excess = (others.len() + 1).saturating_sub(max.max(1));
            for (_, key) in oldest_first(others, excess) {
                if self.delete_now(key) {
                    evicted.push(key);
                }
            }
        }
        ready(Ok(LoginWrite::Applied { evicted }))
    }

    fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError>> + Send
    {
        let oldest = oldest_first(self.user_live(user_id), limit);
        let sessions = oldest
            .into_iter()
            .filter_map(|(_, key)| Some((key, self.decode_user_session(key, user_id)?)))
            .collect();
        ready(Ok(sessions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionToken;
    use crate::record::Identity;

    fn rec(version: u64) -> Arc<SessionRecord> {
        let mut r = SessionRecord::new(SystemTime::now());
        r.version = version;
        Arc::new(r)
    }

    fn user_rec(user: &str) -> Arc<SessionRecord> {
        let mut r = SessionRecord::new(SystemTime::now());
        r.identity = Some(Identity::new(user));
        Arc::new(r)
    }

    const TTL: Duration = Duration::from_secs(60);

    fn indexed(s: &MemoryStore, user: &str) -> usize {
        let (index, h) = s.index(user);
        index.get(h).len()
    }

    fn cold_version(s: &MemoryStore, k: SessionKey) -> Option<u64> {
        s.inner.hot.invalidate(&k);
        s.read(k).unwrap().map(|r| r.version)
    }

    #[test]
    fn create_refuses_existing_key() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        assert_eq!(s.create_now(k, rec(1), TTL), Write::Applied);
        assert_eq!(s.create_now(k, rec(7), TTL), Write::Conflict);
        assert_eq!(cold_version(&s, k), Some(1));
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
        assert_eq!(cold_version(&s, k), None);
        let _ = s.create_now(k, rec(1), TTL);
        assert_eq!(s.update_now(k, 1, rec(2), TTL), Write::Applied);
        assert_eq!(
            s.update_now(k, 1, rec(2), TTL),
            Write::Conflict,
            "stale version"
        );
        assert_eq!(cold_version(&s, k), Some(2));
    }

    #[test]
    fn rotate_moves_only_from_expected_version() {
        let s = MemoryStore::new();
        let (old, new) = (
            SessionToken::generate().key(),
            SessionToken::generate().key(),
        );
        let _ = s.create_now(old, rec(3), TTL);
        assert_eq!(s.rotate_now(old, 2, new, rec(1), TTL), Write::Conflict);
        assert_eq!(
            cold_version(&s, new),
            None,
            "a failed rotation leaves no new record"
        );
        assert_eq!(s.rotate_now(old, 3, new, rec(1), TTL), Write::Applied);
        assert_eq!(cold_version(&s, old), None);
        assert_eq!(cold_version(&s, new), Some(1));
    }

    #[test]
    fn delete_removes_hot_copy_and_index_entry() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        let _ = s.create_now(k, user_rec("u"), TTL);
        assert!(s.read(k).unwrap().is_some(), "hot");
        assert_eq!(s.user_live("u").len(), 1);
        assert!(s.delete_now(k));
        assert!(s.read(k).unwrap().is_none());
        assert!(s.user_live("u").is_empty());
        assert_eq!(indexed(&s, "u"), 0);
        assert!(!s.delete_now(k));
    }

    #[test]
    fn a_store_filled_to_capacity_keeps_every_session() {
        let s = MemoryStore::with_capacity(1000);
        let keys: Vec<_> = (0..1000).map(|_| SessionToken::generate().key()).collect();
        for k in &keys {
            assert_eq!(s.create_now(*k, user_rec("x"), TTL), Write::Applied);
        }
        assert_eq!(s.len(), 1000);
        assert!(keys.iter().all(|k| cold_version(&s, *k).is_some()));
        let _ = s.create_now(SessionToken::generate().key(), user_rec("x"), TTL);
        assert_eq!(s.len(), 1000, "one more evicts one");
    }

    #[test]
    fn many_sessions_of_one_user_are_all_indexed() {
        let s = MemoryStore::with_capacity(20_000);
        for _ in 0..20_000 {
            let _ = s.create_now(SessionToken::generate().key(), user_rec("alice"), TTL);
        }
        assert_eq!(indexed(&s, "alice"), 20_000);
    }

    #[test]
    fn capacity_is_a_bound_and_evictions_leave_the_index_consistent() {
        let s = MemoryStore::with_capacity(SHARDS as u64 * 4);
        let keys: Vec<_> = (0..SHARDS * 10)
            .map(|_| SessionToken::generate().key())
            .collect();
        for k in &keys {
            let _ = s.create_now(*k, user_rec("many"), TTL);
        }
        assert!(s.len() <= SHARDS as u64 * 4, "{} sessions", s.len());
        assert_eq!(indexed(&s, "many") as u64, s.len());
    }

    #[test]
    fn expired_sessions_are_not_served_and_are_swept() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        let _ = s.create_now(k, user_rec("gone"), Duration::ZERO);
        s.inner.hot.invalidate(&k);
        assert!(s.read(k).unwrap().is_none());
        // Enough writes to the same shard trigger a sweep.
        let p = prefix(&k);
        let mut shard = write(s.shard(p));
        shard.writes = SWEEP_EVERY;
        s.maintain(&mut shard);
        assert!(!shard.map.contains_key(&p));
        drop(shard);
        assert_eq!(indexed(&s, "gone"), 0);
    }

    #[test]
    fn a_big_users_index_becomes_a_set_and_shrinks_back() {
        let mut index = UserIndex::default();
        for p in 0..1000 {
            index.add(7, p);
        }
        assert!(matches!(index.map.get(&7), Some(Keys::Set(_))));
        assert_eq!(index.get(7).len(), 1000);
        for p in 0..990 {
            index.remove(7, p);
        }
        assert!(matches!(index.map.get(&7), Some(Keys::Many(l)) if l.len() == 10));
        let gone: HashSet<u64, BuildKeyHasher> = (990..1000).collect();
        index.remove_all(7, &gone);
        assert!(index.map.is_empty());
    }

    #[test]
    fn listing_prunes_ended_sessions_from_the_index_only() {
        let s = MemoryStore::new();
        for _ in 0..5 {
            let _ = s.create_now(
                SessionToken::generate().key(),
                user_rec("u"),
                Duration::ZERO,
            );
        }
        let live: Vec<_> = (0..3).map(|_| SessionToken::generate().key()).collect();
        for k in &live {
            let _ = s.create_now(*k, user_rec("u"), TTL);
        }
        assert_eq!(indexed(&s, "u"), 8);
        assert_eq!(s.user_live("u").len(), 3);
        assert_eq!(indexed(&s, "u"), 3, "expired ones pruned");
    }
}
