//! Unit tests of the pure parts: blobs, URLs and prefixes, keys, the near-cache's guard.
//! The store's behaviour against a real Redis is tested in `tests/redis.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fred::types::config::Config as FredConfig;

use super::builder::{cluster_url, has_hash_tag};
use super::codec::{decode, encode, parse_hex_key, FORMAT_V1};
use super::near_cache::NearCache;
use super::{RedisStore, RedisStoreError};
use crate::record::{Identity, SessionRecord};

#[test]
fn blobs_round_trip_and_carry_a_format_byte() {
    let mut r = SessionRecord::new(SystemTime::now());
    r.version = 7;
    r.identity = Some(Identity::new("alice").with_roles(["admin"]));
    r.pinned_ip = Some("2001:db8::1".parse().unwrap());
    r.user_agent = Some("curl/8".into());
    r.data = HashMap::from([("n".to_owned(), serde_json::json!({"a": [1, 2.5, null]}))]);
    let blob = encode(&r).unwrap();
    assert_eq!(blob[0], FORMAT_V1);
    assert_eq!(decode(&blob).unwrap(), r);
}

#[test]
fn unknown_formats_and_garbage_fail_closed() {
    let blob = encode(&SessionRecord::new(SystemTime::now())).unwrap();
    let mut newer = blob.clone();
    newer[0] = 2;
    assert!(matches!(
        decode(&newer),
        Err(RedisStoreError::UnknownFormat(2))
    ));
    assert!(matches!(decode(&[]), Err(RedisStoreError::Decode(_))));
    assert!(matches!(
        decode(&[FORMAT_V1, 0xc1, 0xff]),
        Err(RedisStoreError::Decode(_))
    ));
    assert!(matches!(
        decode(&blob[..blob.len() / 2]),
        Err(RedisStoreError::Decode(_))
    ));
}

#[test]
fn cluster_urls_list_seed_nodes() {
    assert_eq!(
        cluster_url("redis-cluster://a:1,b:2,c:3"),
        "redis-cluster://a:1?node=b:2&node=c:3"
    );
    assert_eq!(
        cluster_url("redis-cluster://u:p@a:1,b:2?connection_timeout=5"),
        "redis-cluster://u:p@a:1?node=b:2&connection_timeout=5"
    );
    assert_eq!(cluster_url("redis-cluster://a:1"), "redis-cluster://a:1");
    assert_eq!(cluster_url("redis://a:1/2"), "redis://a:1/2");
    for url in [
        "redis-cluster://a:1,b:2,c:3",
        "redis-cluster://a:1?node=b:2",
    ] {
        let config = FredConfig::from_url(&cluster_url(url)).unwrap();
        assert!(config.server.is_clustered(), "{url}");
    }
}

#[test]
fn cluster_prefixes_need_a_hash_tag() {
    assert!(has_hash_tag("{tsg}:"));
    assert!(has_hash_tag("app:{s}:"));
    assert!(!has_hash_tag("tsg:"));
    assert!(!has_hash_tag("{}:"));
    assert!(!has_hash_tag("}{:"));
    let builder = RedisStore::builder("redis-cluster://127.0.0.1:7000").prefix("plain:");
    assert!(matches!(
        builder.fred_config(),
        Err(RedisStoreError::Config(_))
    ));
}

#[test]
fn hex_keys_parse_back() {
    let key = crate::id::SessionToken::generate().key();
    assert_eq!(parse_hex_key(key.to_hex().as_bytes()), Some(key));
    assert_eq!(parse_hex_key(b"zz"), None);
    assert_eq!(parse_hex_key(&[b'g'; 64]), None);
}

#[test]
fn near_cache_fills_lose_to_invalidations() {
    let near = NearCache::new(Duration::from_secs(5), 100);
    let key = crate::id::SessionToken::generate().key();
    let rec = |v: u64| {
        let mut r = SessionRecord::new(SystemTime::now());
        r.version = v;
        Arc::new(r)
    };
    let stamp = near.stamp(&key);
    near.invalidate(&key);
    near.fill(key, rec(1), stamp);
    assert!(
        near.get(&key).is_none(),
        "a fill that read before an invalidation"
    );
    let stamp = near.stamp(&key);
    near.clear();
    near.fill(key, rec(1), stamp);
    assert!(near.get(&key).is_none(), "a fill that read before a clear");
    near.fill(key, rec(3), near.stamp(&key));
    near.fill(key, rec(2), near.stamp(&key));
    assert_eq!(near.get(&key).map(|r| r.version), Some(3), "never older");
}
