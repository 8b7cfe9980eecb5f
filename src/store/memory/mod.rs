//! The embedded store: compact records in sharded maps, with a bounded moka cache of decoded
//! records as the hot path.
//!
//! Why two tiers: moka costs about 480 bytes per entry with per-entry expiry, before the
//! record itself (identity strings, vectors, a map: another few hundred bytes and a dozen
//! allocations). A million live sessions would then need around a gigabyte. Here every
//! session is one compact heap block ([`compact`]) in a plain hash map keyed
//! by 64 bits of its key, about 200 bytes all told, while the sessions that are actually in
//! use sit decoded in moka, so a request on a hot session costs one moka lookup and no
//! decoding. See `docs/ARCHITECTURE.md` and `BENCHMARKS.md` for the measurements.
//!
//! Consistency between the tiers: every write to a shard updates or invalidates the moka
//! entry while it still holds the shard's write lock, and a read that misses moka fills it
//! while it holds the shard's read lock, so a stale record can never be put back into moka
//! after a write (in particular, a deleted session can never reappear).
//!
//! Room, and who gives it up: guests (sessions without an identity) cost an attacker
//! nothing to create, so they live in a budget of their own and leave in creation order (a
//! FIFO per shard, oldest first across shards); a logged-in user's session is never evicted
//! for a guest. A new session takes its slot before it locks its own shard, so a victim in
//! another shard is evicted with only the victim's shard locked: no two shard locks are ever
//! held at once.
//!
//! Lineage: a rotated-away key stays for [`FORWARD_TTL`] as a forwarding entry to its
//! successor, in the same map (same key and expiry fields), so that a logout or revocation
//! racing a rotation ends the successor too. Forwards count against no capacity but are
//! bounded: they expire in the order they were written, each shard keeps them in a FIFO
//! that drops expired ones as new ones come, and a shard holds at most its share of a
//! quarter of the capacity.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{ready, Future};
use std::hash::BuildHasher;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;

use super::{
    LimitPolicy, LoginOutcome, SessionLimit, SessionStore, StoreError, WriteOutcome, FORWARD_TTL,
    MAX_FORWARD_HOPS,
};
use crate::id::SessionKey;
use crate::record::SessionRecord;
use compact::Blob;

// `pub(crate)` for the fuzz targets' entry points (src/fuzz.rs, `--cfg fuzzing` only).
pub(crate) mod compact;

/// Default capacity: enough for a busy single instance; a live session costs about 200 bytes
/// here, so this bounds the store near 40 MB.
pub const DEFAULT_CAPACITY: u64 = 200_000;
/// Default number of decoded sessions kept in the moka hot cache.
pub const DEFAULT_HOT_CAPACITY: u64 = 16_384;

const SHARDS: usize = 64;
/// A shard is swept for expired sessions after this many writes (or, under pressure, see
/// [`PRESSURE_SWEEP_RATIO`]), so expiry costs a few entry checks per write and needs no
/// background thread.
const SWEEP_EVERY: u32 = 1024;
/// When the store or the guest budget is full, a shard is swept before anyone is evicted,
/// but at most once per this many of its writes per entry it holds (so at most this many
/// entry checks per write, amortised) or once per [`PRESSURE_SWEEP_INTERVAL_NS`]. Sweeping
/// on every write at capacity, as this store once did, cost a whole shard (thousands of cache
/// misses) per refused guest: a flood of guests would have bought that CPU for free.
const PRESSURE_SWEEP_RATIO: usize = 16;
/// See [`PRESSURE_SWEEP_RATIO`]: one second.
const PRESSURE_SWEEP_INTERVAL_NS: u64 = 1_000_000_000;
/// Sessions looked at (from a random place) to pick a logged-in user to evict, when the
/// store is full, holds no guest, and a login needs room.
const EVICTION_SAMPLE: usize = 16;
/// Tries at taking a victim's slot when concurrent writers keep winning the race for it.
const EVICTION_ATTEMPTS: usize = 8;
/// A user's index list becomes a hash set beyond this many sessions, so that adding and
/// removing stay O(1) for a user with very many sessions (and it turns back into a list
/// below half of it).
const INDEX_LIST_MAX: usize = 32;
/// Forwarding entries are bounded to `capacity / FORWARD_SHARE` (spread over the shards,
/// at least [`MIN_FORWARDS_PER_SHARD`] each): one costs ~130 bytes, so a flood of rotations
/// can add at most about a sixth to the store's memory. Beyond it the oldest forwards end
/// early, which only shortens the window in which a racing logout follows them.
const FORWARD_SHARE: u64 = 4;
const MIN_FORWARDS_PER_SHARD: usize = 16;

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

