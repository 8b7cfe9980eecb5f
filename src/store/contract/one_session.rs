//! The rules for one session: `create`, `update`, `rotate`, `delete`, and the lineage a
//! rotated-away key leaves for `delete` to follow.

use super::harness::{
    at, eventually, guest, key, listed, load, load_now_agrees, member, ok, t0, user_id, Harness,
    APPLIED, CONFLICT, TTL,
};
use crate::store::{LoginOutcome, SessionStore, MAX_FORWARD_HOPS};

/// `create` refuses a key that exists, on either handle, and leaves the record as it was: no
/// collision ever overwrites a live session.
pub async fn create_refuses_an_existing_key<H: Harness>(h: &H) {
    const RULE: &str = "create refuses an existing key";
    let (a, b) = h.open(None).await;
    let k = key();
    let created = ok(a.create(k, guest(1, "first"), TTL).await, RULE);
    assert_eq!(created, APPLIED, "store contract, {RULE}: a fresh key");
    for (name, s) in [("the same handle", &a), ("the other handle", &b)] {
        let again = ok(s.create(k, guest(7, "second"), TTL).await, RULE);
        assert_eq!(again, CONFLICT, "store contract, {RULE}: on {name}");
    }
    assert_eq!(
        load(&b, k, RULE).await,
        at(1, "first"),
        "store contract, {RULE}: the record is unchanged"
    );
    assert_eq!(load(&a, k, RULE).await, at(1, "first"));

    // A logged-in user's key as well.
    let u = user_id("create");
    let k = key();
    let created = ok(b.create(k, member(&u, t0(), 0, "user"), TTL).await, RULE);
    assert_eq!(created, APPLIED, "store contract, {RULE}: a fresh key");
    let again = ok(a.create(k, guest(1, "guest"), TTL).await, RULE);
    assert_eq!(again, CONFLICT, "store contract, {RULE}: a user's key");
    assert_eq!(load(&a, k, RULE).await, at(1, "user"));
    assert_eq!(listed(&a, &u, 10, RULE).await, [k]);
}

/// `update` is compare-and-set on the version: it applies only to an existing record at
/// the expected version, on either handle, and never creates a record.
pub async fn update_is_compare_and_set<H: Harness>(h: &H) {
    const RULE: &str = "update is compare-and-set";
    let (a, b) = h.open(None).await;
    let k = key();
    assert_eq!(ok(a.create(k, guest(1, "v1"), TTL).await, RULE), APPLIED);
    assert_eq!(
        load(&b, k, RULE).await,
        at(1, "v1"),
        "store contract, {RULE}: b reads a's create"
    );

    let w = ok(a.update(k, 2, guest(3, "wrong"), TTL).await, RULE);
    assert_eq!(
        w, CONFLICT,
        "store contract, {RULE}: a wrong expected version"
    );
    assert_eq!(
        load(&a, k, RULE).await,
        at(1, "v1"),
        "store contract, {RULE}: unchanged by a conflict"
    );
    let w = ok(a.update(k, 1, guest(2, "v2"), TTL).await, RULE);
    assert_eq!(w, APPLIED, "store contract, {RULE}: the expected version");
    assert_eq!(load(&a, k, RULE).await, at(2, "v2"));
    let w = ok(a.update(k, 1, guest(2, "again"), TTL).await, RULE);
    assert_eq!(
        w, CONFLICT,
        "store contract, {RULE}: the version it just replaced"
    );

    // The other handle sees the new version; its stale compare-and-set fails, then succeeds
    // on the fresh version.
    eventually(&b, k, at(2, "v2"), RULE).await;
    let w = ok(b.update(k, 1, guest(2, "stale"), TTL).await, RULE);
    assert_eq!(
        w, CONFLICT,
        "store contract, {RULE}: a stale version on the other handle"
    );
    let w = ok(b.update(k, 2, guest(3, "v3"), TTL).await, RULE);
    assert_eq!(
        w, APPLIED,
        "store contract, {RULE}: the fresh version on the other handle"
    );
    eventually(&a, k, at(3, "v3"), RULE).await;

    // An update of an absent key creates nothing.
    let ghost = key();
    let w = ok(a.update(ghost, 1, guest(2, "ghost"), TTL).await, RULE);
    assert_eq!(w, CONFLICT, "store contract, {RULE}: a missing key");
    assert_eq!(
        load(&a, ghost, RULE).await,
        None,
        "store contract, {RULE}: update created a record"
    );
    assert_eq!(
        load(&b, ghost, RULE).await,
        None,
        "store contract, {RULE}: update created a record"
    );
}

