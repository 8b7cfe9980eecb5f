//! The memory store's record blob (src/store/memory/compact.rs) from arbitrary bytes: every
//! accessor the store calls on a blob it holds (`decode`, `user_id`, `is_for`, `key`,
//! `version`, `expires_at`) must answer without panicking, and whatever decodes must survive
//! an encode/decode round trip unchanged.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use tower_session_guard::__fuzz::CompactBlob;
use tower_session_guard::store::SessionKey;

/// Bytes 1..25 of a blob hold bytes 8..32 of its session key.
const KEY_TAIL: std::ops::Range<usize> = 1..25;

fuzz_target!(|data: &[u8]| {
    let blob = CompactBlob::from_bytes(data);

    let version = blob.version();
    let expires_at = blob.expires_at();
    let user_id = blob.user_id().map(str::to_owned);

    // The key the blob claims to belong to, with an arbitrary 8-byte head.
    let mut key_bytes = [0u8; 32];
    if let Some(tail) = data.get(KEY_TAIL) {
        key_bytes[8..].copy_from_slice(tail);
    }
    let key = SessionKey::from_bytes(key_bytes);
    assert_eq!(blob.is_for(&key), data.len() >= KEY_TAIL.end);
    if data.len() >= KEY_TAIL.end {
        assert_eq!(blob.key(0), key);
    } else {
        let _ = blob.key(0);
    }

    let Some(record) = blob.decode() else {
        return;
    };
    // What decodes agrees with the header fields the store reads without decoding.
    assert_eq!(record.version, version);
    assert_eq!(
        record.identity.as_ref().map(|i| i.user_id.as_str()),
        user_id.as_deref()
    );

    // Encoding what decoded gives a blob that decodes to the same record.
    let exp = UNIX_EPOCH + Duration::from_nanos(expires_at);
    let again = CompactBlob::encode(&key, &record, exp);
    assert_eq!(again.decode().as_ref(), Some(&record));
    assert_eq!(again.version(), version);
    assert_eq!(again.expires_at(), expires_at);
    assert!(again.is_for(&key));
});
