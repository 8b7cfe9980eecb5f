//! Lineage: a rotation writes the successor, then turns the old key into a forwarding entry
//! to it, and a delete follows forwards, so that a logout racing a rotation ends both.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::compact::{now_ns, Blob};
use super::key_hasher::prefix;
use super::shard::{read_shard, shard_of, write_shard};
use super::slots::KeepSlots;
use super::state::StoreState;
use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::{WriteOutcome, MAX_FORWARD_HOPS};

impl StoreState {
    /// Turns `old` (if it is a session at version `expected`) into a forwarding entry to
    /// `new`, giving back its slots.
    fn retire(&self, old: SessionKey, expected: u64, new: SessionKey) -> bool {
        let p = prefix(&old);
        let i = shard_of(p);
        let mut shard = write_shard(&self.shards[i]);
        let matches = shard
            .map
            .get(&p)
            .is_some_and(|b| b.is_session() && b.is_for(&old) && b.version() == expected);
        if !matches
            || self
                .remove_locked(i, &mut shard, p, KeepSlots::Nothing)
                .is_none()
        {
            return false;
        }
        let forward = Blob::forward(&old, &new, SystemTime::now() + self.forward_ttl);
        shard.map.insert(p, forward);
        shard.forward_count += 1;
        shard.forward_queue.push_back(p);
        self.trim_forwards(&mut shard, now_ns());
        true
    }

    /// Removes the session under `key` (not following forwards); whether it was there.
    fn remove_session(&self, key: SessionKey) -> bool {
        let p = prefix(&key);
        let i = shard_of(p);
        let mut shard = write_shard(&self.shards[i]);
        let matches = shard
            .map
            .get(&p)
            .is_some_and(|b| b.is_session() && b.is_for(&key));
        matches
            && self
                .remove_locked(i, &mut shard, p, KeepSlots::Nothing)
                .is_some()
    }

    /// Removes `key` and, if it forwards, what it forwards to (at most [`MAX_FORWARD_HOPS`]
    /// hops, each under its own shard lock only). True if a live session was removed.
    pub(super) fn delete_now(&self, key: SessionKey) -> bool {
        let now = now_ns();
        let mut key = key;
        for hop in 0..=MAX_FORWARD_HOPS {
            let p = prefix(&key);
            let i = shard_of(p);
            let mut shard = write_shard(&self.shards[i]);
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
            self.remove_locked(i, &mut shard, p, KeepSlots::Nothing);
            match next {
                Some(to) => key = to,
                None => return live,
            }
        }
        false
    }

    /// `rotate`: the successor first, then the old key becomes a forward to it.
    pub(super) fn rotate_now(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> WriteOutcome {
        let p = prefix(&old);
        let old_is_there = read_shard(self.shard(p))
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
        self.session_slots.fetch_add(1, Ordering::Relaxed);
        if guest {
            self.guest_slots.fetch_add(1, Ordering::Relaxed);
        }
        // New first, then old: there is never an instant with neither. The new key has not
        // been sent to any client yet, so the instant with both is invisible to clients.
        {
            let q = prefix(&new);
            let i = shard_of(q);
            let mut shard = write_shard(&self.shards[i]);
            if shard.map.contains_key(&q) {
                self.give_back_slots(guest);
                return WriteOutcome::Conflict;
            }
            self.sweep_if_due(i, &mut shard, false);
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
}
