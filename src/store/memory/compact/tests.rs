//! The compact encoding: exact round trips, its size, and answers for any bytes (short blobs,
//! forwards), including the cases the `compact_decode` fuzz target found.

use super::*;
use crate::id::SessionToken;

fn full() -> SessionRecord {
    let now = SystemTime::now();
    let mut r = SessionRecord::new(now);
    r.version = 42;
    r.last_seen = now + Duration::from_nanos(1234);
    r.authenticated_at = Some(now);
    r.pinned_ip = Some("2001:db8::7".parse().unwrap());
    r.identity = Some(
        Identity::new("alice")
            .with_roles(["admin", "ops"])
            .with_groups(["staff"]),
    );
    r.user_agent = Some("curl/8.5".into());
    r.remember_me = Some(Duration::from_secs(14 * 24 * 3600));
    r.data.insert("count".into(), serde_json::json!(3));
    r.data
        .insert("cart".into(), serde_json::json!({"items": ["a", "b"]}));
    r
}

#[test]
fn round_trips_every_field_exactly() {
    let key = SessionToken::generate().key();
    let mut remembered_without_agent = full();
    remembered_without_agent.user_agent = None;
    let mut agent_only = full();
    agent_only.remember_me = None;
    for r in [
        full(),
        remembered_without_agent,
        agent_only,
        SessionRecord::new(SystemTime::now()),
    ] {
        let exp = SystemTime::now() + Duration::from_secs(60);
        let blob = Blob::encode(&key, &r, exp);
        assert_eq!(blob.decode().as_ref(), Some(&r));
        assert!(blob.is_for(&key));
        assert!(!blob.is_for(&SessionToken::generate().key()));
        let mut head = [0u8; 8];
        head.copy_from_slice(&key.as_bytes()[..8]);
        assert_eq!(blob.key(u64::from_le_bytes(head)), key);
        assert_eq!(blob.version(), r.version);
        assert_eq!(blob.expires_at(), nanos(exp));
        assert_eq!(
            blob.user_id(),
            r.identity.as_ref().map(|i| i.user_id.as_str())
        );
    }
    let mut v4 = full();
    v4.pinned_ip = Some("127.0.0.1".parse().unwrap());
    let blob = Blob::encode(&key, &v4, SystemTime::now());
    assert_eq!(blob.decode(), Some(v4));
}

#[test]
fn an_authenticated_session_is_small() {
    let mut r = full();
    r.data.clear();
    r.user_agent = None;
    r.remember_me = None;
    r.identity = Some(
        Identity::new("alice")
            .with_roles(["admin"])
            .with_groups(["staff"]),
    );
    r.pinned_ip = Some("127.0.0.1".parse().unwrap());
    let blob = Blob::encode(&SessionToken::generate().key(), &r, SystemTime::now());
    // With malloc's 8-byte header this is a 112-byte chunk.
    assert!(blob.len() <= 104, "{} bytes", blob.len());
}

/// Found by the `compact_decode` fuzz target: an empty blob (and any blob shorter than
/// the 65-byte header) panicked in `expires_at`, `version` and `key`, which sliced fixed
/// offsets without a length check.
#[test]
fn short_blobs_answer_without_panicking() {
    let key = SessionToken::generate().key();
    let whole = Blob::encode(&key, &full(), SystemTime::now());
    for cut in [
        0,
        1,
        KEY_AT + KEY_TAIL - 1,
        EXPIRES_AT + 7,
        VERSION_AT + 7,
        HEADER - 1,
    ] {
        let short = Blob(whole.0[..cut].to_vec().into_boxed_slice());
        if cut < EXPIRES_AT + 8 {
            assert_eq!(short.expires_at(), 0, "cut at {cut}");
        }
        if cut < VERSION_AT + 8 {
            assert_eq!(short.version(), 0, "cut at {cut}");
        }
        assert!(short.decode().is_none() && short.user_id().is_none());
        assert_eq!(short.is_for(&key), cut >= KEY_AT + KEY_TAIL, "cut at {cut}");
        let _ = short.key(7);
    }
    let tail_only = Blob(whole.0[..EXPIRES_AT].to_vec().into_boxed_slice());
    let mut head = [0u8; 8];
    head.copy_from_slice(&key.as_bytes()[..8]);
    assert_eq!(tail_only.key(u64::from_le_bytes(head)), key);
}