/// A stale writer cannot bring back a deleted record: after a delete, `update`, `rotate`
/// and `login` from the old version all conflict and write nothing.
pub async fn stale_writer_cannot_bring_back_a_deleted_record<H: Harness>(h: &H) {
    const RULE: &str = "a stale writer cannot bring back a deleted record";
    let (a, b) = h.open(None).await;
    let k = key();
    assert_eq!(ok(a.create(k, guest(1, "v1"), TTL).await, RULE), APPLIED);
    assert!(load(&a, k, RULE).await.is_some());
    assert!(load(&b, k, RULE).await.is_some());
    assert!(
        ok(b.delete(k).await, RULE),
        "store contract, {RULE}: the delete ends it"
    );

    for (name, s) in [("the deleting handle", &b), ("the other handle", &a)] {
        let w = ok(s.update(k, 1, guest(2, "revived"), TTL).await, RULE);
        assert_eq!(w, CONFLICT, "store contract, {RULE}: update on {name}");
        let new = key();
        let w = ok(s.rotate(k, 1, new, guest(1, "revived"), TTL).await, RULE);
        assert_eq!(w, CONFLICT, "store contract, {RULE}: rotate on {name}");
        assert_eq!(
            load(&a, new, RULE).await,
            None,
            "store contract, {RULE}: rotate wrote"
        );
        assert_eq!(
            load(&b, new, RULE).await,
            None,
            "store contract, {RULE}: rotate wrote"
        );
        let u = user_id("stale");
        let new = key();
        let l = ok(
            s.login(Some((k, 1)), new, member(&u, t0(), 0, "revived"), TTL, None)
                .await,
            RULE,
        );
        assert_eq!(
            l,
            LoginOutcome::Conflict,
            "store contract, {RULE}: login on {name}"
        );
        assert_eq!(
            load(&b, new, RULE).await,
            None,
            "store contract, {RULE}: login wrote"
        );
        assert!(
            listed(&a, &u, 10, RULE).await.is_empty(),
            "store contract, {RULE}: login indexed"
        );
    }
    eventually(&a, k, None, RULE).await;
    assert_eq!(
        load(&b, k, RULE).await,
        None,
        "store contract, {RULE}: the record is back"
    );
}

/// `rotate` needs the expected version: then the record appears under the new key and the
/// old key disappears (at once on the writing handle, within [`COHERENCE`] on the other); at
/// another version nothing changes. A user's index follows the rotation.
///
/// [`COHERENCE`]: super::COHERENCE
pub async fn rotate_needs_the_expected_version<H: Harness>(h: &H) {
    const RULE: &str = "rotate moves a session only at the expected version";
    let (a, b) = h.open(None).await;
    let (k, new) = (key(), key());
    assert_eq!(ok(a.create(k, guest(1, "old"), TTL).await, RULE), APPLIED);
    assert_eq!(load(&b, k, RULE).await, at(1, "old"));

    let w = ok(a.rotate(k, 2, new, guest(1, "rotated"), TTL).await, RULE);
    assert_eq!(
        w, CONFLICT,
        "store contract, {RULE}: a wrong expected version"
    );
    assert_eq!(
        load(&b, new, RULE).await,
        None,
        "store contract, {RULE}: a failed rotation wrote the new key"
    );
    assert_eq!(
        load(&a, k, RULE).await,
        at(1, "old"),
        "store contract, {RULE}: a failed rotation changed the old key"
    );

    let w = ok(a.rotate(k, 1, new, guest(1, "rotated"), TTL).await, RULE);
    assert_eq!(w, APPLIED, "store contract, {RULE}: the expected version");
    assert_eq!(
        load(&a, k, RULE).await,
        None,
        "store contract, {RULE}: the old key is gone on the writing handle"
    );
    assert_eq!(load(&a, new, RULE).await, at(1, "rotated"));
    eventually(&b, k, None, RULE).await;
    assert_eq!(
        load(&b, new, RULE).await,
        at(1, "rotated"),
        "store contract, {RULE}: the new key on the other handle"
    );
    let again = ok(b.rotate(k, 1, key(), guest(1, "again"), TTL).await, RULE);
    assert_eq!(
        again, CONFLICT,
        "store contract, {RULE}: a rotated-away key is no session"
    );

    // A user's session: the index follows the key.
    let u = user_id("rotate");
    let (u1, u2) = (key(), key());
    assert_eq!(
        ok(b.create(u1, member(&u, t0(), 0, "u1"), TTL).await, RULE),
        APPLIED
    );
    let w = ok(
        b.rotate(u1, 1, u2, member(&u, t0(), 0, "u2"), TTL).await,
        RULE,
    );
    assert_eq!(w, APPLIED);
    assert_eq!(
        listed(&a, &u, 10, RULE).await,
        [u2],
        "store contract, {RULE}: the user's index"
    );
}

