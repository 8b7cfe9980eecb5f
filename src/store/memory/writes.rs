//! Writing one session: `create` (refused for a taken key) and compare-and-set `update`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::compact::Blob;
use super::key_hasher::prefix;
use super::shard::{shard_of, write_shard};
use super::slots::{give_slot, KeepSlots};
use super::state::{expires, StoreState};
use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::{StoreError, WriteOutcome};

impl StoreState {
    /// `create`: refused for a taken key; makes room (or fails) when the store is full.
    pub(super) fn create_now(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        let p = prefix(&key);
        let i = shard_of(p);
        let guest = record.identity.is_none();
        {
            let mut shard = write_shard(&self.shards[i]);
            if shard.map.contains_key(&p) {
                // Taken (by this key, a key forwarding from it, or, once in 2^64, by another
                // with the same 64 bits).
                return Ok(WriteOutcome::Conflict);
            }
            self.sweep_if_due(i, &mut shard, guest);
            if self.take_free_slots(guest) {
                self.insert_locked(i, &mut shard, key, record, ttl);
                return Ok(WriteOutcome::Applied);
            }
        }
        self.make_room(guest)?;
        let mut shard = write_shard(&self.shards[i]);
        if shard.map.contains_key(&p) {
            self.give_back_slots(guest);
            return Ok(WriteOutcome::Conflict);
        }
        self.insert_locked(i, &mut shard, key, record, ttl);
        Ok(WriteOutcome::Applied)
    }

    /// `update`: compare-and-set on the version.
    pub(super) fn update_now(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> WriteOutcome {
        let p = prefix(&key);
        let i = shard_of(p);
        let mut shard = write_shard(&self.shards[i]);
        let Some(blob) = shard.map.get_mut(&p) else {
            return WriteOutcome::Conflict;
        };
        if !(blob.is_session() && blob.is_for(&key) && blob.version() == expected) {
            return WriteOutcome::Conflict;
        }
        let owner = record.identity.as_ref().map(|i| i.user_id.as_str());
        if blob.is_guest() == owner.is_none() && blob.user_id() == owner {
            *blob = Blob::encode(&key, &record, expires(ttl));
            // A guest's write refreshes its hot entry only if it already has one (its reads
            // admitted it); otherwise it stays out, as at creation.
            if owner.is_some() || self.hot.contains_key(&key) {
                self.hot.insert(key, record);
            } else {
                self.hot.invalidate(&key);
            }
            return WriteOutcome::Applied;
        }
        // The layer never changes the owner in an update (only rotate and login do); if a
        // caller does, the guest budget and the index follow it.
        let was_guest = blob.is_guest();
        self.remove_locked(i, &mut shard, p, KeepSlots::SessionAndGuest);
        match (was_guest, owner.is_none()) {
            (true, false) => give_slot(&self.guest_slots),
            (false, true) => {
                self.guest_slots.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.insert_locked(i, &mut shard, key, record, ttl);
        WriteOutcome::Applied
    }
}
