//! Entry points for the `cargo fuzz` targets under `fuzz/`: thin wrappers around the
//! crate's private decoders. Compiled only with `--cfg fuzzing` (which `cargo fuzz` sets),
//! so the public API of normal builds is unchanged. Not a stable interface.

use std::time::SystemTime;

use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::memory::compact::Blob;

/// The memory store's record blob, made from arbitrary bytes (the store itself only ever
/// holds blobs it encoded).
pub struct CompactBlob(Blob);

impl CompactBlob {
    /// Wraps `bytes` as a blob, as if the store held them.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        CompactBlob(Blob::from_boxed(bytes.into()))
    }

    /// Encodes `record` the way the memory store does.
    pub fn encode(key: &SessionKey, record: &SessionRecord, expires_at: SystemTime) -> Self {
        CompactBlob(Blob::encode(key, record, expires_at))
    }

    /// The blob's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// `Blob::decode`.
    pub fn decode(&self) -> Option<SessionRecord> {
        self.0.decode()
    }

    /// `Blob::user_id`.
    pub fn user_id(&self) -> Option<&str> {
        self.0.user_id()
    }

    /// `Blob::is_for`.
    pub fn is_for(&self, key: &SessionKey) -> bool {
        self.0.is_for(key)
    }

    /// `Blob::key`.
    pub fn key(&self, head: u64) -> SessionKey {
        self.0.key(head)
    }

    /// `Blob::version`.
    pub fn version(&self) -> u64 {
        self.0.version()
    }

    /// `Blob::expires_at` (ns since the epoch).
    pub fn expires_at(&self) -> u64 {
        self.0.expires_at()
    }
}

/// `SessionKey::from_token_bytes` (crate-private): a token from raw header bytes.
pub fn key_from_token_bytes(token: &[u8]) -> Option<SessionKey> {
    SessionKey::from_token_bytes(token)
}

/// The Redis store's record blob decoder.
#[cfg(feature = "redis")]
pub fn redis_decode(blob: &[u8]) -> Result<SessionRecord, crate::RedisStoreError> {
    crate::store::redis::decode(blob)
}

/// The Redis store's record blob encoder.
#[cfg(feature = "redis")]
pub fn redis_encode(record: &SessionRecord) -> Result<Vec<u8>, crate::RedisStoreError> {
    crate::store::redis::encode(record)
}

/// The Redis store's parser for the 64 hex characters of a key (index entries and
/// invalidation messages).
#[cfg(feature = "redis")]
pub fn redis_parse_hex_key(hex: &[u8]) -> Option<SessionKey> {
    crate::store::redis::parse_hex_key(hex)
}