/// `rotate` onto a key that exists conflicts, and changes neither record.
pub async fn rotate_refuses_a_taken_key<H: Harness>(h: &H) {
    const RULE: &str = "rotate refuses a taken new key";
    let (a, b) = h.open(None).await;
    let (k, taken) = (key(), key());
    assert_eq!(ok(a.create(k, guest(1, "old"), TTL).await, RULE), APPLIED);
    assert_eq!(
        ok(b.create(taken, guest(1, "taken"), TTL).await, RULE),
        APPLIED
    );
    let w = ok(a.rotate(k, 1, taken, guest(1, "rotated"), TTL).await, RULE);
    assert_eq!(w, CONFLICT, "store contract, {RULE}");
    for s in [&a, &b] {
        assert_eq!(
            load(s, k, RULE).await,
            at(1, "old"),
            "store contract, {RULE}: old intact"
        );
        assert_eq!(
            load(s, taken, RULE).await,
            at(1, "taken"),
            "store contract, {RULE}: the taken key intact"
        );
    }
    // The conflict was the key's: a fresh one takes the rotation.
    let fresh = key();
    let w = ok(a.rotate(k, 1, fresh, guest(1, "rotated"), TTL).await, RULE);
    assert_eq!(w, APPLIED, "store contract, {RULE}: a fresh key");
}

/// `delete` is final and answers whether it ended a live record: true once, then false, on
/// either handle; a user's index loses the session.
pub async fn delete_is_final<H: Harness>(h: &H) {
    const RULE: &str = "delete is final and says whether it ended a live record";
    let (a, b) = h.open(None).await;
    let k = key();
    assert_eq!(ok(a.create(k, guest(1, "v1"), TTL).await, RULE), APPLIED);
    assert!(load(&a, k, RULE).await.is_some());
    assert!(load(&b, k, RULE).await.is_some());
    assert!(
        ok(b.delete(k).await, RULE),
        "store contract, {RULE}: the first delete ends it"
    );
    assert!(
        !ok(a.delete(k).await, RULE),
        "store contract, {RULE}: a second delete, other handle"
    );
    assert!(
        !ok(b.delete(k).await, RULE),
        "store contract, {RULE}: a second delete, same handle"
    );
    assert_eq!(
        load(&b, k, RULE).await,
        None,
        "store contract, {RULE}: gone on the deleting handle"
    );
    eventually(&a, k, None, RULE).await;
    assert!(
        !ok(a.delete(key()).await, RULE),
        "store contract, {RULE}: a key never written"
    );

    let u = user_id("delete");
    let s = key();
    let l = ok(
        a.login(None, s, member(&u, t0(), 0, "u"), TTL, None).await,
        RULE,
    );
    assert_eq!(l, LoginOutcome::Applied { evicted: vec![] });
    assert!(ok(b.delete(s).await, RULE));
    assert!(
        listed(&a, &u, 10, RULE).await.is_empty(),
        "store contract, {RULE}: the index still lists it"
    );
}

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