/// Takes one slot of `counter` if it is below `cap`.
fn take_slot(counter: &AtomicUsize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

/// Gives one slot of `counter` back (never below zero, so a bookkeeping slip can never wrap
/// around into a store that looks full forever).
fn give_slot(counter: &AtomicUsize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
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
    /// First 64 bits of the key → the session or forwarding entry; the blob holds the full
    /// key, checked on every lookup.
    map: HashMap<u64, Blob, BuildKeyHasher>,
    /// Writes since the last sweep.
    writes: u32,
    /// When the last sweep ran (ns since the epoch).
    swept_at: u64,
    /// This shard's guests in creation order: key prefix and a store-wide sequence number.
    /// Entries of guests that ended stay until they reach the front or the queue is
    /// compacted (when it holds more than twice the live guests), but the front is always a
    /// live guest: removing the front guest pops every stale entry behind it.
    guests: VecDeque<(u64, u64)>,
    /// Guest sessions in `map`.
    guest_count: usize,
    /// Forwarding entries in the order they were written, which is the order they expire
    /// (they all live [`FORWARD_TTL`]); stale entries are skipped when they reach the front.
    forwards: VecDeque<u64>,
    /// Forwarding entries in `map`.
    forward_count: usize,
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

/// Which of a removed session's slots the remover keeps (to hand to the session it makes
/// room for) instead of giving them back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    /// Its slot against the capacity (its guest slot, if any, is given back).
    Session,
    /// Its slot against the capacity and, if it is a guest, its guest slot.
    SessionAndGuest,
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    hot: Cache<SessionKey, Arc<SessionRecord>, BuildKeyHasher>,
    index: Box<[Mutex<UserIndex>]>,
    /// The index's hash key.
    users: RandomState,
    /// Serialises logins, so the session limit holds under concurrent logins of one user.
    logins: Mutex<()>,
    /// Sessions (guests and users) held or being written, against `capacity`. Forwarding
    /// entries do not count.
    count: AtomicUsize,
    /// Guest sessions held or being written, against `guest_capacity`.
    guests: AtomicUsize,
    /// Creation order of guests, store-wide.
    guest_seq: AtomicU64,
    /// Per shard: the sequence number of its oldest guest (`u64::MAX`: none), so that the
    /// store's oldest guest is found without locking every shard. Written under the shard's
    /// lock; readers check it again under that lock.
    oldest_guest: Box<[AtomicU64]>,
    /// Which sessions missed the hot cache recently.
    doorkeeper: Doorkeeper,
    capacity: usize,
    guest_capacity: usize,
    forwards_per_shard: usize,
    forward_ttl: Duration,
}

/// Sessions in process memory.
///
/// **Bounded, and guests never displace users.** At most `capacity` sessions; guest sessions
/// (no identity: what any anonymous request that stores something creates) at most
/// `guest_capacity` of them, set with [`MemoryStore::builder`]. The default is half the
/// capacity: guests cost an attacker nothing, so a flood of them may take at most half the
/// memory, while the guests of an ordinary day get as much room as the users (who can still
/// fill the whole store: a login may displace a guest). When room is needed, expired sessions
/// are swept first (at a bounded cost per write), then the oldest guests leave. A new
/// guest that finds the store full of logged-in users' sessions is refused with
/// [`StoreError::full`] (the layer answers 503 with `Retry-After`): a user is never logged out
/// to make room for a guest. Only a login that finds no guest to displace evicts a user: the
/// session nearest to its expiry among a random sample. Size the capacity for your peak of
/// logged-in users plus the guest budget.
///
/// Expired sessions are swept as writes go by, with no background thread. Writes are
/// compare-and-set under a shard lock, which gives the [`SessionStore`] contract; a rotated
/// key forwards to its successor for [`FORWARD_TTL`](super::FORWARD_TTL). The per-user
/// index is kept in step by every write, delete, sweep and eviction. Clones share the same
/// sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// Settings of a [`MemoryStore`]: `MemoryStore::builder().capacity(n).build()`.
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    capacity: u64,
    hot_capacity: Option<u64>,
    guest_capacity: Option<u64>,
    forward_ttl: Duration,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        MemoryStoreBuilder {
            capacity: DEFAULT_CAPACITY,
            hot_capacity: None,
            guest_capacity: None,
            forward_ttl: FORWARD_TTL,
        }
    }
}

impl MemoryStoreBuilder {
    /// The most sessions held, guests and logged-in users together (at least 1; default
    /// [`DEFAULT_CAPACITY`]). A live logged-in session costs about 250 bytes.
    pub fn capacity(mut self, max_sessions: u64) -> Self {
        self.capacity = max_sessions;
        self
    }

    /// How many sessions are kept decoded in the moka hot cache (default
    /// [`DEFAULT_HOT_CAPACITY`], or the capacity if that is smaller). Size it for the
    /// sessions active within a few minutes.
    pub fn hot_capacity(mut self, hot_sessions: u64) -> Self {
        self.hot_capacity = Some(hot_sessions);
        self
    }

    /// The most **guest** sessions (sessions without an identity) held, at most the capacity.
    ///
    /// Default: half the capacity (rounded up). Anyone can create guest sessions, one per
    /// request without a cookie, so without a budget of their own a flood of anonymous
    /// requests would decide who stays logged in. Half leaves the guests of an ordinary day
    /// (visitors before they log in: carts, login forms, CSRF tokens) as much room as the
    /// logged-in users, while a flood can never take more than half the store's memory; and
    /// since a login may displace a guest but a guest never displaces a logged-in user, users
    /// can still fill the whole store. Raise it for sites where most sessions stay anonymous,
    /// lower it where guests are rare. `0` refuses every guest session.
    pub fn guest_capacity(mut self, max_guests: u64) -> Self {
        self.guest_capacity = Some(max_guests);
        self
    }

