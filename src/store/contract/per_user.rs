//! The rules for a user's sessions: `login`, the per-user limit, and `user_sessions`.

use super::harness::{
    assert_some_in_order, at, eventually, guest, key, listed, load, member, ok, seen, t0, user_id,
    Harness, APPLIED, TTL,
};
use crate::store::{LimitPolicy, LoginOutcome, SessionLimit, SessionStore};

fn limit(max: usize, policy: LimitPolicy) -> Option<SessionLimit> {
    Some(SessionLimit { max, policy })
}

const NONE_EVICTED: LoginOutcome = LoginOutcome::Applied {
    evicted: Vec::new(),
};

/// `login` without an old session creates the new one and indexes it; from an old session,
/// it moves it (old key gone, new key indexed) only if the old one is still at the expected
/// version; a taken new key, or an old session that changed or ended, is a conflict that
/// changes nothing.
pub async fn login_with_and_without_an_old_session<H: Harness>(h: &H) {
    const RULE: &str = "login moves or creates a session and indexes it";
    let (a, b) = h.open(None).await;
    let (u, t0) = (user_id("login"), t0());
    let s1 = key();
    let l = ok(
        a.login(None, s1, member(&u, t0, 0, "s1"), TTL, None).await,
        RULE,
    );
    assert_eq!(
        l, NONE_EVICTED,
        "store contract, {RULE}: without an old session"
    );
    assert_eq!(load(&b, s1, RULE).await, at(1, "s1"));
    assert_eq!(listed(&b, &u, 10, RULE).await, [s1]);

    // A taken new key.
    let taken = key();
    assert_eq!(
        ok(b.create(taken, guest(1, "taken"), TTL).await, RULE),
        APPLIED
    );
    let l = ok(
        a.login(None, taken, member(&u, t0, 1, "x"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::Conflict,
        "store contract, {RULE}: a taken new key"
    );
    assert_eq!(
        load(&b, taken, RULE).await,
        at(1, "taken"),
        "store contract, {RULE}: the taken key changed"
    );
    assert_eq!(
        listed(&a, &u, 10, RULE).await,
        [s1],
        "store contract, {RULE}: a conflict indexed"
    );

    // A guest session logs in: the guest key disappears, the new one is indexed.
    let (g, s2) = (key(), key());
    assert_eq!(ok(b.create(g, guest(1, "guest"), TTL).await, RULE), APPLIED);
    let l = ok(
        b.login(Some((g, 2)), s2, member(&u, t0, 1, "s2"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::Conflict,
        "store contract, {RULE}: a stale version of the old session"
    );
    assert_eq!(
        load(&a, s2, RULE).await,
        None,
        "store contract, {RULE}: a conflict wrote the new key"
    );
    assert_eq!(
        load(&b, g, RULE).await,
        at(1, "guest"),
        "store contract, {RULE}: a conflict changed the old key"
    );
    let l = ok(
        b.login(Some((key(), 1)), s2, member(&u, t0, 1, "s2"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::Conflict,
        "store contract, {RULE}: an old session that ended"
    );
    assert_eq!(
        load(&a, s2, RULE).await,
        None,
        "store contract, {RULE}: a conflict wrote the new key"
    );
    let l = ok(
        b.login(Some((g, 1)), s2, member(&u, t0, 1, "s2"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(
        l, NONE_EVICTED,
        "store contract, {RULE}: from the expected version"
    );
    assert_eq!(
        load(&b, g, RULE).await,
        None,
        "store contract, {RULE}: the old key is gone"
    );
    assert_eq!(
        load(&a, g, RULE).await,
        None,
        "store contract, {RULE}: the old key is gone"
    );
    assert_eq!(load(&a, s2, RULE).await, at(1, "s2"));
    assert_eq!(
        listed(&a, &u, 100, RULE).await,
        [s1, s2],
        "store contract, {RULE}: oldest first"
    );
}

/// With [`LimitPolicy::RejectNew`], a login that would take the user beyond the limit is
/// [`LoginOutcome::LimitReached`] and changes nothing (the old session stays); a re-login of
/// one of the user's own sessions does not count against the limit, nor do ended sessions.
pub async fn login_limit_rejects_new_sessions<H: Harness>(h: &H) {
    const RULE: &str = "a login beyond the limit with RejectNew is LimitReached";
    let (a, b) = h.open(None).await;
    let (u, t0) = (user_id("reject"), t0());
    let reject = limit(2, LimitPolicy::RejectNew);
    let (s1, s2, s3) = (key(), key(), key());
    assert_eq!(
        ok(
            a.login(None, s1, member(&u, t0, 0, "s1"), TTL, None).await,
            RULE
        ),
        NONE_EVICTED
    );
    assert_eq!(
        ok(
            b.login(None, s2, member(&u, t0, 1, "s2"), TTL, None).await,
            RULE
        ),
        NONE_EVICTED
    );

    let l = ok(
        a.login(None, s3, member(&u, t0, 2, "s3"), TTL, reject)
            .await,
        RULE,
    );
    assert_eq!(l, LoginOutcome::LimitReached, "store contract, {RULE}");
    assert_eq!(
        load(&b, s3, RULE).await,
        None,
        "store contract, {RULE}: a rejected login wrote"
    );
    let g = key();
    assert_eq!(ok(b.create(g, guest(1, "guest"), TTL).await, RULE), APPLIED);
    let l = ok(
        a.login(Some((g, 1)), s3, member(&u, t0, 2, "s3"), TTL, reject)
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::LimitReached,
        "store contract, {RULE}: from a guest session"
    );
    assert_eq!(
        load(&b, g, RULE).await,
        at(1, "guest"),
        "store contract, {RULE}: a rejected login ended the old session"
    );
    assert_eq!(
        load(&b, s3, RULE).await,
        None,
        "store contract, {RULE}: a rejected login wrote"
    );
    assert_eq!(
        listed(&b, &u, 10, RULE).await,
        [s1, s2],
        "store contract, {RULE}: the index changed"
    );

    // Re-logging in one of the user's sessions does not count against the limit.
    let s2b = key();
    assert!(load(&b, s2, RULE).await.is_some());
    let l = ok(
        a.login(Some((s2, 1)), s2b, member(&u, t0, 3, "s2b"), TTL, reject)
            .await,
        RULE,
    );
    assert_eq!(
        l, NONE_EVICTED,
        "store contract, {RULE}: a re-login of the user's own session"
    );
    eventually(&b, s2, None, RULE).await;
    assert_eq!(listed(&a, &u, 10, RULE).await, [s1, s2b]);

    // Nor do ended sessions.
    assert!(ok(b.delete(s1).await, RULE));
    let l = ok(
        a.login(None, s3, member(&u, t0, 4, "s3"), TTL, reject)
            .await,
        RULE,
    );
    assert_eq!(
        l, NONE_EVICTED,
        "store contract, {RULE}: an ended session still counted"
    );
    assert_eq!(listed(&b, &u, 10, RULE).await, [s2b, s3]);
}

/// With [`LimitPolicy::EvictOldest`], a login beyond the limit ends the user's oldest
/// sessions (by creation) and lists them in `evicted`, oldest first; they are gone on both
/// handles.
pub async fn login_limit_evicts_the_oldest<H: Harness>(h: &H) {
    const RULE: &str = "a login beyond the limit with EvictOldest ends the oldest sessions";
    let (a, b) = h.open(None).await;
    let (u, t0) = (user_id("evict"), t0());
    let (s1, s2, s3, s4) = (key(), key(), key(), key());
    assert_eq!(
        ok(
            a.login(None, s1, member(&u, t0, 0, "s1"), TTL, None).await,
            RULE
        ),
        NONE_EVICTED
    );
    assert_eq!(
        ok(
            b.login(None, s2, member(&u, t0, 1, "s2"), TTL, None).await,
            RULE
        ),
        NONE_EVICTED
    );
    for s in [&a, &b] {
        for k in [s1, s2] {
            assert!(load(s, k, RULE).await.is_some());
        }
    }

    let evict = |max| limit(max, LimitPolicy::EvictOldest);
    let l = ok(
        b.login(None, s3, member(&u, t0, 2, "s3"), TTL, evict(2))
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::Applied { evicted: vec![s1] },
        "store contract, {RULE}"
    );
    assert_eq!(
        load(&b, s1, RULE).await,
        None,
        "store contract, {RULE}: the evicted session lives on"
    );
    eventually(&a, s1, None, RULE).await;
    assert_eq!(listed(&a, &u, 10, RULE).await, [s2, s3]);

    let l = ok(
        a.login(None, s4, member(&u, t0, 3, "s4"), TTL, evict(1))
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::Applied {
            evicted: vec![s2, s3]
        },
        "store contract, {RULE}: oldest first"
    );
    eventually(&b, s2, None, RULE).await;
    eventually(&b, s3, None, RULE).await;
    assert_eq!(listed(&b, &u, 100, RULE).await, [s4]);

    // Deleting leaves the index; nothing is listed for a user without sessions.
    assert!(ok(b.delete(s4).await, RULE));
    assert!(listed(&a, &u, 100, RULE).await.is_empty());
    assert!(listed(&a, &user_id("nobody"), 100, RULE).await.is_empty());
}

/// `user_sessions` lists the user's live sessions oldest first (by creation), at most
/// `limit` of them, and no other user's; `create`, `login` and `rotate` of a record with an
/// identity index it.
///
/// Which `limit` sessions a store lists when the user holds more is not part of the
/// contract: `MemoryStore` lists the oldest, `RedisStore` those with the earliest deadlines
/// (the least recently active), in creation order.
pub async fn user_sessions_lists_oldest_first_within_the_limit<H: Harness>(h: &H) {
    const RULE: &str = "user_sessions lists oldest first, at most limit";
    let (a, b) = h.open(None).await;
    let (u, v, t0) = (user_id("list"), user_id("other"), t0());
    let (k0, k1, k2, kv) = (key(), key(), key(), key());
    // Written out of order: the list goes by creation, not by writing.
    assert_eq!(
        ok(a.create(k2, member(&u, t0, 20, "k2"), TTL).await, RULE),
        APPLIED
    );
    let l = ok(
        b.login(None, k0, member(&u, t0, 0, "k0"), TTL, None).await,
        RULE,
    );
    assert_eq!(l, NONE_EVICTED);
    assert_eq!(
        ok(b.create(k1, member(&u, t0, 10, "k1"), TTL).await, RULE),
        APPLIED
    );
    assert_eq!(
        ok(a.create(kv, member(&v, t0, 5, "kv"), TTL).await, RULE),
        APPLIED
    );

    let list = ok(a.user_sessions(&u, 10).await, RULE);
    let got: Vec<_> = list.iter().map(|(k, r)| (*k, seen(Some(r)))).collect();
    let want = [(k0, at(1, "k0")), (k1, at(1, "k1")), (k2, at(1, "k2"))];
    assert_eq!(
        got, want,
        "store contract, {RULE}: oldest first, with their records"
    );
    for (s, limit) in [(&b, 2), (&a, 1)] {
        let got = listed(s, &u, limit, RULE).await;
        assert_some_in_order(&got, &[k0, k1, k2], limit, RULE);
    }
    assert_eq!(
        listed(&b, &v, 10, RULE).await,
        [kv],
        "store contract, {RULE}: another user"
    );
    assert!(listed(&a, &user_id("nobody"), 10, RULE).await.is_empty());

    // A rotation moves the entry.
    let k1b = key();
    let w = ok(
        a.rotate(k1, 1, k1b, member(&u, t0, 10, "k1b"), TTL).await,
        RULE,
    );
    assert_eq!(w, APPLIED);
    assert_eq!(
        listed(&b, &u, 10, RULE).await,
        [k0, k1b, k2],
        "store contract, {RULE}: after a rotation"
    );
}

/// Sessions that ended are neither listed nor counted against `limit`: the index drops
/// their entries. (The drop itself is not visible through the trait; each store's own tests
/// look at its index.)
pub async fn user_sessions_leave_out_ended_sessions<H: Harness>(h: &H) {
    const RULE: &str = "user_sessions leaves out ended sessions";
    let (a, b) = h.open(None).await;
    let (u, t0) = (user_id("ended"), t0());
    let keys: Vec<_> = (0..4).map(|_| key()).collect();
    for (i, k) in keys.iter().enumerate() {
        let l = ok(
            a.login(None, *k, member(&u, t0, i as u64, "k"), TTL, None)
                .await,
            RULE,
        );
        assert_eq!(l, NONE_EVICTED);
    }
    assert!(ok(b.delete(keys[0]).await, RULE));
    assert!(ok(a.delete(keys[1]).await, RULE));
    assert_eq!(
        listed(&b, &u, 2, RULE).await,
        keys[2..],
        "store contract, {RULE}: the two live sessions, in a list of 2"
    );
    assert_eq!(listed(&a, &u, 10, RULE).await, keys[2..]);
}
