//! The rules for reads: a record comes back as written, ends with its ttl, and `load_now`
//! agrees with `load`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::harness::{
    assert_some_in_order, at, eventually, guest, key, listed, load, load_now_agrees, member, ok,
    sleep, t0, user_id, Harness, APPLIED, EXPIRY_GRACE, SHORT_TTL, TTL,
};
use crate::id::SessionKey;
use crate::record::{Identity, SessionRecord};
use crate::store::{LimitPolicy, LoginOutcome, SessionLimit, SessionStore};

/// A record comes back with every field as written, to the nanosecond, on the other handle,
/// after an update and under the new key of a login: a store may encode records as it likes
/// (the memory store's compact blob, MessagePack in Redis), but it may lose nothing. A field
/// added to [`SessionRecord`] later is caught here for every store that runs the suite.
pub async fn records_come_back_with_every_field<H: Harness>(h: &H) {
    const RULE: &str = "a record comes back with every field";
    let (a, b) = h.open(None).await;
    let start = t0() + Duration::from_nanos(123_456_789);
    let mut full = SessionRecord::new(start);
    full.last_seen = start + Duration::from_nanos(987_654_321);
    full.authenticated_at = Some(start + Duration::from_nanos(1));
    full.identity = Some(
        Identity::new(user_id("fields"))
            .with_roles(["admin", "ops"])
            .with_groups(["staff", "émigré ✓"]),
    );
    full.pinned_ip = Some(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7).into());
    full.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) ✓".to_owned());
    full.remember_me = Some(Duration::from_secs(14 * 24 * 3600) + Duration::from_nanos(5));
    full.data.insert("count".to_owned(), 3.into());
    full.data.insert("ratio".to_owned(), 0.1.into());
    full.data.insert(
        "cart".to_owned(),
        serde_json::json!({"items": ["a", {"b": null}], "total": -12.5}),
    );
    let full = Arc::new(full);

    let k = key();
    assert_eq!(ok(a.create(k, full.clone(), TTL).await, RULE), APPLIED);
    let read = ok(b.load(k).await, RULE);
    assert_eq!(
        read.as_deref(),
        Some(&*full),
        "store contract, {RULE}: as created, read on the other handle"
    );

    let mut next = SessionRecord::clone(&full);
    next.version += 1;
    next.pinned_ip = Some(std::net::Ipv4Addr::new(192, 0, 2, 1).into());
    next.user_agent = None;
    next.remember_me = None;
    let next = Arc::new(next);
    assert_eq!(ok(b.update(k, 1, next.clone(), TTL).await, RULE), APPLIED);
    for (name, s) in [("the writing handle", &b), ("the other handle", &a)] {
        assert_eq!(
            settled(s, k, next.version, RULE).await.as_deref(),
            Some(&*next),
            "store contract, {RULE}: as updated, optional fields removed, on {name}"
        );
    }

    let new = key();
    let limit = Some(SessionLimit {
        max: 5,
        policy: LimitPolicy::EvictOldest,
    });
    let done = ok(
        a.login(Some((k, 2)), new, full.clone(), TTL, limit).await,
        RULE,
    );
    assert!(
        matches!(done, LoginOutcome::Applied { .. }),
        "store contract, {RULE}: the login applies"
    );
    for (name, s) in [("the writing handle", &a), ("the other handle", &b)] {
        assert_eq!(
            settled(s, new, full.version, RULE).await.as_deref(),
            Some(&*full),
            "store contract, {RULE}: as logged in under the new key, on {name}"
        );
    }
}

/// What `store` reads under `key` once it reads `version` (a write on the other handle reaches
/// a near-cache within [`COHERENCE`](super::COHERENCE)), or what it reads then.
async fn settled<S: SessionStore>(
    store: &S,
    key: SessionKey,
    version: u64,
    rule: &str,
) -> Option<Arc<SessionRecord>> {
    let start = Instant::now();
    loop {
        let got = ok(store.load(key).await, rule);
        if got.as_ref().is_some_and(|r| r.version == version) || start.elapsed() >= super::COHERENCE
        {
            return got;
        }
        sleep(Duration::from_millis(5)).await;
    }
}

