//! What the store writes into Redis and reads back: the record blob (one format byte, then
//! the [`SessionRecord`] as MessagePack with named fields; see the module docs), session keys
//! as hex, and durations as whole milliseconds.

use std::time::Duration;

use super::RedisStoreError;
use crate::id::SessionKey;
use crate::record::SessionRecord;

// The blob format is shared with the PostgreSQL store (`store::blob`).
#[cfg(test)]
pub(super) use crate::store::blob::FORMAT_V1;
use crate::store::blob::{self, BlobError};

impl From<BlobError> for RedisStoreError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::UnknownFormat(b) => RedisStoreError::UnknownFormat(b),
            BlobError::Decode(m) => RedisStoreError::Decode(m),
            BlobError::Encode(m) => RedisStoreError::Encode(m),
        }
    }
}

pub(crate) fn encode(record: &SessionRecord) -> Result<Vec<u8>, RedisStoreError> {
    Ok(blob::encode(record)?)
}

pub(crate) fn decode(blob: &[u8]) -> Result<SessionRecord, RedisStoreError> {
    Ok(blob::decode(blob)?)
}

pub(crate) fn parse_hex_key(hex: &[u8]) -> Option<SessionKey> {
    SessionKey::from_hex(hex)
}

/// `d` in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
