//! The Redis store's record blob (format byte + MessagePack with named fields) and its key
//! parser from arbitrary bytes. A record read from Redis is used at once: the layer checks
//! its expiry and the store computes its TTL, so those run on every record that decodes; and
//! whatever decodes must survive an encode/decode round trip unchanged.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tower_session_guard::__fuzz::{redis_decode, redis_encode, redis_parse_hex_key};

/// The layer's default idle and absolute lifetimes.
const IDLE: Duration = Duration::from_secs(30 * 60);
const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);

fuzz_target!(|data: &[u8]| {
    // Index entries and invalidation messages carry keys as 64 hex characters.
    if let Some(key) = redis_parse_hex_key(data) {
        assert!(data.len() == 64 && data.iter().all(u8::is_ascii_hexdigit));
        assert!(key
            .to_hex()
            .eq_ignore_ascii_case(std::str::from_utf8(data).unwrap()));
    } else {
        assert!(data.len() != 64 || !data.iter().all(u8::is_ascii_hexdigit));
    }

    let Ok(record) = redis_decode(data) else {
        return;
    };
    // What the layer does with every record it loads.
    let now = SystemTime::now();
    let _ = record.expiry(now, IDLE, ABSOLUTE);
    let _ = record.expires_at(IDLE, ABSOLUTE);

    let blob = redis_encode(&record).expect("a decoded record encodes");
    let again = redis_decode(&blob).expect("an encoded record decodes");
    assert_eq!(again, record);
});
