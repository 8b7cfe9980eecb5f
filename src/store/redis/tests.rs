//! Unit tests of the pure parts: blobs, URLs and prefixes, keys, the near-cache's guard.
//! The store's behaviour against a real Redis is tested in `tests/redis.rs`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fred::types::config::Config as FredConfig;

use super::builder::{cluster_url, has_hash_tag};
use super::codec::{decode, encode, parse_hex_key, FORMAT_V1};
use super::names::Names;
use super::scripts::{
    Call, CreateArgs, DeleteArgs, LoginArgs, RecordArgs, RetireArgs, RotateArgs, UpdateArgs,
    UserSessionsArgs, COMMON, CREATE, DELETE, LOGIN, RETIRE, ROTATE, UPDATE, USER_SESSIONS,
};
use super::{RedisStore, RedisStoreError};
use crate::id::{SessionKey, SessionToken};
use crate::record::{Identity, SessionRecord};
use crate::store::{LimitPolicy, SessionLimit};

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
    let key = SessionToken::generate().key();
    assert_eq!(parse_hex_key(key.to_hex().as_bytes()), Some(key));
    assert_eq!(parse_hex_key(b"zz"), None);
    assert_eq!(parse_hex_key(&[b'g'; 64]), None);
}

/// The names a `.lua` file gives to `KEYS[n]` or `ARGV[n]` (`table`) in its `local name =
/// KEYS[n]` / `local name = tonumber(ARGV[n])` lines, in position order; and it checks that
/// the positions are 1, 2, ... and that the script uses `KEYS[` / `ARGV[` nowhere else.
fn declared(lua: &str, table: &str) -> Vec<String> {
    let open = format!("{table}[");
    let mut names = Vec::new();
    for line in lua.lines().filter(|l| l.contains(&open)) {
        let code = line.split("--").next().unwrap().trim();
        let (name, value) = code
            .strip_prefix("local ")
            .and_then(|rest| rest.split_once(" = "))
            .unwrap_or_else(|| panic!("{table} used outside a declaration: {line:?}"));
        let value = value
            .strip_prefix("tonumber(")
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or(value);
        let position = value
            .strip_prefix(&open)
            .and_then(|v| v.strip_suffix(']'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("not a plain {table}[n]: {line:?}"));
        assert_eq!(
            position,
            names.len() + 1,
            "{table} out of order at {line:?}"
        );
        names.push(name.to_owned());
    }
    names
}

/// A reordering of the arguments on either side (in a `*Args::call` or in the `local ... =
/// ARGV[n]` lines of its `.lua`) makes the two lists differ.
#[test]
fn script_arguments_match_the_names_the_lua_declares() {
    let names = Names::new("{t}:".to_owned(), "00ff".to_owned(), vec![7; 32], 10);
    let key = || SessionToken::generate().key();
    let mut user = SessionRecord::new(SystemTime::now());
    user.identity = Some(Identity::new("alice"));
    let guest = SessionRecord::new(SystemTime::now());
    let record = |r: &SessionRecord| RecordArgs::new(r, Duration::from_secs(60)).unwrap();
    let limit = Some(SessionLimit {
        max: 3,
        policy: LimitPolicy::EvictOldest,
    });
    let create = |r: &SessionRecord| CreateArgs {
        key: key(),
        record: record(r),
        guest_capacity: 10,
    };
    let update = |r: &SessionRecord| UpdateArgs {
        key: key(),
        expected: 1,
        record: record(r),
    };
    let rotate = |r: &SessionRecord| RotateArgs {
        old: key(),
        expected: 1,
        new: key(),
        record: record(r),
    };
    let login = |old: Option<(SessionKey, u64)>| LoginArgs {
        old,
        new: key(),
        record: record(&user),
        limit,
    };
    // Every optional key present: the full lists.
    let full: [(&str, &str, Call); 7] = [
        ("create", CREATE, create(&user).call(&names)),
        ("update", UPDATE, update(&user).call(&names)),
        ("rotate", ROTATE, rotate(&user).call(&names)),
        ("delete", DELETE, DeleteArgs { key: key() }.call(&names)),
        ("login", LOGIN, login(Some((key(), 1))).call(&names)),
        (
            "user_sessions",
            USER_SESSIONS,
            UserSessionsArgs {
                index: "{t.AAA}:u:alice",
                legacy: Some("{t}:u:alice"),
                limit: 5,
            }
            .call(),
        ),
        (
            "retire",
            RETIRE,
            RetireArgs {
                old: key(),
                expected: 1,
                new: key(),
            }
            .call(&names),
        ),
    ];
    for (script, lua, call) in &full {
        let (keys, argv) = call.names();
        assert_eq!(declared(lua, "KEYS"), keys, "KEYS of {script}.lua");
        assert_eq!(declared(lua, "ARGV"), argv, "ARGV of {script}.lua");
    }
    // An optional key left out moves no other position: it is the last one.
    let partial: [(&str, &str, Call); 4] = [
        ("create", CREATE, create(&guest).call(&names)),
        ("update", UPDATE, update(&guest).call(&names)),
        ("rotate", ROTATE, rotate(&guest).call(&names)),
        ("login", LOGIN, login(None).call(&names)),
    ];
    for (script, lua, call) in &partial {
        let (keys, argv) = call.names();
        let declared_keys = declared(lua, "KEYS");
        assert_eq!(keys.len() + 1, declared_keys.len(), "{script}.lua");
        assert_eq!(declared_keys[..keys.len()], keys, "KEYS of {script}.lua");
        assert_eq!(declared(lua, "ARGV"), argv, "ARGV of {script}.lua");
    }
    // The shared helpers take everything as parameters.
    assert!(declared(COMMON, "KEYS").is_empty() && declared(COMMON, "ARGV").is_empty());
}

#[test]
fn key_names_carry_the_route_and_parse_back() {
    let names = Names::new("{tsg}:".to_owned(), "00ff".to_owned(), vec![7; 32], 50_000);
    let untagged = SessionToken::generate().key();
    assert_eq!(
        names.record_key(&untagged),
        format!("{{tsg}}:s:{}", untagged.to_hex())
    );
    let tag = crate::id::RouteTag::from_index(12345);
    let routed = SessionToken::generate_routed(Some(tag)).key();
    let name = names.record_key(&routed);
    assert_eq!(
        name,
        format!("{{tsg.{}}}:s:{}", tag.as_str(), routed.to_hex())
    );
    for key in [untagged, routed] {
        let back = names.key_of(names.record_key(&key).as_bytes()).unwrap();
        assert_eq!((back, back.route()), (key, key.route()));
    }
    for bad in [
        "{tsg}:s:zz".to_owned(),
        format!("{{tsg.AB}}:s:{}", routed.to_hex()),
        format!("{{tsg.A{{C}}:s:{}", routed.to_hex()),
        format!("{{other}}:s:{}", routed.to_hex()),
        format!("{{tsg.ABC}}:u:{}", routed.to_hex()),
        String::new(),
    ] {
        assert!(names.key_of(bad.as_bytes()).is_err(), "{bad:?}");
    }
    // A user's tag is stable, depends on the secret, and differs between users.
    assert_eq!(names.user_route("alice"), names.user_route("alice"));
    assert_ne!(names.user_route("alice"), names.user_route("bob"));
    let other = Names::new("{tsg}:".to_owned(), "00ff".to_owned(), vec![8; 32], 50_000);
    assert_ne!(names.user_route("alice"), other.user_route("alice"));
    assert_eq!(
        names.index_beside(&names_key(&names, "alice"), "alice"),
        names.user_indexes("alice")[0]
    );
    assert_eq!(names.user_indexes("alice")[1], "{tsg}:u:alice");
    // Guests: 50 000 / 64 = 781 buckets of 65 (at most 1024 buckets).
    assert_eq!(names.per_guest_bucket(), 65);
    let small = Names::new("{tsg}:".to_owned(), "00ff".to_owned(), vec![7; 32], 10);
    assert_eq!(small.per_guest_bucket(), 10);
    assert_eq!(small.guest_route(), crate::id::RouteTag::from_index(0));
    // Without a hash tag (one node only) the tag gets braces of its own.
    let plain = Names::new("app:".to_owned(), "00ff".to_owned(), vec![7; 32], 10);
    let name = plain.record_key(&routed);
    assert!(
        name.starts_with(&format!("app:{{{}}}:s:", tag.as_str())),
        "{name}"
    );
    assert_eq!(plain.key_of(name.as_bytes()).unwrap().route(), Some(tag));
}

fn names_key(names: &Names, user: &str) -> SessionKey {
    SessionToken::generate_routed(Some(names.user_route(user))).key()
}
