//! The store's settings and their defaults.

use std::collections::hash_map::RandomState;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use moka::sync::Cache;

use super::doorkeeper::Doorkeeper;
use super::key_hasher::BuildKeyHasher;
use super::shard::{Shard, SHARDS};
use super::state::StoreState;
use crate::store::FORWARD_TTL;

/// Forwarding entries are bounded to `capacity / FORWARD_SHARE` (spread over the shards,
/// at least [`MIN_FORWARDS_PER_SHARD`] each): one costs ~130 bytes, so a flood of rotations
/// can add at most about a sixth to the store's memory. Beyond it the oldest forwards end
/// early, which only shortens the window in which a racing logout follows them.
const FORWARD_SHARE: u64 = 4;
pub(super) const MIN_FORWARDS_PER_SHARD: usize = 16;

/// Settings of a [`MemoryStore`](super::MemoryStore): `MemoryStore::builder().capacity(n).build()`.
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    capacity: u64,
    hot_capacity: Option<u64>,
    guest_capacity: Option<u64>,
    forward_ttl: Duration,
}

/// The defaults, with their reasons.
impl MemoryStoreBuilder {
    /// Default capacity: enough for a busy single instance; a live session costs about 200
    /// bytes here, so this bounds the store near 40 MB.
    pub const DEFAULT_CAPACITY: u64 = 200_000;
    /// Default number of decoded sessions kept in the moka hot cache.
    pub const DEFAULT_HOT_CAPACITY: u64 = 16_384;
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        MemoryStoreBuilder {
            capacity: Self::DEFAULT_CAPACITY,
            hot_capacity: None,
            guest_capacity: None,
            forward_ttl: FORWARD_TTL,
        }
    }
}

impl MemoryStoreBuilder {
    /// The most sessions held, guests and logged-in users together (at least 1; default
    /// [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY)). A live logged-in session costs about 250 bytes.
    pub fn capacity(mut self, max_sessions: u64) -> Self {
        self.capacity = max_sessions;
        self
    }

    /// How many sessions are kept decoded in the moka hot cache (default
    /// [`DEFAULT_HOT_CAPACITY`](Self::DEFAULT_HOT_CAPACITY), or the capacity if that is smaller). Size it for the
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
    pub(super) fn forward_ttl(mut self, ttl: Duration) -> Self {
        self.forward_ttl = ttl;
        self
    }

    /// What the store these settings describe holds (`build`, next to `MemoryStore`, wraps it).
    pub(super) fn into_state(self) -> StoreState {
        let capacity = self.capacity.max(1);
        let hot = self
            .hot_capacity
            .unwrap_or(Self::DEFAULT_HOT_CAPACITY.min(capacity))
            .max(1);
        let guests = self
            .guest_capacity
            .unwrap_or(capacity.div_ceil(2))
            .min(capacity);
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let forwards_per_shard =
            size((capacity / FORWARD_SHARE).div_ceil(SHARDS as u64)).max(MIN_FORWARDS_PER_SHARD);
        StoreState {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hot: Cache::builder()
                .max_capacity(hot)
                .build_with_hasher(BuildKeyHasher::default()),
            user_index: (0..SHARDS).map(|_| Mutex::default()).collect(),
            user_hasher: RandomState::new(),
            login_lock: Mutex::new(()),
            session_slots: AtomicUsize::new(0),
            guest_slots: AtomicUsize::new(0),
            guest_seq: AtomicU64::new(0),
            oldest_guest: (0..SHARDS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            doorkeeper: Doorkeeper::new(),
            capacity: size(capacity),
            guest_capacity: size(guests),
            forwards_per_shard,
            forward_ttl: self.forward_ttl,
        }
    }
}
