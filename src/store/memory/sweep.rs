//! Expiry without a background thread: a shard is swept as writes go by, at a bounded cost per
//! write, and its forwards leave in the order they were written.

use std::sync::atomic::Ordering;

use super::compact::now_ns;
use super::shard::Shard;
use super::slots::KeepSlots;
use super::state::StoreState;

/// A shard is swept for expired sessions after this many writes (or, under pressure, see
/// [`PRESSURE_SWEEP_RATIO`]), so expiry costs a few entry checks per write and needs no
/// background thread.
pub(super) const SWEEP_EVERY: u32 = 1024;
/// When the store or the guest budget is full, a shard is swept before anyone is evicted,
/// but at most once per this many of its writes per entry it holds (so at most this many
/// entry checks per write, amortised) or once per [`PRESSURE_SWEEP_INTERVAL_NS`]. Sweeping
/// on every write at capacity, as this store once did, cost a whole shard (thousands of cache
/// misses) per refused guest: a flood of guests would have bought that CPU for free.
const PRESSURE_SWEEP_RATIO: usize = 16;
/// See [`PRESSURE_SWEEP_RATIO`]: one second.
const PRESSURE_SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

impl StoreState {
    /// Counts a write to the shard and sweeps its expired sessions and forwards when it is
    /// due: every [`SWEEP_EVERY`] writes, and sooner when room is short (`guest`: the write
    /// is a guest's, so a full guest budget counts) but at a bounded cost per write.
    pub(super) fn sweep_if_due(&self, i: usize, shard: &mut Shard, guest: bool) {
        shard.writes = shard.writes.saturating_add(1);
        let pressure = self.session_slots.load(Ordering::Relaxed) >= self.capacity
            || (guest && self.guest_slots.load(Ordering::Relaxed) >= self.guest_capacity);
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
    pub(super) fn sweep(&self, i: usize, shard: &mut Shard, now: u64) {
        shard.writes = 0;
        shard.swept_at = now;
        let expired: Vec<u64> = shard
            .map
            .iter()
            .filter(|(_, b)| b.expires_at() <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.remove_locked(i, shard, p, KeepSlots::Nothing);
        }
        self.trim_forwards(shard, now);
    }

    /// Drops forwards off the front of the shard's queue while they are expired or the shard
    /// holds more than its share; skips entries whose forward is already gone.
    pub(super) fn trim_forwards(&self, shard: &mut Shard, now: u64) {
        while let Some(&p) = shard.forward_queue.front() {
            let over = shard.forward_queue.len() > self.forwards_per_shard;
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
            shard.forward_queue.pop_front();
        }
    }
}