/// A record written with a ttl is gone after it (store ttls are wall-clock time by
/// contract): it is not listed, does not count against the per-user limit, and a delete of
/// it ends nothing; records with a longer ttl are untouched. A load may still answer from a
/// cache with the record as written: the trait allows a late drop, because the layer checks
/// expiry from the record on every load.
///
/// The suite's one real-time wait: records with a ttl of 10 ms, and a poll for their end
/// for at most [`EXPIRY_GRACE`] (2 s).
pub async fn records_expire_after_their_ttl<H: Harness>(h: &H) {
    const RULE: &str = "a record is gone after its ttl";
    let (a, b) = h.open(None).await;
    let (u, t0) = (user_id("expiry"), t0());
    // The short-lived sessions are the user's oldest, so a list that took the oldest index
    // entries and only then dropped the expired ones would come back short.
    let short: Vec<_> = (0..4).map(|_| key()).collect();
    assert_eq!(
        ok(a.create(short[0], guest(1, "short"), SHORT_TTL).await, RULE),
        APPLIED
    );
    let l = ok(
        a.login(None, short[1], member(&u, t0, 0, "short"), SHORT_TTL, None)
            .await,
        RULE,
    );
    assert_eq!(l, LoginOutcome::Applied { evicted: vec![] });
    for (i, k) in short.iter().enumerate().skip(2) {
        let w = ok(
            b.create(*k, member(&u, t0, i as u64, "short"), SHORT_TTL)
                .await,
            RULE,
        );
        assert_eq!(w, APPLIED);
    }
    let long: Vec<_> = (0..3).map(|_| key()).collect();
    assert_eq!(
        ok(b.create(long[0], guest(1, "long"), TTL).await, RULE),
        APPLIED
    );
    for (i, k) in long.iter().enumerate().skip(1) {
        let w = ok(
            a.create(*k, member(&u, t0, 10 + i as u64, "long"), TTL)
                .await,
            RULE,
        );
        assert_eq!(w, APPLIED);
    }

    // The list first: wait until it shows only the long-lived sessions, then the limit.
    let deadline = Instant::now() + SHORT_TTL + EXPIRY_GRACE;
    loop {
        let got = listed(&b, &u, 20, RULE).await;
        if got == long[1..] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store contract, {RULE}: user_sessions lists {got:?} {EXPIRY_GRACE:?} after a ttl \
             of {SHORT_TTL:?}; the live sessions are {:?}",
            &long[1..]
        );
        sleep(SHORT_TTL).await;
    }
    let got = listed(&a, &u, 1, RULE).await;
    assert_some_in_order(&got, &long[1..], 1, RULE);
    let reject = Some(SessionLimit {
        max: 3,
        policy: LimitPolicy::RejectNew,
    });
    let l = ok(
        a.login(None, key(), member(&u, t0, 20, "new"), TTL, reject)
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::Applied { evicted: vec![] },
        "store contract, {RULE}: expired sessions counted against the limit"
    );
    for k in &long {
        assert!(
            load(&b, *k, RULE).await.is_some(),
            "store contract, {RULE}: a record with a long ttl ended"
        );
    }

    // Loads: the trait lets a store drop an expired record late (the layer checks expiry
    // from the record itself on every load), so a cache may still answer with it; but only
    // with the record as it was written, never anything newer.
    for (name, s) in [("a", &a), ("b", &b)] {
        for k in &short {
            if let Some((version, tag)) = load(s, *k, RULE).await {
                assert!(
                    version == 1 && tag == "short",
                    "store contract, {RULE}: an expired record {k:?} loads on {name} changed: \
                     version {version}, {tag:?}"
                );
            }
        }
    }
    for k in &short {
        assert!(
            !ok(b.delete(*k).await, RULE),
            "store contract, {RULE}: a delete of an expired record ended a live one"
        );
    }
}

/// `load_now`, whenever it answers, answers what `load` does: for a key never written, and
/// after each kind of write, on the writing handle and (once the write reached it) the
/// other one.
pub async fn load_now_agrees_with_load<H: Harness>(h: &H) {
    const RULE: &str = "load_now agrees with load";
    let (a, b) = h.open(None).await;
    let agree = |k| both_agree(&a, &b, k, RULE);
    let absent = key();
    agree(absent).await;

    let k = key();
    assert_eq!(ok(a.create(k, guest(1, "v1"), TTL).await, RULE), APPLIED);
    assert_eq!(load(&b, k, RULE).await, at(1, "v1"));
    agree(k).await;
    assert_eq!(ok(a.update(k, 1, guest(2, "v2"), TTL).await, RULE), APPLIED);
    load_now_agrees(&a, k, RULE).await;
    eventually(&b, k, at(2, "v2"), RULE).await;
    agree(k).await;

    let k2 = key();
    assert_eq!(
        ok(b.rotate(k, 2, k2, guest(1, "k2"), TTL).await, RULE),
        APPLIED
    );
    load_now_agrees(&b, k, RULE).await;
    load_now_agrees(&b, k2, RULE).await;
    eventually(&a, k, None, RULE).await;
    assert_eq!(load(&a, k2, RULE).await, at(1, "k2"));
    agree(k).await;
    agree(k2).await;

    let (u, k3) = (user_id("load-now"), key());
    let l = ok(
        a.login(Some((k2, 1)), k3, member(&u, t0(), 0, "k3"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(l, LoginOutcome::Applied { evicted: vec![] });
    load_now_agrees(&a, k2, RULE).await;
    load_now_agrees(&a, k3, RULE).await;
    eventually(&b, k2, None, RULE).await;
    assert_eq!(load(&b, k3, RULE).await, at(1, "k3"));
    agree(k2).await;
    agree(k3).await;

    assert!(ok(b.delete(k3).await, RULE));
    load_now_agrees(&b, k3, RULE).await;
    eventually(&a, k3, None, RULE).await;
    agree(k3).await;
}

async fn both_agree<S: SessionStore>(a: &S, b: &S, k: crate::id::SessionKey, rule: &str) {
    load_now_agrees(a, k, rule).await;
    load_now_agrees(b, k, rule).await;
}
