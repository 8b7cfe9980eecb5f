//! Admission to the hot tier: a session enters moka on a read only if it missed it recently
//! already (as in TinyLFU), so that one read in a long while does not evict a hot session.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A bitset of recently missed sessions, one bit per 64-bit key prefix modulo its size,
/// cleared after as many misses as it has bits so it always describes recent traffic.
/// False positives only mean a cache insert that was not strictly needed.
pub(super) struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    misses: AtomicUsize,
}

impl Doorkeeper {
    const WORDS: usize = 1 << 14; // 2^20 bits, 128 KiB

    pub(super) fn new() -> Self {
        Doorkeeper {
            bits: (0..Self::WORDS).map(|_| AtomicU64::new(0)).collect(),
            misses: AtomicUsize::new(0),
        }
    }

    /// Records a miss of `p`; true if `p` already missed since the last clear.
    #[inline]
    pub(super) fn seen_before(&self, p: u64) -> bool {
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
