//! Room for a new session: its slots against the capacity and the guest budget, and who
//! leaves when there are none (the oldest guest; for a login only, a sampled user).

use std::sync::atomic::Ordering;

use super::shard::{read_shard, write_shard, SHARDS};
use super::slots::{give_slot, take_slot, KeepSlots};
use super::state::StoreState;
use crate::store::StoreError;

/// Sessions looked at (from a random place) to pick a logged-in user to evict, when the
/// store is full, holds no guest, and a login needs room.
const EVICTION_SAMPLE: usize = 16;
/// Tries at taking a victim's slot when concurrent writers keep winning the race for it.
const EVICTION_ATTEMPTS: usize = 8;

impl StoreState {
    /// Takes the slots a new session needs if they are free, without evicting anyone.
    pub(super) fn take_free_slots(&self, guest: bool) -> bool {
        if guest && !take_slot(&self.guest_slots, self.guest_capacity) {
            return false;
        }
        if take_slot(&self.session_slots, self.capacity) {
            return true;
        }
        if guest {
            give_slot(&self.guest_slots);
        }
        false
    }

    pub(super) fn give_back_slots(&self, guest: bool) {
        give_slot(&self.session_slots);
        if guest {
            give_slot(&self.guest_slots);
        }
    }

    /// Takes the slots a new session needs, making room if the store or the guest budget is
    /// full: the oldest guest leaves first; a guest never displaces a user and is refused
    /// instead; a user displaces a sampled user only when there is no guest. Called with no
    /// shard lock held, since the victim may live in any shard.
    pub(super) fn make_room(&self, guest: bool) -> Result<(), StoreError> {
        if guest && !take_slot(&self.guest_slots, self.guest_capacity) {
            // The guest budget is spent: the oldest guest hands over both of its slots.
            if self.evict_oldest_guest(KeepSlots::SessionAndGuest) {
                return Ok(());
            }
            if !take_slot(&self.guest_slots, self.guest_capacity) {
                return Err(StoreError::full(
                    "memory store: the guest budget is spent and holds no guest to replace",
                ));
            }
        }
        if take_slot(&self.session_slots, self.capacity)
            || self.evict_oldest_guest(KeepSlots::Session)
            || (!guest && self.evict_sampled_user())
            || take_slot(&self.session_slots, self.capacity)
        {
            return Ok(());
        }
        if guest {
            give_slot(&self.guest_slots);
            return Err(StoreError::full(
                "memory store: full of logged-in users' sessions, which a guest never displaces",
            ));
        }
        // Only when concurrent writers took every slot this login freed, over and over: a
        // login is not refused for that, the bound is exceeded by one until the next sweep or
        // eviction.
        self.session_slots.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Evicts the store's oldest guest (by creation); false if there is none.
    fn evict_oldest_guest(&self, keep: KeepSlots) -> bool {
        for _ in 0..EVICTION_ATTEMPTS {
            let oldest = self
                .oldest_guest
                .iter()
                .map(|seq| seq.load(Ordering::Relaxed))
                .enumerate()
                .filter(|&(_, seq)| seq != u64::MAX)
                .min_by_key(|&(_, seq)| seq);
            let Some((i, seq)) = oldest else {
                return false;
            };
            let mut shard = write_shard(&self.shards[i]);
            match shard.guest_queue.front() {
                Some(&(p, s)) if s == seq => {
                    if self.remove_locked(i, &mut shard, p, keep).is_some() {
                        return true;
                    }
                    // Cannot happen (the front is always a live guest); repair and retry.
                    shard.guest_queue.pop_front();
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
                let shard = read_shard(&self.shards[i]);
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
            let mut shard = write_shard(&self.shards[i]);
            // Still the session we chose (not replaced meanwhile): evict it.
            let unchanged = shard
                .map
                .get(&p)
                .is_some_and(|b| b.is_session() && b.expires_at() == expires);
            if unchanged
                && self
                    .remove_locked(i, &mut shard, p, KeepSlots::Session)
                    .is_some()
            {
                return true;
            }
        }
        false
    }
}
