//! The rules for one session: `create`, `update`, `rotate`, `delete`.

use super::harness::{
    at, eventually, guest, key, listed, load, member, ok, t0, user_id, Harness, APPLIED, CONFLICT,
    TTL,
};
use crate::store::{LoginOutcome, SessionStore};

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