    /// How long a rotated-away key forwards: the tests shorten it to watch forwards expire.
    #[cfg(test)]
    fn forward_ttl(mut self, ttl: Duration) -> Self {
        self.forward_ttl = ttl;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let capacity = self.capacity.max(1);
        let hot = self
            .hot_capacity
            .unwrap_or(DEFAULT_HOT_CAPACITY.min(capacity))
            .max(1);
        let guests = self
            .guest_capacity
            .unwrap_or(capacity.div_ceil(2))
            .min(capacity);
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let forwards_per_shard =
            size((capacity / FORWARD_SHARE).div_ceil(SHARDS as u64)).max(MIN_FORWARDS_PER_SHARD);
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
                hot: Cache::builder()
                    .max_capacity(hot)
                    .build_with_hasher(BuildKeyHasher::default()),
                index: (0..SHARDS).map(|_| Mutex::default()).collect(),
                users: RandomState::new(),
                logins: Mutex::new(()),
                count: AtomicUsize::new(0),
                guests: AtomicUsize::new(0),
                guest_seq: AtomicU64::new(0),
                oldest_guest: (0..SHARDS).map(|_| AtomicU64::new(u64::MAX)).collect(),
                doorkeeper: Doorkeeper::new(),
                capacity: size(capacity),
                guest_capacity: size(guests),
                forwards_per_shard,
                forward_ttl: self.forward_ttl,
            }),
        }
    }
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
        Self::builder().build()
    }

    /// Settings beyond the capacities of [`with_capacities`](Self::with_capacities): the
    /// guest budget.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// A store holding at most `max_sessions` sessions, with the default hot cache and guest
    /// budget.
    pub fn with_capacity(max_sessions: u64) -> Self {
        Self::builder().capacity(max_sessions).build()
    }

    /// A store holding at most `max_sessions` sessions, of which up to `hot_sessions` are
    /// kept decoded in moka for the hot path. Size `hot_sessions` for the sessions active
    /// within a few minutes.
    pub fn with_capacities(max_sessions: u64, hot_sessions: u64) -> Self {
        Self::builder()
            .capacity(max_sessions)
            .hot_capacity(hot_sessions)
            .build()
    }

    /// How many sessions are held (including expired ones not yet swept; not counting keys
    /// that only forward to a rotated session).
    pub fn len(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|s| {
                let s = read(s);
                s.map.len().saturating_sub(s.forward_count) as u64
            })
            .sum()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(p: u64) -> usize {
        // The low bits pick the shard; the hasher mixes all 64 bits for the map itself.
        (p as usize) % SHARDS
    }

    fn shard(&self, p: u64) -> &RwLock<Shard> {
        &self.inner.shards[Self::shard_of(p)]
    }

    /// The user's index shard, locked, and the user's hash within it.
    fn index(&self, user: &str) -> (MutexGuard<'_, UserIndex>, u64) {
        let h = self.inner.users.hash_one(user);
        (lock(&self.inner.index[(h as usize) % SHARDS]), h)
    }

    /// Puts a session into a shard the caller holds; the caller holds its slots.
    fn insert_locked(
        &self,
        i: usize,
        shard: &mut Shard,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) {
        let p = prefix(&key);
        shard
            .map
            .insert(p, Blob::encode(&key, &record, Self::expires(ttl)));
        match &record.identity {
            Some(identity) => {
                let (mut index, h) = self.index(&identity.user_id);
                index.add(h, p);
            }
            None => self.push_guest(i, shard, p),
        }
        // Guests enter the hot tier only through reads (the doorkeeper's second miss): a
        // flood of new guests must not push logged-in users' sessions out of it.
        if record.identity.is_some() {
            self.inner.hot.insert(key, record);
        } else {
            self.inner.hot.invalidate(&key);
        }
    }

    fn push_guest(&self, i: usize, shard: &mut Shard, p: u64) {
        let seq = self.inner.guest_seq.fetch_add(1, Ordering::Relaxed);
        shard.guests.push_back((p, seq));
        shard.guest_count += 1;
        if shard.guests.len() > 2 * shard.guest_count + 16 {
            // Mostly guests that ended: drop them (amortised O(1) per guest).
            let map = &shard.map;
            shard
                .guests
                .retain(|(p, _)| map.get(p).is_some_and(Blob::is_guest));
        }
        self.settle_guests(i, shard);
    }

    /// Pops guests that ended off the front of the shard's queue and publishes its oldest.
    fn settle_guests(&self, i: usize, shard: &mut Shard) {
        while let Some(&(p, _)) = shard.guests.front() {
            if shard.map.get(&p).is_some_and(Blob::is_guest) {
                break;
            }
            shard.guests.pop_front();
        }
        let oldest = shard.guests.front().map_or(u64::MAX, |&(_, seq)| seq);
        self.inner.oldest_guest[i].store(oldest, Ordering::Relaxed);
    }

    /// Removes `p` from a shard the caller holds, with the hot entry and the index entry, and
    /// gives back the slots it held except those in `keep`.
    fn remove_locked(&self, i: usize, shard: &mut Shard, p: u64, keep: Keep) -> Option<Blob> {
        let blob = shard.map.remove(&p)?;
        if !blob.is_session() {
            // A forwarding entry: it holds no slot and was never in moka or the index.
            shard.forward_count = shard.forward_count.saturating_sub(1);
            return Some(blob);
        }
        if keep == Keep::Nothing {
            give_slot(&self.inner.count);
        }
        self.inner.hot.invalidate(&blob.key(p));
        if blob.is_guest() {
            shard.guest_count = shard.guest_count.saturating_sub(1);
            if keep != Keep::SessionAndGuest {
                give_slot(&self.inner.guests);
            }
            self.settle_guests(i, shard);
        } else if let Some(user) = blob.user_id() {
            let (mut index, h) = self.index(user);
            index.remove(h, p);
        }
        Some(blob)
    }

    /// Counts a write to the shard and sweeps its expired sessions and forwards when it is
    /// due: every [`SWEEP_EVERY`] writes, and sooner when room is short (`guest`: the write
    /// is a guest's, so a full guest budget counts) but at a bounded cost per write.
    fn maintain(&self, i: usize, shard: &mut Shard, guest: bool) {
        shard.writes = shard.writes.saturating_add(1);
        let inner = &*self.inner;
        let pressure = inner.count.load(Ordering::Relaxed) >= inner.capacity
            || (guest && inner.guests.load(Ordering::Relaxed) >= inner.guest_capacity);
        if shard.writes < SWEEP_EVERY && !pressure {
            return;
        }
        let now = now_ns();
        let due = shard.writes >= SWEEP_EVERY
            || (shard.writes as usize).saturating_mul(PRESSURE_SWEEP_RATIO) >= shard.map.len()
            || now.saturating_sub(shard.swept_at) >= PRESSURE_SWEEP_INTERVAL_NS;
        if due {
            self.sweep(i, shard, now);
        }
    }

    /// Removes the shard's expired sessions and forwards.
    fn sweep(&self, i: usize, shard: &mut Shard, now: u64) {
        shard.writes = 0;
        shard.swept_at = now;
        let expired: Vec<u64> = shard
            .map
            .iter()
            .filter(|(_, b)| b.expires_at() <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.remove_locked(i, shard, p, Keep::Nothing);
        }
        self.trim_forwards(shard, now);
    }

    /// Drops forwards off the front of the shard's queue while they are expired or the shard
    /// holds more than its share; skips entries whose forward is already gone.
    fn trim_forwards(&self, shard: &mut Shard, now: u64) {
        while let Some(&p) = shard.forwards.front() {
            let over = shard.forwards.len() > self.inner.forwards_per_shard;
            match shard.map.get(&p) {
                Some(b) if !b.is_session() => {
                    if !over && b.expires_at() > now {
                        break;
                    }
                    shard.map.remove(&p);
                    shard.forward_count = shard.forward_count.saturating_sub(1);
                }
                _ => {}
            }
            shard.forwards.pop_front();
        }
    }

    /// Takes the slots a new session needs if they are free, without evicting anyone.
    fn take_free_slots(&self, guest: bool) -> bool {
        let inner = &*self.inner;
        if guest && !take_slot(&inner.guests, inner.guest_capacity) {
            return false;
        }
        if take_slot(&inner.count, inner.capacity) {
            return true;
        }
        if guest {
            give_slot(&inner.guests);
        }
        false
    }

    fn give_back_slots(&self, guest: bool) {
        give_slot(&self.inner.count);
        if guest {
            give_slot(&self.inner.guests);
        }
    }

    /// Takes the slots a new session needs, making room if the store or the guest budget is
    /// full: the oldest guest leaves first; a guest never displaces a user and is refused
    /// instead; a user displaces a sampled user only when there is no guest. Called with no
    /// shard lock held, since the victim may live in any shard.
    fn make_room(&self, guest: bool) -> Result<(), StoreError> {
        let inner = &*self.inner;
        if guest && !take_slot(&inner.guests, inner.guest_capacity) {
            // The guest budget is spent: the oldest guest hands over both of its slots.
            if self.evict_oldest_guest(Keep::SessionAndGuest) {
                return Ok(());
            }
            if !take_slot(&inner.guests, inner.guest_capacity) {
                return Err(StoreError::full(
                    "memory store: the guest budget is spent and holds no guest to replace",
                ));
            }
        }
        if take_slot(&inner.count, inner.capacity)
            || self.evict_oldest_guest(Keep::Session)
            || (!guest && self.evict_sampled_user())
            || take_slot(&inner.count, inner.capacity)
        {
            return Ok(());
        }
        if guest {
            give_slot(&inner.guests);
            return Err(StoreError::full(
                "memory store: full of logged-in users' sessions, which a guest never displaces",
            ));
        }
        // Only when concurrent writers took every slot this login freed, over and over: a
        // login is not refused for that, the bound is exceeded by one until the next sweep or
        // eviction.
        inner.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Evicts the store's oldest guest (by creation); false if there is none.
    fn evict_oldest_guest(&self, keep: Keep) -> bool {
        for _ in 0..EVICTION_ATTEMPTS {
            let oldest = self
                .inner
                .oldest_guest
                .iter()
                .map(|seq| seq.load(Ordering::Relaxed))
                .enumerate()
                .filter(|&(_, seq)| seq != u64::MAX)
                .min_by_key(|&(_, seq)| seq);
            let Some((i, seq)) = oldest else {
                return false;
            };
            let mut shard = write(&self.inner.shards[i]);
            match shard.guests.front() {
                Some(&(p, s)) if s == seq => {
                    if self.remove_locked(i, &mut shard, p, keep).is_some() {
                        return true;
                    }
                    // Cannot happen (the front is always a live guest); repair and retry.
                    shard.guests.pop_front();
                    self.settle_guests(i, &mut shard);
                }
                // The shard changed since we looked: look again.
                _ => {}
            }
        }
        false
    }

    /// Evicts the session nearest to its expiry among [`EVICTION_SAMPLE`] sessions read
    /// from a random place (a random shard, from a random offset in its iteration order, and
    /// on into the next shards if it holds fewer), keeping its slot. Never the start of a
    /// shard's iteration order as such: that would always pick the same few sessions. Costs
    /// a walk to the offset (the map's slots, not the sessions), only for a login into a full
    /// store without guests. False if the store holds no session at all.
    fn evict_sampled_user(&self) -> bool {
        for _ in 0..EVICTION_ATTEMPTS {
            let first = rand::random::<u64>() as usize % SHARDS;
            // (expiry, shard, prefix) of the best candidate so far.
            let mut best: Option<(u64, usize, u64)> = None;
            let mut seen = 0;
            for k in 0..SHARDS {
                if seen >= EVICTION_SAMPLE {
                    break;
                }
                let i = (first + k) % SHARDS;
                let shard = read(&self.inner.shards[i]);
                let held = shard.map.len();
                if held == shard.forward_count {
                    continue;
                }
                let offset = rand::random::<u64>() as usize % held;
                let sample = shard
                    .map
                    .iter()
                    .skip(offset)
                    .chain(shard.map.iter().take(offset))
                    .filter(|(_, b)| b.is_session())
                    .take(EVICTION_SAMPLE - seen);
                for (p, b) in sample {
                    seen += 1;
                    let expires = b.expires_at();
                    if best.is_none_or(|(e, _, _)| expires < e) {
                        best = Some((expires, i, *p));
                    }
                }
            }
            let Some((expires, i, p)) = best else {
                return false;
            };
            let mut shard = write(&self.inner.shards[i]);
            // Still the session we chose (not replaced meanwhile): evict it.
            let unchanged = shard
                .map
                .get(&p)
                .is_some_and(|b| b.is_session() && b.expires_at() == expires);
            if unchanged
                && self
                    .remove_locked(i, &mut shard, p, Keep::Session)
                    .is_some()
            {
                return true;
            }
        }
        false
    }

    /// When the store may drop a record written now. The layer computes `ttl` from its own
    /// clock; the store only needs it as a duration on the real clock that sweeps use.
    fn expires(ttl: Duration) -> SystemTime {
        SystemTime::now() + ttl
    }

    fn create_now(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        let p = prefix(&key);
        let i = Self::shard_of(p);
        let guest = record.identity.is_none();
        {
            let mut shard = write(&self.inner.shards[i]);
            if shard.map.contains_key(&p) {
                // Taken (by this key, a key forwarding from it, or, once in 2^64, by another
                // with the same 64 bits).
                return Ok(WriteOutcome::Conflict);
            }
            self.maintain(i, &mut shard, guest);
            if self.take_free_slots(guest) {
                self.insert_locked(i, &mut shard, key, record, ttl);
                return Ok(WriteOutcome::Applied);
            }
        }
        self.make_room(guest)?;
        let mut shard = write(&self.inner.shards[i]);
        if shard.map.contains_key(&p) {
            self.give_back_slots(guest);
            return Ok(WriteOutcome::Conflict);
        }
        self.insert_locked(i, &mut shard, key, record, ttl);
        Ok(WriteOutcome::Applied)
    }

    fn update_now(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> WriteOutcome {
        let p = prefix(&key);
        let i = Self::shard_of(p);
        let mut shard = write(&self.inner.shards[i]);
        let Some(blob) = shard.map.get_mut(&p) else {
            return WriteOutcome::Conflict;
        };
        if !(blob.is_session() && blob.is_for(&key) && blob.version() == expected) {
            return WriteOutcome::Conflict;
        }
        let owner = record.identity.as_ref().map(|i| i.user_id.as_str());
        if blob.is_guest() == owner.is_none() && blob.user_id() == owner {
            *blob = Blob::encode(&key, &record, Self::expires(ttl));
            // A guest's write refreshes its hot entry only if it already has one (its reads
            // admitted it); otherwise it stays out, as at creation.
            if owner.is_some() || self.inner.hot.contains_key(&key) {
                self.inner.hot.insert(key, record);
            } else {
                self.inner.hot.invalidate(&key);
            }
            return WriteOutcome::Applied;
        }
        // The layer never changes the owner in an update (only rotate and login do); if a
        // caller does, the guest budget and the index follow it.
        let was_guest = blob.is_guest();
        self.remove_locked(i, &mut shard, p, Keep::SessionAndGuest);
        match (was_guest, owner.is_none()) {
            (true, false) => give_slot(&self.inner.guests),
            (false, true) => {
                self.inner.guests.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.insert_locked(i, &mut shard, key, record, ttl);
        WriteOutcome::Applied
    }

    /// Turns `old` (if it is a session at version `expected`) into a forwarding entry to
    /// `new`, giving back its slots.
    fn retire(&self, old: SessionKey, expected: u64, new: SessionKey) -> bool {
        let p = prefix(&old);
        let i = Self::shard_of(p);
        let mut shard = write(&self.inner.shards[i]);
        let matches = shard
            .map
            .get(&p)
            .is_some_and(|b| b.is_session() && b.is_for(&old) && b.version() == expected);
        if !matches
            || self
                .remove_locked(i, &mut shard, p, Keep::Nothing)
                .is_none()
        {
            return false;
        }
        let forward = Blob::forward(&old, &new, SystemTime::now() + self.inner.forward_ttl);
        shard.map.insert(p, forward);
        shard.forward_count += 1;
        shard.forwards.push_back(p);
        self.trim_forwards(&mut shard, now_ns());
        true
    }

    /// Removes the session under `key` (not following forwards); whether it was there.
    fn remove_session(&self, key: SessionKey) -> bool {
        let p = prefix(&key);
        let i = Self::shard_of(p);
        let mut shard = write(&self.inner.shards[i]);
        let matches = shard
            .map
            .get(&p)
            .is_some_and(|b| b.is_session() && b.is_for(&key));
        matches
            && self
                .remove_locked(i, &mut shard, p, Keep::Nothing)
                .is_some()
    }

    /// Removes `key` and, if it forwards, what it forwards to (at most [`MAX_FORWARD_HOPS`]
    /// hops, each under its own shard lock only). True if a live session was removed.
    fn delete_now(&self, key: SessionKey) -> bool {
        let now = now_ns();
        let mut key = key;
        for hop in 0..=MAX_FORWARD_HOPS {
            let p = prefix(&key);
            let i = Self::shard_of(p);
            let mut shard = write(&self.inner.shards[i]);
            let (live, next) = match shard.map.get(&p) {
                Some(b) if b.is_for(&key) => {
                    let live = b.expires_at() > now;
                    match b.forward_target() {
                        // An expired forward no longer leads anywhere.
                        Some(to) => (false, (live && hop < MAX_FORWARD_HOPS).then_some(to)),
                        None => (live, None),
                    }
                }
                _ => return false,
            };
            self.remove_locked(i, &mut shard, p, Keep::Nothing);
            match next {
                Some(to) => key = to,
                None => return live,
            }
        }
        false
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
        // A forwarding entry reads as absent (and never enters moka).
        if !blob.is_session() || blob.expires_at() <= now_ns() {
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
    ) -> WriteOutcome {
        let p = prefix(&old);
        let old_is_there = read(self.shard(p))
            .map
            .get(&p)
            .is_some_and(|b| b.is_session() && b.is_for(&old) && b.version() == expected);
        if !old_is_there {
            return WriteOutcome::Conflict;
        }
        // The new record takes the old one's slots on credit: the old one gives them back a
        // moment later (or the new one does, on conflict), so a rotation never evicts anyone,
        // even in a full store.
        let guest = record.identity.is_none();
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        if guest {
            self.inner.guests.fetch_add(1, Ordering::Relaxed);
        }
        // New first, then old: there is never an instant with neither. The new key has not
        // been sent to any client yet, so the instant with both is invisible to clients.
        {
            let q = prefix(&new);
            let i = Self::shard_of(q);
            let mut shard = write(&self.inner.shards[i]);
            if shard.map.contains_key(&q) {
                self.give_back_slots(guest);
                return WriteOutcome::Conflict;
            }
            self.maintain(i, &mut shard, false);
            self.insert_locked(i, &mut shard, new, record, ttl);
        }
        if self.retire(old, expected, new) {
            WriteOutcome::Applied
        } else {
            // The old session changed or ended meanwhile (a concurrent logout, say): undo.
            self.remove_session(new);
            WriteOutcome::Conflict
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
                Some(b) if b.is_session() => match b.user_id() {
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
                _ => {
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
            b.is_session()
                && b.is_for(&key)
                && b.expires_at() > now_ns()
                && b.user_id() == Some(user_id)
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
            .field("guests", &self.inner.guests.load(Ordering::Relaxed))
            .field("capacity", &self.inner.capacity)
            .field("guest_capacity", &self.inner.guest_capacity)
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

    /// Fails with [`StoreError::full`] for a guest when the guest budget holds no guest to
    /// replace, or the store is full of logged-in users' sessions.
    fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        ready(self.create_now(key, record, ttl))
    }

    fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        ready(Ok(self.update_now(key, expected, record, ttl)))
    }

    fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
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
    ) -> impl Future<Output = Result<LoginOutcome, StoreError>> + Send {
        ready(self.login_now(old, new, record, ttl, limit))
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

impl MemoryStore {
    fn login_now(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
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
                return Ok(LoginOutcome::LimitReached);
            }
        }
        let written = match old {
            Some((old, expected)) => self.rotate_now(old, expected, new, record, ttl),
            None => self.create_now(new, record, ttl)?,
        };
        if written == WriteOutcome::Conflict {
            return Ok(LoginOutcome::Conflict);
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
        Ok(LoginOutcome::Applied { evicted })
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

    fn create(
        s: &MemoryStore,
        k: SessionKey,
        r: Arc<SessionRecord>,
        ttl: Duration,
    ) -> WriteOutcome {
        s.create_now(k, r, ttl).unwrap()
    }

    /// A fresh key whose session lands in shard `i`.
    fn key_in_shard(i: usize) -> SessionKey {
        loop {
            let k = SessionToken::generate().key();
            if MemoryStore::shard_of(prefix(&k)) == i {
                return k;
            }
        }
    }

    /// Every counter agrees with what the maps hold, and every shard's guest queue starts
    /// with a live guest whose number is published.
    fn assert_books_balance(s: &MemoryStore) {
        let (mut sessions, mut guests) = (0, 0);
        for (i, shard) in s.inner.shards.iter().enumerate() {
            let shard = read(shard);
            let forwards = shard.map.values().filter(|b| !b.is_session()).count();
            let g = shard.map.values().filter(|b| b.is_guest()).count();
            assert_eq!(shard.forward_count, forwards, "shard {i}: forwards");
            assert_eq!(shard.guest_count, g, "shard {i}: guests");
            assert!(shard.forwards.len() <= s.inner.forwards_per_shard);
            let front = shard.guests.front().copied();
            if let Some((p, _)) = front {
                assert!(shard.map.get(&p).is_some_and(Blob::is_guest), "shard {i}");
            }
            assert_eq!(
                s.inner.oldest_guest[i].load(Ordering::Relaxed),
                front.map_or(u64::MAX, |(_, seq)| seq)
            );
            sessions += shard.map.len() - forwards;
            guests += g;
        }
        assert_eq!(s.inner.count.load(Ordering::Relaxed), sessions, "sessions");
        assert_eq!(s.inner.guests.load(Ordering::Relaxed), guests, "guests");
        assert_eq!(s.len(), sessions as u64);
    }

    #[test]
    fn create_refuses_existing_key() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        assert_eq!(create(&s, k, rec(1), TTL), WriteOutcome::Applied);
        assert_eq!(create(&s, k, rec(7), TTL), WriteOutcome::Conflict);
        assert_eq!(cold_version(&s, k), Some(1));
    }

    #[test]
    fn update_is_compare_and_set() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        assert_eq!(
            s.update_now(k, 1, rec(2), TTL),
            WriteOutcome::Conflict,
            "absent stays absent"
        );
        assert_eq!(cold_version(&s, k), None);
        let _ = create(&s, k, rec(1), TTL);
        assert_eq!(s.update_now(k, 1, rec(2), TTL), WriteOutcome::Applied);
        assert_eq!(
            s.update_now(k, 1, rec(2), TTL),
            WriteOutcome::Conflict,
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
        let _ = create(&s, old, rec(3), TTL);
        assert_eq!(
            s.rotate_now(old, 2, new, rec(1), TTL),
            WriteOutcome::Conflict
        );
        assert_eq!(
            cold_version(&s, new),
            None,
            "a failed rotation leaves no new record"
        );
        assert_eq!(
            s.rotate_now(old, 3, new, rec(1), TTL),
            WriteOutcome::Applied
        );
        assert_eq!(cold_version(&s, old), None);
        assert_eq!(cold_version(&s, new), Some(1));
        assert_books_balance(&s);
    }

    #[test]
    fn delete_removes_hot_copy_and_index_entry() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        let _ = create(&s, k, user_rec("u"), TTL);
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
            assert_eq!(create(&s, *k, user_rec("x"), TTL), WriteOutcome::Applied);
        }
        assert_eq!(s.len(), 1000);
        assert!(keys.iter().all(|k| cold_version(&s, *k).is_some()));
        let _ = create(&s, SessionToken::generate().key(), user_rec("x"), TTL);
        assert_eq!(s.len(), 1000, "one more evicts one");
        assert_books_balance(&s);
    }

    #[test]
    fn many_sessions_of_one_user_are_all_indexed() {
        let s = MemoryStore::with_capacity(20_000);
        for _ in 0..20_000 {
            let _ = create(&s, SessionToken::generate().key(), user_rec("alice"), TTL);
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
            let _ = create(&s, *k, user_rec("many"), TTL);
        }
        assert!(s.len() <= SHARDS as u64 * 4, "{} sessions", s.len());
        assert_eq!(indexed(&s, "many") as u64, s.len());
        assert_books_balance(&s);
    }

    #[test]
    fn expired_sessions_are_not_served_and_are_swept() {
        let s = MemoryStore::new();
        let k = SessionToken::generate().key();
        let g = SessionToken::generate().key();
        let _ = create(&s, k, user_rec("gone"), Duration::ZERO);
        let _ = create(&s, g, rec(1), Duration::ZERO);
        for key in [k, g] {
            s.inner.hot.invalidate(&key);
            assert!(s.read(key).unwrap().is_none());
            // Enough writes to the same shard trigger a sweep.
            let p = prefix(&key);
            let i = MemoryStore::shard_of(p);
            let mut shard = write(&s.inner.shards[i]);
            shard.writes = SWEEP_EVERY;
            s.maintain(i, &mut shard, false);
            assert!(!shard.map.contains_key(&p));
        }
        assert_eq!(indexed(&s, "gone"), 0);
        assert_books_balance(&s);
        assert!(s.is_empty());
    }

    /// The old eviction looked only at the shard being written: with every session in
    /// another shard it found no victim and the store grew past its bound.
    #[test]
    fn a_login_finds_its_victim_in_any_shard() {
        let s = MemoryStore::with_capacity(10);
        let held: Vec<_> = (0..10).map(|_| key_in_shard(0)).collect();
        for k in &held {
            assert_eq!(create(&s, *k, user_rec("u"), TTL), WriteOutcome::Applied);
        }
        let newcomer = key_in_shard(1);
        assert_eq!(
            create(&s, newcomer, user_rec("v"), TTL),
            WriteOutcome::Applied
        );
        assert_eq!(s.len(), 10);
        assert!(cold_version(&s, newcomer).is_some());
        assert_eq!(
            held.iter()
                .filter(|k| cold_version(&s, **k).is_none())
                .count(),
            1
        );
        assert_books_balance(&s);
    }

    /// The old eviction took the nearest expiry among the first 16 sessions of the shard's
    /// iteration order. Give exactly those the *latest* expiry: the old code evicts them (the
    /// worst choice, every time); a random sample almost never consists of them alone.
    #[test]
    fn users_are_evicted_from_a_random_sample_not_the_start_of_iteration() {
        let s = MemoryStore::with_capacity(256);
        for _ in 0..256 {
            let _ = create(
                &s,
                key_in_shard(0),
                user_rec("u"),
                Duration::from_secs(3600),
            );
        }
        let first: Vec<SessionKey> = {
            let shard = read(&s.inner.shards[0]);
            shard.map.iter().take(16).map(|(p, b)| b.key(*p)).collect()
        };
        for k in &first {
            assert_eq!(
                s.update_now(*k, 1, user_rec("u"), Duration::from_secs(7200)),
                WriteOutcome::Applied
            );
        }
        for _ in 0..32 {
            let _ = create(
                &s,
                key_in_shard(0),
                user_rec("u"),
                Duration::from_secs(10_800),
            );
        }
        assert_eq!(s.len(), 256);
        let lost = first
            .iter()
            .filter(|k| cold_version(&s, **k).is_none())
            .count();
        assert!(
            lost <= 2,
            "{lost} of the first 16 in iteration order evicted"
        );
        assert_books_balance(&s);
    }

    #[test]
    fn a_forward_is_never_served_nor_cached() {
        let s = MemoryStore::new();
        let (old, new) = (
            SessionToken::generate().key(),
            SessionToken::generate().key(),
        );
        let _ = create(&s, old, user_rec("u"), TTL);
        assert!(s.read(old).unwrap().is_some());
        assert_eq!(
            s.rotate_now(old, 1, new, user_rec("u"), TTL),
            WriteOutcome::Applied
        );
        for _ in 0..3 {
            // Repeated misses would pass the doorkeeper if the forward were a session.
            assert!(s.read(old).unwrap().is_none());
        }
        assert!(s.inner.hot.get(&old).is_none());
        assert_eq!(indexed(&s, "u"), 1, "only the successor is indexed");
        assert_eq!(s.len(), 1);
        assert_books_balance(&s);
    }

    /// Forwards live `FORWARD_TTL`. Time is driven through the sweep's clock and through
    /// a forward lifetime of zero, never by sleeping.
    #[test]
    fn a_forward_expires_leads_nowhere_then_and_is_swept() {
        let s = MemoryStore::new();
        let (old, new) = (
            SessionToken::generate().key(),
            SessionToken::generate().key(),
        );
        let _ = create(&s, old, user_rec("u"), TTL);
        assert_eq!(
            s.rotate_now(old, 1, new, user_rec("u"), TTL),
            WriteOutcome::Applied
        );
        let p = prefix(&old);
        let i = MemoryStore::shard_of(p);
        assert!(read(&s.inner.shards[i]).map.contains_key(&p), "written");
        // Past its lifetime (and not yet swept), a forward is not followed.
        let expired = Blob::forward(&old, &new, SystemTime::now() - Duration::from_secs(1));
        let live = std::mem::replace(write(&s.inner.shards[i]).map.get_mut(&p).unwrap(), expired);
        assert!(!s.delete_now(old), "the forward had expired");
        assert!(cold_version(&s, new).is_some(), "so the successor lives");
        // A sweep at the end of its lifetime removes a forward.
        {
            let mut shard = write(&s.inner.shards[i]);
            shard.map.insert(p, live);
            shard.forward_count += 1;
            shard.forwards.push_back(p);
            let later = now_ns() + FORWARD_TTL.as_nanos() as u64 + 1;
            s.sweep(i, &mut shard, now_ns());
            assert!(shard.map.contains_key(&p), "not before");
            s.sweep(i, &mut shard, later);
            assert!(!shard.map.contains_key(&p));
            assert_eq!(shard.forward_count, 0);
            assert!(shard.forwards.is_empty());
        }
        // A forward of zero lifetime is dropped as soon as it is written.
        let s = MemoryStore::builder().forward_ttl(Duration::ZERO).build();
        let _ = create(&s, old, user_rec("u"), TTL);
        assert_eq!(
            s.rotate_now(old, 1, new, user_rec("u"), TTL),
            WriteOutcome::Applied
        );
        assert!(!read(&s.inner.shards[i]).map.contains_key(&p));
        assert!(!s.delete_now(old));
        assert!(cold_version(&s, new).is_some());
        assert_books_balance(&s);
    }

    #[test]
    fn forwards_are_bounded_per_shard_and_expire_as_new_ones_come() {
        let s = MemoryStore::with_capacity(1000);
        let cap = s.inner.forwards_per_shard;
        assert_eq!(cap, MIN_FORWARDS_PER_SHARD);
        let mut key = SessionToken::generate().key();
        let _ = create(&s, key, user_rec("u"), TTL);
        for _ in 0..SHARDS * cap * 3 {
            let next = SessionToken::generate().key();
            assert_eq!(
                s.rotate_now(key, 1, next, user_rec("u"), TTL),
                WriteOutcome::Applied
            );
            key = next;
        }
        let forwards: usize = s.inner.shards.iter().map(|x| read(x).forward_count).sum();
        assert!(forwards <= SHARDS * cap, "{forwards} forwards");
        assert_eq!(s.len(), 1, "forwards are not sessions");
        assert_books_balance(&s);

        // With a zero lifetime, each new forward drops its expired predecessors.
        let s = MemoryStore::builder().forward_ttl(Duration::ZERO).build();
        let mut key = SessionToken::generate().key();
        let _ = create(&s, key, user_rec("u"), TTL);
        for _ in 0..SHARDS * 50 {
            let next = SessionToken::generate().key();
            assert_eq!(
                s.rotate_now(key, 1, next, user_rec("u"), TTL),
                WriteOutcome::Applied
            );
            key = next;
        }
        let forwards: usize = s.inner.shards.iter().map(|x| read(x).forward_count).sum();
        assert!(forwards <= SHARDS, "{forwards} forwards");
        assert_books_balance(&s);
    }

    #[test]
    fn the_guest_books_balance_however_guests_end() {
        let s = MemoryStore::builder()
            .capacity(400)
            .guest_capacity(100)
            .build();
        let mut guests: Vec<SessionKey> = Vec::new();
        for _ in 0..300 {
            let k = SessionToken::generate().key();
            assert_eq!(create(&s, k, rec(1), TTL), WriteOutcome::Applied);
            guests.push(k);
        }
        assert_books_balance(&s);
        let live: Vec<_> = guests
            .iter()
            .copied()
            .filter(|k| cold_version(&s, *k).is_some())
            .collect();
        assert_eq!(live, guests[200..], "the newest hundred");
        // Ended by delete, by login (rotation to a user), by an update that gives the guest
        // an identity (the layer never does; the books must follow anyway), by expiry.
        assert!(s.delete_now(live[0]));
        let user = SessionToken::generate().key();
        assert_eq!(
            s.rotate_now(live[1], 1, user, user_rec("u"), TTL),
            WriteOutcome::Applied
        );
        assert_eq!(
            s.update_now(live[2], 1, user_rec("w"), TTL),
            WriteOutcome::Applied
        );
        assert_eq!(s.user_live("w").len(), 1);
        assert_eq!(
            s.update_now(live[3], 1, rec(2), Duration::ZERO),
            WriteOutcome::Applied
        );
        assert_books_balance(&s);
        for i in 0..SHARDS {
            let mut shard = write(&s.inner.shards[i]);
            shard.writes = SWEEP_EVERY;
            s.maintain(i, &mut shard, false);
        }
        assert_books_balance(&s);
        assert_eq!(s.inner.guests.load(Ordering::Relaxed), 96);
        // A user turned back into a guest joins the queue as its newest.
        let _ = s.update_now(live[2], 1, rec(2), TTL);
        assert_books_balance(&s);
        assert_eq!(indexed(&s, "w"), 0);
    }

    #[test]
    fn the_guest_queue_is_compacted() {
        let s = MemoryStore::with_capacity(10_000);
        for _ in 0..5_000 {
            let k = SessionToken::generate().key();
            let _ = create(&s, k, rec(1), TTL);
            // A guest in the middle of its shard's queue ends: its entry goes stale.
            let keep = SessionToken::generate().key();
            let _ = create(&s, keep, rec(1), TTL);
            assert!(s.delete_now(k));
            let _ = s.delete_now(keep);
        }
        let queued: usize = s.inner.shards.iter().map(|x| read(x).guests.len()).sum();
        assert!(queued <= SHARDS * 16, "{queued} queue entries for no guest");
        assert_books_balance(&s);
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
            let _ = create(
                &s,
                SessionToken::generate().key(),
                user_rec("u"),
                Duration::ZERO,
            );
        }
        let live: Vec<_> = (0..3).map(|_| SessionToken::generate().key()).collect();
        for k in &live {
            let _ = create(&s, *k, user_rec("u"), TTL);
        }
        assert_eq!(indexed(&s, "u"), 8);
        assert_eq!(s.user_live("u").len(), 3);
        assert_eq!(indexed(&s, "u"), 3, "expired ones pruned");
        assert_books_balance(&s);
    }

    #[test]
    fn a_guest_flood_leaves_the_hot_tier_to_logged_in_users() {
        let s = MemoryStore::with_capacities(100_000, 64);
        let users: Vec<_> = (0..32).map(|_| SessionToken::generate().key()).collect();
        for k in &users {
            let _ = create(&s, *k, user_rec("u"), TTL);
        }
        for _ in 0..10_000 {
            let _ = create(&s, SessionToken::generate().key(), rec(1), TTL);
        }
        s.inner.hot.run_pending_tasks();
        for k in &users {
            assert!(
                s.inner.hot.contains_key(k),
                "a user's session was pushed out"
            );
        }
        assert_eq!(
            s.inner.hot.entry_count(),
            32,
            "no guest entered the hot tier"
        );
    }
}
