//! What the store writes into Redis and reads back: the record blob (one format byte, then
//! the [`SessionRecord`] as MessagePack with named fields; see the module docs), session keys
//! as hex, and durations as whole milliseconds.

use std::time::Duration;

use super::RedisStoreError;
use crate::id::SessionKey;
use crate::record::SessionRecord;

/// The format byte of records written by this version.
pub(super) const FORMAT_V1: u8 = 1;

pub(crate) fn encode(record: &SessionRecord) -> Result<Vec<u8>, RedisStoreError> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_V1);
    rmp_serde::encode::write_named(&mut out, record)
        .map_err(|e| RedisStoreError::Encode(e.to_string()))?;
    Ok(out)
}

pub(crate) fn decode(blob: &[u8]) -> Result<SessionRecord, RedisStoreError> {
    match blob.split_first() {
        Some((&FORMAT_V1, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| RedisStoreError::Decode(e.to_string()))
        }
        Some((&other, _)) => Err(RedisStoreError::UnknownFormat(other)),
        None => Err(RedisStoreError::Decode("empty record".into())),
    }
}

pub(crate) fn parse_hex_key(hex: &[u8]) -> Option<SessionKey> {
    SessionKey::from_hex(hex)
}

/// `d` in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
