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
//! Lineage: a rotated-away key stays for [`FORWARD_TTL`](super::FORWARD_TTL) as a forwarding
//! entry to its successor, in the same map (same key and expiry fields), so that a logout or
//! revocation racing a rotation ends the successor too. Forwards count against no capacity
//! but are bounded: they expire in the order they were written, each shard keeps them in a
//! FIFO that drops expired ones as new ones come, and a shard holds at most its share of a
//! quarter of the capacity.
//!
//! Files, from the bottom up: `key_hasher` (the maps' hasher), `compact` (the record
//! encoding), `slots` (counters against the bounds), `doorkeeper` (admission to moka),
//! `user_index`, `shard`; `state` (what clones share, and the one place a session enters or
//! leaves a shard); then one file per job on that state: `sweep`, `room` (guest budget and
//! eviction), `writes`, `lineage` (rotation, forwards, delete), `users` (listing, login);
//! `builder` (settings and defaults). This file is the [`SessionStore`] face and the read
//! path, which every request takes.

use std::future::{ready, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{LoginOutcome, SessionLimit, SessionStore, StoreError, WriteOutcome};
use crate::id::SessionKey;
use crate::record::SessionRecord;

mod builder;
// `pub(crate)` for the fuzz targets' entry points (src/fuzz.rs, `--cfg fuzzing` only).
pub(crate) mod compact;
mod doorkeeper;
mod key_hasher;
mod lineage;
mod room;
mod shard;
mod slots;
mod state;
mod sweep;
#[cfg(test)]
mod tests;
mod user_index;
mod users;
mod writes;

pub use builder::MemoryStoreBuilder;
use compact::now_ns;
use key_hasher::prefix;
use shard::read_shard;
use state::StoreState;
use users::oldest_first;

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
    state: Arc<StoreState>,
}

impl MemoryStore {
    /// A store holding at most [`MemoryStoreBuilder::DEFAULT_CAPACITY`] sessions.
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
        self.state
            .shards
            .iter()
            .map(|s| {
                let s = read_shard(s);
                s.map.len().saturating_sub(s.forward_count) as u64
            })
            .sum()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        // This store routes nothing, so it never issues a tagged token: a tag in front of one
        // of its tokens makes another token, which names no session here (as on Redis, where
        // the tag is part of the key's name), not the same session under a second spelling.
        if key.route().is_some() {
            return Ok(None);
        }
        if let Some(hit) = self.state.hot.get(&key) {
            return Ok(Some(hit));
        }
        let p = prefix(&key);
        let shard = read_shard(self.state.shard(p));
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
        if self.state.doorkeeper.seen_before(p) {
            self.state.hot.insert(key, record.clone());
        }
        Ok(Some(record))
    }
}

impl MemoryStoreBuilder {
    /// The store.
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            state: Arc::new(self.into_state()),
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
            .field("sessions", &self.len())
            .field("guests", &self.state.guest_slots.load(Ordering::Relaxed))
            .field("capacity", &self.state.capacity)
            .field("guest_capacity", &self.state.guest_capacity)
            .field("hot", &self.state.hot.entry_count())
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
        ready(self.state.create_now(key, record, ttl))
    }

    fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        ready(Ok(self.state.update_now(key, expected, record, ttl)))
    }

    fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        ready(Ok(self.state.rotate_now(old, expected, new, record, ttl)))
    }

    fn delete(&self, key: SessionKey) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.state.delete_now(key)))
    }

    fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> impl Future<Output = Result<LoginOutcome, StoreError>> + Send {
        ready(self.state.login_now(old, new, record, ttl, limit))
    }

    fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError>> + Send
    {
        let oldest = oldest_first(self.state.live_sessions_of(user_id), limit);
        let sessions = oldest
            .into_iter()
            .filter_map(|(_, key)| Some((key, self.state.decode_user_session(key, user_id)?)))
            .collect();
        ready(Ok(sessions))
    }
}
