//! The rules for room: a guest budget makes room by ending the oldest guests, never a user;
//! a store full of users refuses a new guest as "full".

use std::time::Duration;

use super::harness::{
    eventually, guest, key, load, member, ok, t0, user_id, Harness, APPLIED, TTL,
};
use crate::id::SessionKey;
use crate::store::{LoginOutcome, SessionStore};

/// The guest budget the suite opens stores with.
const BUDGET: usize = 3;

/// Guest `i`'s ttl: a second more for each later guest, so that the oldest guest is also the
/// one that expires first (the least recently active): the two orders a store may evict by
/// agree.
fn guest_ttl(i: usize) -> Duration {
    TTL + Duration::from_secs(i as u64)
}

/// Creates guest `i` on `store` and returns its key.
async fn new_guest<S: SessionStore>(store: &S, i: usize, rule: &str) -> SessionKey {
    let k = key();
    let w = ok(
        store
            .create(k, guest(1, &format!("g{i}")), guest_ttl(i))
            .await,
        rule,
    );
    assert_eq!(
        w, APPLIED,
        "store contract, {rule}: guest {i} within the budget's rules"
    );
    k
}

/// Which of `keys` `store` reads as live.
async fn alive<S: SessionStore>(store: &S, keys: &[SessionKey], rule: &str) -> Vec<bool> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.push(load(store, *k, rule).await.is_some());
    }
    out
}

/// A store opened with a guest budget of 3 holds at most 3 guests: a new guest beyond it
/// ends the oldest guest (first created, first to expire), on both handles, and never a
/// logged-in user's session.
pub async fn guest_budget_ends_the_oldest_guests_first<H: Harness>(h: &H) {
    const RULE: &str = "a full guest budget ends the oldest guest, never a user";
    let (a, b) = h.open(Some(BUDGET as u64)).await;
    let (u, t0) = (user_id("budget"), t0());
    let users = [key(), key()];
    let l = ok(
        a.login(None, users[0], member(&u, t0, 0, "u0"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(l, LoginOutcome::Applied { evicted: vec![] });
    let w = ok(b.create(users[1], member(&u, t0, 1, "u1"), TTL).await, RULE);
    assert_eq!(w, APPLIED);

    let mut guests = Vec::new();
    for i in 0..BUDGET {
        let s = if i % 2 == 0 { &a } else { &b };
        guests.push(new_guest(s, i, RULE).await);
    }
    assert_eq!(
        alive(&a, &guests, RULE).await,
        [true; BUDGET],
        "store contract, {RULE}: within the budget"
    );
    assert!(load(&b, guests[0], RULE).await.is_some());

    // One more guest ends the oldest, on both handles.
    guests.push(new_guest(&a, BUDGET, RULE).await);
    eventually(&a, guests[0], None, RULE).await;
    eventually(&b, guests[0], None, RULE).await;
    assert_eq!(alive(&b, &guests[1..], RULE).await, [true; BUDGET]);
    guests.push(new_guest(&b, BUDGET + 1, RULE).await);
    eventually(&a, guests[1], None, RULE).await;
    assert_eq!(alive(&a, &guests[2..], RULE).await, [true; BUDGET]);

    // A flood of guests leaves the newest within the budget, and every user.
    for i in guests.len()..guests.len() + 3 * BUDGET {
        let s = if i % 2 == 0 { &a } else { &b };
        guests.push(new_guest(s, i, RULE).await);
    }
    // The older ones end on both handles (within COHERENCE where the other handle evicted
    // a guest this one had cached).
    let newest = guests.len() - BUDGET;
    for g in &guests[..newest] {
        eventually(&a, *g, None, RULE).await;
        eventually(&b, *g, None, RULE).await;
    }
    assert_eq!(
        alive(&a, &guests[newest..], RULE).await,
        [true; BUDGET],
        "store contract, {RULE}: the newest {BUDGET} guests"
    );
    assert_eq!(
        alive(&b, &users, RULE).await,
        [true; 2],
        "store contract, {RULE}: a guest displaced a user"
    );
}

/// Only guests count against the guest budget: a guest that logs in or is deleted frees its
/// place, so the next guest ends nobody.
pub async fn guest_budget_counts_only_guests<H: Harness>(h: &H) {
    const RULE: &str = "only guests count against the guest budget";
    let (a, b) = h.open(Some(BUDGET as u64)).await;
    let (u, t0) = (user_id("guests"), t0());
    let mut guests = Vec::new();
    for i in 0..BUDGET {
        guests.push(new_guest(&a, i, RULE).await);
    }
    let s = key();
    let l = ok(
        b.login(Some((guests[2], 1)), s, member(&u, t0, 0, "u"), TTL, None)
            .await,
        RULE,
    );
    assert_eq!(l, LoginOutcome::Applied { evicted: vec![] });
    assert!(ok(b.delete(guests[1]).await, RULE));
    // Two free places: neither new guest ends the first.
    let more = [
        new_guest(&a, BUDGET, RULE).await,
        new_guest(&b, BUDGET + 1, RULE).await,
    ];
    assert!(
        load(&a, guests[0], RULE).await.is_some(),
        "store contract, {RULE}: a guest was ended while the budget had room"
    );
    assert_eq!(alive(&b, &more, RULE).await, [true; 2]);
    // Full again: the next one ends the oldest.
    let last = new_guest(&b, BUDGET + 2, RULE).await;
    eventually(&a, guests[0], None, RULE).await;
    assert_eq!(
        alive(&a, &[more[0], more[1], last, s], RULE).await,
        [true; 4]
    );
}

/// A store that holds at most 4 sessions and holds 4 users refuses a new guest with
/// [`StoreError::full`](crate::store::StoreError::full) (the layer answers 503 with
/// `Retry-After`), and changes nothing: a guest never displaces a user.
///
/// Returns false, checking nothing, when the harness has no such store
/// ([`Harness::open_with_capacity`] answers `None`).
pub async fn guest_is_refused_when_only_users_are_left<H: Harness>(h: &H) -> bool {
    const RULE: &str = "a new guest is refused as full when only users are left";
    const CAPACITY: usize = 4;
    let Some((a, b)) = h.open_with_capacity(CAPACITY as u64).await else {
        return false;
    };
    let (u, t0) = (user_id("full"), t0());
    let users: Vec<_> = (0..CAPACITY).map(|_| key()).collect();
    for (i, k) in users.iter().enumerate() {
        let s = if i % 2 == 0 { &a } else { &b };
        let w = ok(s.create(*k, member(&u, t0, i as u64, "u"), TTL).await, RULE);
        assert_eq!(w, APPLIED, "store contract, {RULE}: user {i} of {CAPACITY}");
    }
    for (name, s) in [("a", &a), ("b", &b)] {
        let g = key();
        match s.create(g, guest(1, "guest"), TTL).await {
            Err(e) => assert!(
                e.is_full(),
                "store contract, {RULE}: on {name}, an error that is not `full`: {e}"
            ),
            Ok(w) => panic!(
                "store contract, {RULE}: on {name}, create answered {w:?} in a store full of users"
            ),
        }
        assert_eq!(
            load(&a, g, RULE).await,
            None,
            "store contract, {RULE}: the refused guest exists"
        );
    }
    assert_eq!(
        alive(&b, &users, RULE).await,
        [true; CAPACITY],
        "store contract, {RULE}: a user was displaced"
    );
    true
}