/// Found by the `compact_decode` fuzz target (a data value `-666…660`, 50 digits, read
/// as -6.666666666666666e49): serde_json's float parser without `float_roundtrip` read the
/// text it had written for that f64 back one ulp off, so a float in session data came back
/// changed from the memory store.
#[test]
fn floats_in_data_round_trip_exactly() {
    let mut r = SessionRecord::new(SystemTime::now());
    let floats = [
        "-6.666666666666666e49",
        "-6.666666666666665e49",
        "0.1",
        "1e-300",
        "2.2250738585072014e-308",
    ];
    for (i, text) in floats.into_iter().enumerate() {
        let x: f64 = text.parse().unwrap();
        r.data.insert(format!("f{i}"), serde_json::json!(x));
    }
    let blob = Blob::encode(&SessionToken::generate().key(), &r, SystemTime::now());
    assert_eq!(blob.decode(), Some(r));
}

#[test]
fn a_forward_keeps_key_and_expiry_where_sessions_do() {
    let (key, to) = (
        SessionToken::generate().key(),
        SessionToken::generate().key(),
    );
    let exp = SystemTime::now() + Duration::from_secs(60);
    let fwd = Blob::forward(&key, &to, exp);
    assert!(!fwd.is_session());
    assert!(fwd.is_for(&key) && !fwd.is_for(&to));
    assert_eq!(fwd.expires_at(), nanos(exp));
    assert_eq!(fwd.forward_target(), Some(to));
    assert!(!fwd.is_guest());
    assert_eq!(fwd.user_id(), None);
    assert!(fwd.decode().is_none(), "a forward is no session");

    let session = Blob::encode(&key, &full(), exp);
    assert!(session.is_session() && !session.is_guest());
    assert_eq!(session.forward_target(), None);
    let guest = Blob::encode(&key, &SessionRecord::new(SystemTime::now()), exp);
    assert!(guest.is_session() && guest.is_guest());
    assert_eq!(
        guest.created_at(),
        nanos(guest.decode().unwrap().created_at)
    );
}

#[test]
fn an_overlong_user_id_is_cut_at_a_character_boundary() {
    let mut r = SessionRecord::new(SystemTime::now());
    // 'é' is two bytes: 32 768 of them put a boundary one byte past the 65 535 cut.
    r.identity = Some(Identity::new("é".repeat(32_768)));
    let blob = Blob::encode(&SessionToken::generate().key(), &r, SystemTime::now());
    let user = blob.user_id().expect("the cut user id still decodes");
    assert_eq!(user.len(), 65_534);
    assert!(!blob.is_guest());
    assert!(blob.decode().is_some());
}

#[test]
fn guests_are_told_from_users_by_the_identity_tag() {
    let key = SessionToken::generate().key();
    let exp = SystemTime::now();
    assert!(!Blob::encode(&key, &full(), exp).is_guest());
    let guest = Blob::encode(&key, &SessionRecord::new(SystemTime::now()), exp);
    assert!(guest.is_guest());
    assert_eq!(
        guest.created_at(),
        nanos(guest.decode().unwrap().created_at)
    );
}

#[test]
fn truncated_blobs_do_not_decode() {
    let blob = Blob::encode(&SessionToken::generate().key(), &full(), SystemTime::now());
    for cut in [0, 10, HEADER, HEADER + 3] {
        let short = Blob(blob.0[..cut].to_vec().into_boxed_slice());
        assert!(short.decode().is_none(), "cut at {cut}");
    }
}

/// A bound session keeps its device binding (key, DBSC id, challenge, bound-cookie hash and
/// expiry) in the memory store, as it does in the Redis blob.
#[test]
fn a_device_binding_round_trips() {
    let now = SystemTime::now();
    let mut r = full();
    r.device = Some(Box::new(crate::record::BoundDevice {
        session_id: "sid".into(),
        key: Some(r#"{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}"#.into()),
        alg: Some("ES256".into()),
        challenge: Some("nonce".into()),
        challenge_expires: Some(now + Duration::from_secs(60)),
        cookie_hash: Some("ab".repeat(32)),
        cookie_expires: Some(now + Duration::from_secs(300)),
        bound_at: Some(now),
    }));
    let key = SessionToken::generate().key();
    let blob = Blob::encode(&key, &r, now);
    assert_eq!(blob.decode(), Some(r.clone()));
    r.data.clear();
    let blob = Blob::encode(&key, &r, now);
    assert_eq!(blob.decode(), Some(r));
}
