//! The store's shared state, and the one place where a session enters or leaves a shard: with
//! the hot tier, the per-user index, the guest queue and the slot counters kept in step.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use moka::sync::Cache;

use super::compact::Blob;
use super::doorkeeper::Doorkeeper;
use super::key_hasher::{prefix, BuildKeyHasher};
use super::shard::{lock, shard_of, Shard, SHARDS};
use super::slots::{give_slot, KeepSlots};
use super::user_index::UserIndex;
use crate::id::SessionKey;
use crate::record::SessionRecord;

/// What every clone of a `MemoryStore` shares: the shards, the hot tier, the per-user index,
/// and the counters against the store's bounds.
pub(super) struct StoreState {
    pub(super) shards: Box<[RwLock<Shard>]>,
    pub(super) hot: Cache<SessionKey, Arc<SessionRecord>, BuildKeyHasher>,
    pub(super) user_index: Box<[Mutex<UserIndex>]>,
    /// The index's hash key.
    pub(super) user_hasher: RandomState,
    /// Serialises logins, so the session limit holds under concurrent logins of one user.
    pub(super) login_lock: Mutex<()>,
    /// Sessions (guests and users) held or being written, against `capacity`. Forwarding
    /// entries do not count.
    pub(super) session_slots: AtomicUsize,
    /// Guest sessions held or being written, against `guest_capacity`.
    pub(super) guest_slots: AtomicUsize,
    /// Creation order of guests, store-wide.
    pub(super) guest_seq: AtomicU64,
    /// Per shard: the sequence number of its oldest guest (`u64::MAX`: none), so that the
    /// store's oldest guest is found without locking every shard. Written under the shard's
    /// lock; readers check it again under that lock.
    pub(super) oldest_guest: Box<[AtomicU64]>,
    /// Which sessions missed the hot cache recently.
    pub(super) doorkeeper: Doorkeeper,
    pub(super) capacity: usize,
    pub(super) guest_capacity: usize,
    pub(super) forwards_per_shard: usize,
    pub(super) forward_ttl: Duration,
}

/// When the store may drop a record written now. The layer computes `ttl` from its own
/// clock; the store only needs it as a duration on the real clock that sweeps use.
pub(super) fn expires(ttl: Duration) -> SystemTime {
    SystemTime::now() + ttl
}

impl StoreState {
    /// The shard that holds the session or forward whose key starts with `p`.
    #[inline]
    pub(super) fn shard(&self, p: u64) -> &RwLock<Shard> {
        &self.shards[shard_of(p)]
    }

    /// The user's index shard, locked, and the user's hash within it.
    pub(super) fn lock_user_index(&self, user: &str) -> (MutexGuard<'_, UserIndex>, u64) {
        let h = self.user_hasher.hash_one(user);
        (lock(&self.user_index[(h as usize) % SHARDS]), h)
    }

    /// Puts a session into a shard the caller holds; the caller holds its slots.
    pub(super) fn insert_locked(
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
            .insert(p, Blob::encode(&key, &record, expires(ttl)));
        match &record.identity {
            Some(identity) => {
                let (mut index, h) = self.lock_user_index(&identity.user_id);
                index.add(h, p);
            }
            None => self.push_guest(i, shard, p),
        }
        // Guests enter the hot tier only through reads (the doorkeeper's second miss): a
        // flood of new guests must not push logged-in users' sessions out of it.
        if record.identity.is_some() {
            self.hot.insert(key, record);
        } else {
            self.hot.invalidate(&key);
        }
    }

    fn push_guest(&self, i: usize, shard: &mut Shard, p: u64) {
        let seq = self.guest_seq.fetch_add(1, Ordering::Relaxed);
        shard.guest_queue.push_back((p, seq));
        shard.guest_count += 1;
        if shard.guest_queue.len() > 2 * shard.guest_count + 16 {
            // Mostly guests that ended: drop them (amortised O(1) per guest).
            let map = &shard.map;
            shard
                .guest_queue
                .retain(|(p, _)| map.get(p).is_some_and(Blob::is_guest));
        }
        self.settle_guests(i, shard);
    }

    /// Pops guests that ended off the front of the shard's queue and publishes its oldest.
    pub(super) fn settle_guests(&self, i: usize, shard: &mut Shard) {
        while let Some(&(p, _)) = shard.guest_queue.front() {
            if shard.map.get(&p).is_some_and(Blob::is_guest) {
                break;
            }
            shard.guest_queue.pop_front();
        }
        let oldest = shard.guest_queue.front().map_or(u64::MAX, |&(_, seq)| seq);
        self.oldest_guest[i].store(oldest, Ordering::Relaxed);
    }

    /// Removes `p` from a shard the caller holds, with the hot entry and the index entry, and
    /// gives back the slots it held except those in `keep`.
    pub(super) fn remove_locked(
        &self,
        i: usize,
        shard: &mut Shard,
        p: u64,
        keep: KeepSlots,
    ) -> Option<Blob> {
        let blob = shard.map.remove(&p)?;
        if !blob.is_session() {
            // A forwarding entry: it holds no slot and was never in moka or the index.
            shard.forward_count = shard.forward_count.saturating_sub(1);
            return Some(blob);
        }
        if keep == KeepSlots::Nothing {
            give_slot(&self.session_slots);
        }
        self.hot.invalidate(&blob.key(p));
        if blob.is_guest() {
            shard.guest_count = shard.guest_count.saturating_sub(1);
            if keep != KeepSlots::SessionAndGuest {
                give_slot(&self.guest_slots);
            }
            self.settle_guests(i, shard);
        } else if let Some(user) = blob.user_id() {
            let (mut index, h) = self.lock_user_index(user);
            index.remove(h, p);
        }
        Some(blob)
    }
}
