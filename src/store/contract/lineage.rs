//! The lineage a rotated-away key leaves for `delete` to follow: for
//! [`FORWARD_TTL`](crate::store::FORWARD_TTL), at most [`MAX_FORWARD_HOPS`] hops.

use super::harness::{
    eventually, guest, key, listed, load, load_now_agrees, member, ok, t0, user_id, Harness,
    APPLIED, CONFLICT, TTL,
};
use crate::store::{LoginOutcome, SessionStore, MAX_FORWARD_HOPS};

/// A rotated-away key is no session (loads find nothing, every write on it conflicts), but
/// for [`FORWARD_TTL`](crate::store::FORWARD_TTL) a `delete` of it follows the rotation and
/// ends the session it led to: a logout or revocation that read the session just before a
/// rotation (on another instance) still ends it. The suite checks within seconds, well
/// inside `FORWARD_TTL`; the forward's end is each store's own test.
pub async fn delete_follows_a_rotation_to_its_successor<H: Harness>(h: &H) {
    const RULE: &str = "delete follows a rotated-away key to its successor";
    let (a, b) = h.open(None).await;
    let u = user_id("lineage");
    let (k0, k1, k2) = (key(), key(), key());
    assert_eq!(ok(a.create(k0, guest(1, "k0"), TTL).await, RULE), APPLIED);
    assert!(load(&b, k0, RULE).await.is_some());
    assert_eq!(
        ok(a.rotate(k0, 1, k1, guest(1, "k1"), TTL).await, RULE),
        APPLIED
    );

    // The old key is no session, on either handle.
    assert_eq!(
        load(&a, k0, RULE).await,
        None,
        "store contract, {RULE}: a forward loads as a session"
    );
    load_now_agrees(&a, k0, RULE).await;
    eventually(&b, k0, None, RULE).await;
    load_now_agrees(&b, k0, RULE).await;
    let w = ok(a.update(k0, 1, guest(2, "k0"), TTL).await, RULE);
    assert_eq!(w, CONFLICT, "store contract, {RULE}: update of a forward");
    let w = ok(b.rotate(k0, 1, key(), guest(1, "k0"), TTL).await, RULE);
    assert_eq!(w, CONFLICT, "store contract, {RULE}: rotate of a forward");
    let w = ok(a.create(k0, guest(1, "k0"), TTL).await, RULE);
    assert_eq!(w, CONFLICT, "store contract, {RULE}: create over a forward");
    let l = ok(
        b.login(Some((k0, 1)), key(), member(&u, t0(), 0, "x"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(
        l,
        LoginOutcome::Conflict,
        "store contract, {RULE}: login from a forward"
    );
    assert_eq!(
        load(&a, k0, RULE).await,
        None,
        "store contract, {RULE}: a write on a forward took effect"
    );

    // The rotated guest logs in: k1 forwards to k2 now.
    let l = ok(
        a.login(Some((k1, 1)), k2, member(&u, t0(), 0, "k2"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(l, LoginOutcome::Applied { evicted: vec![] });
    assert_eq!(
        listed(&b, &u, 10, RULE).await,
        [k2],
        "store contract, {RULE}: a forward is listed"
    );
    assert!(load(&a, k2, RULE).await.is_some());
    assert!(load(&b, k2, RULE).await.is_some());

    // A logout on b with the key from before both rotations ends it everywhere.
    assert!(
        ok(b.delete(k0).await, RULE),
        "store contract, {RULE}: deleting k0 ended no live session"
    );
    assert_eq!(
        load(&b, k2, RULE).await,
        None,
        "store contract, {RULE}: the successor lives on"
    );
    load_now_agrees(&b, k2, RULE).await;
    eventually(&a, k2, None, RULE).await;
    load_now_agrees(&a, k2, RULE).await;
    assert!(
        listed(&a, &u, 10, RULE).await.is_empty(),
        "store contract, {RULE}: the ended successor is listed"
    );
    assert!(
        !ok(a.delete(k0).await, RULE),
        "store contract, {RULE}: nothing live is left"
    );
    assert!(
        !ok(b.delete(k1).await, RULE),
        "store contract, {RULE}: nothing live is left"
    );
    assert!(
        !ok(a.delete(k2).await, RULE),
        "store contract, {RULE}: nothing live is left"
    );

    // A forward to a session that ended already ends nothing, and says so.
    let (f0, f1) = (key(), key());
    assert_eq!(ok(a.create(f0, guest(1, "f0"), TTL).await, RULE), APPLIED);
    assert_eq!(
        ok(a.rotate(f0, 1, f1, guest(1, "f1"), TTL).await, RULE),
        APPLIED
    );
    assert!(ok(b.delete(f1).await, RULE));
    assert!(
        !ok(a.delete(f0).await, RULE),
        "store contract, {RULE}: a forward to an ended session"
    );

    // A logged-in session's rotation (a privilege change) forwards as well.
    let v = user_id("rotated-user");
    let (old, new) = (key(), key());
    assert_eq!(
        ok(a.create(old, member(&v, t0(), 0, "old"), TTL).await, RULE),
        APPLIED
    );
    assert_eq!(
        ok(
            a.rotate(old, 1, new, member(&v, t0(), 0, "new"), TTL).await,
            RULE
        ),
        APPLIED
    );
    assert_eq!(listed(&b, &v, 20, RULE).await, [new]);
    assert!(
        ok(a.delete(old).await, RULE),
        "store contract, {RULE}: a live session was ended"
    );
    assert_eq!(load(&a, new, RULE).await, None);
    assert!(!ok(a.delete(new).await, RULE));
    assert!(
        !ok(a.delete(old).await, RULE),
        "store contract, {RULE}: the forward went with it"
    );
    assert!(listed(&b, &v, 20, RULE).await.is_empty());
}

/// `delete` follows a lineage of up to [`MAX_FORWARD_HOPS`] rotations (a login counts as
/// one) and no further: beyond it, the first key ends nothing.
pub async fn delete_follows_at_most_max_forward_hops<H: Harness>(h: &H) {
    const RULE: &str = "delete follows at most MAX_FORWARD_HOPS forwards";
    let (a, b) = h.open(None).await;
    for hops in [1, MAX_FORWARD_HOPS, MAX_FORWARD_HOPS + 1] {
        let u = user_id("hops");
        let first = key();
        assert_eq!(
            ok(a.create(first, guest(1, "guest"), TTL).await, RULE),
            APPLIED
        );
        let mut last = key();
        let l = ok(
            a.login(Some((first, 1)), last, member(&u, t0(), 0, "1"), TTL, None)
                .await,
            RULE,
        );
        assert_eq!(l, LoginOutcome::Applied { evicted: vec![] });
        for hop in 1..hops {
            let next = key();
            let w = ok(
                a.rotate(last, 1, next, member(&u, t0(), 0, &hop.to_string()), TTL)
                    .await,
                RULE,
            );
            assert_eq!(w, APPLIED);
            last = next;
        }
        let reached = hops <= MAX_FORWARD_HOPS;
        assert_eq!(
            ok(b.delete(first).await, RULE),
            reached,
            "store contract, {RULE}: a delete of the first key of {hops} hops"
        );
        if reached {
            eventually(&a, last, None, RULE).await;
            assert_eq!(
                load(&b, last, RULE).await,
                None,
                "store contract, {RULE}: {hops} hops"
            );
        } else {
            assert!(
                load(&a, last, RULE).await.is_some(),
                "store contract, {RULE}: {hops} hops ended it"
            );
            assert_eq!(listed(&b, &u, 10, RULE).await, [last]);
        }
    }
}
