//! How the store hashes session keys: by their first 64 bits, with one multiply.

use std::hash::{BuildHasherDefault, Hasher};

use crate::id::SessionKey;

/// Session keys are SHA-256 outputs, already uniform: one multiply spreads 64 of their bits
/// over the table, where SipHash would cost ~20 ns for nothing. Nobody can plant keys: the
/// store only ever holds keys of tokens the layer generated.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The hasher of the shards' maps, the per-user index and the hot cache.
pub(super) type BuildKeyHasher = BuildHasherDefault<KeyHasher>;

/// The first 64 bits of a session key: what the shards, the index and the doorkeeper know it by.
#[inline]
pub(super) fn prefix(key: &SessionKey) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&key.as_bytes()[..8]);
    u64::from_le_bytes(w)
}
