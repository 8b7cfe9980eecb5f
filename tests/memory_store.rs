//! `MemoryStore` under the abuse a security review reproduced, through the public
//! `SessionStore` API only: guest floods against logged-in users, what forwarding entries
//! cost, and per-user operations on a user with very many sessions. The rules every store
//! keeps (compare-and-set, lineage, limits, guest budgets, expiry) are the store contract's,
//! which `tests/store_contract.rs` runs on this store.
//!
//! Every loop is bounded; nothing sleeps and nothing asserts a duration.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower_session_guard::store::{
    LoginOutcome, SessionKey, SessionLimit, SessionStore, WriteOutcome, MAX_FORWARD_HOPS,
};
use tower_session_guard::{Identity, LimitPolicy, MemoryStore, SessionRecord, SessionToken};

const TTL: Duration = Duration::from_secs(3600);

fn key() -> SessionKey {
    SessionToken::generate().key()
}

fn guest() -> Arc<SessionRecord> {
    Arc::new(SessionRecord::new(SystemTime::now()))
}

fn user(id: &str) -> Arc<SessionRecord> {
    let mut r = SessionRecord::new(SystemTime::now());
    r.identity = Some(Identity::new(id));
    Arc::new(r)
}

async fn alive(s: &MemoryStore, k: SessionKey) -> bool {
    s.load(k).await.expect("memory store").is_some()
}

/// `n` logged-in sessions of distinct users.
async fn users(s: &MemoryStore, n: usize) -> Vec<SessionKey> {
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let k = key();
        let written = s.create(k, user(&format!("user{i}")), TTL).await;
        assert_eq!(
            written.expect("a user is never refused"),
            WriteOutcome::Applied
        );
        keys.push(k);
    }
    keys
}

async fn guests(s: &MemoryStore, n: usize) -> Vec<SessionKey> {
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let k = key();
        let written = s.create(k, guest(), TTL).await;
        assert_eq!(written.expect("room for guests"), WriteOutcome::Applied);
        keys.push(k);
    }
    keys
}

async fn count_alive(s: &MemoryStore, keys: &[SessionKey]) -> usize {
    let mut n = 0;
    for k in keys {
        n += usize::from(alive(s, *k).await);
    }
    n
}

// ----- 1. guests never displace logged-in users -----

/// The review's attack: a store full of logged-in users receives ten times its capacity in
/// anonymous session-creating requests. The old store let them evict 64 % of the users; now
/// every guest is refused with a "full" error and every user stays.
#[tokio::test]
async fn a_guest_flood_never_logs_out_a_user() {
    let s = MemoryStore::with_capacity(1000);
    let held = users(&s, 1000).await;
    for _ in 0..10_000 {
        let err = s
            .create(key(), guest(), TTL)
            .await
            .expect_err("no room for a guest");
        assert!(err.is_full(), "{err}");
        assert!(s.len() <= 1000);
    }
    assert_eq!(
        count_alive(&s, &held).await,
        1000,
        "every user is still there"
    );
    assert_eq!(s.len(), 1000);
}

/// A full guest budget makes room by removing the oldest guest: not a random one, and never
/// a user.
#[tokio::test]
async fn a_full_guest_budget_replaces_the_oldest_guest_first() {
    // Capacity 1000, default guest budget 500.
    let s = MemoryStore::with_capacity(1000);
    let held = users(&s, 100).await;
    let first = guests(&s, 500).await;
    let later = guests(&s, 10).await;
    for (i, k) in first.iter().enumerate() {
        assert_eq!(alive(&s, *k).await, i >= 10, "guest {i} of the first 500");
    }
    assert_eq!(count_alive(&s, &later).await, 10);
    assert_eq!(count_alive(&s, &held).await, 100);
    assert_eq!(s.len(), 600);

    // The same with an explicit budget.
    let s = MemoryStore::builder()
        .capacity(100)
        .hot_capacity(10)
        .guest_capacity(10)
        .build();
    let held = users(&s, 50).await;
    let all = guests(&s, 25).await;
    for (i, k) in all.iter().enumerate() {
        assert_eq!(alive(&s, *k).await, i >= 15, "guest {i}");
    }
    assert_eq!(count_alive(&s, &held).await, 50);
}

/// When the whole store is full, a login takes the oldest guest's place.
#[tokio::test]
async fn logins_into_a_full_store_displace_the_oldest_guests() {
    let s = MemoryStore::with_capacity(1000);
    let visitors = guests(&s, 500).await;
    let mut held = users(&s, 500).await;
    held.extend(users(&s, 300).await);
    assert_eq!(s.len(), 1000);
    assert_eq!(count_alive(&s, &held).await, 800, "no user was evicted");
    for (i, k) in visitors.iter().enumerate() {
        assert_eq!(alive(&s, *k).await, i >= 300, "guest {i}");
    }
}

/// Mixed load: logins, guests turning into users, logouts and a stream of guests, with
/// the store always full. Every user survives and the guests held are always the newest.
#[tokio::test]
async fn under_mixed_load_every_user_survives() {
    let s = MemoryStore::with_capacity(1000);
    let mut held = Vec::new();
    let mut visitors: Vec<SessionKey> = Vec::new();
    for round in 0..20 {
        held.extend(users(&s, 40).await);
        visitors.extend(guests(&s, 300).await);
        // A guest logs in (its key rotates to a logged-in session)...
        let from = *visitors.last().expect("a guest");
        let to = key();
        let login = s
            .login(
                Some((from, 1)),
                to,
                user(&format!("converted{round}")),
                TTL,
                None,
            )
            .await
            .expect("memory store");
        assert_eq!(login, LoginOutcome::Applied { evicted: vec![] });
        held.push(to);
        visitors.pop();
        // ...and a user logs out.
        let gone = held.remove(0);
        assert!(s.delete(gone).await.expect("memory store"));
        assert!(s.len() <= 1000, "round {round}: {} sessions", s.len());
    }
    assert_eq!(
        count_alive(&s, &held).await,
        held.len(),
        "every user survives"
    );
    let kept = count_alive(&s, &visitors).await;
    assert_eq!(kept as u64, s.len() - held.len() as u64);
    assert_eq!(
        count_alive(&s, &visitors[visitors.len() - kept..]).await,
        kept,
        "the guests held are the newest"
    );
}

/// A privilege change (rotation) in a full store takes its own old slot: nobody is evicted.
#[tokio::test]
async fn a_rotation_in_a_full_store_evicts_nobody() {
    let s = MemoryStore::with_capacity(1000);
    let mut held = users(&s, 1000).await;
    for (i, k) in held.iter_mut().enumerate().take(100) {
        let new = key();
        let w = s
            .rotate(*k, 1, new, user(&format!("user{i}")), TTL)
            .await
            .expect("memory store");
        assert_eq!(w, WriteOutcome::Applied);
        *k = new;
    }
    assert_eq!(s.len(), 1000);
    assert_eq!(count_alive(&s, &held).await, 1000);
}

/// With no guest to displace, a login still gets in (a sampled user makes room) and the
/// store stays within its bound.
#[tokio::test]
async fn a_login_into_a_store_full_of_users_gets_in() {
    let s = MemoryStore::with_capacity(200);
    let _ = users(&s, 200).await;
    let newcomers = users(&s, 50).await;
    assert_eq!(s.len(), 200);
    assert_eq!(count_alive(&s, &newcomers).await, 50);
}

#[tokio::test]
async fn a_guest_budget_of_zero_refuses_every_guest() {
    let s = MemoryStore::builder()
        .capacity(10)
        .guest_capacity(0)
        .build();
    let err = s.create(key(), guest(), TTL).await.expect_err("no guests");
    assert!(err.is_full());
    assert_eq!(users(&s, 10).await.len(), 10);
    assert!(format!("{s:?}").contains("guest_capacity: 0"));
    let defaults = format!("{:?}", MemoryStore::builder().build());
    assert!(defaults.contains("capacity: 200000"), "{defaults}");
    assert!(defaults.contains("guest_capacity: 100000"), "{defaults}");
}

// ----- 2. forwarding entries -----

/// Forwards take no slot: a full store of rotated users still refuses guests for want of
/// guests to displace, not because forwards fill it, and lists show only live sessions.
#[tokio::test]
async fn forwards_are_not_sessions() {
    let s = MemoryStore::with_capacity(10);
    let mut held = users(&s, 10).await;
    for _ in 0..5 {
        for (i, k) in held.iter_mut().enumerate() {
            let new = key();
            let w = s.rotate(*k, 1, new, user(&format!("user{i}")), TTL).await;
            assert_eq!(w.unwrap(), WriteOutcome::Applied);
            *k = new;
        }
    }
    assert_eq!(s.len(), 10);
    assert_eq!(count_alive(&s, &held).await, 10);
    for (i, k) in held.iter().enumerate() {
        let listed = s.user_sessions(&format!("user{i}"), 20).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, *k);
    }

    // A lineage of MAX_FORWARD_HOPS keys (a login, then rotations) is one session; the
    // synchronous read answers for a forward (as absent); deleting the first key leaves
    // nothing, forwards included.
    let s = MemoryStore::new();
    let first = key();
    assert_eq!(
        s.create(first, guest(), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    let mut last = key();
    let login = s
        .login(Some((first, 1)), last, user("bob"), TTL, None)
        .await
        .unwrap();
    assert_eq!(login, LoginOutcome::Applied { evicted: vec![] });
    for _ in 1..MAX_FORWARD_HOPS {
        let next = key();
        let w = s.rotate(last, 1, next, user("bob"), TTL).await.unwrap();
        assert_eq!(w, WriteOutcome::Applied);
        last = next;
    }
    assert_eq!(s.len(), 1, "a forward is not a session");
    let forward = s.load_now(first).expect("the memory store answers at once");
    assert!(forward.unwrap().is_none());
    assert!(s.delete(first).await.unwrap());
    assert!(s.is_empty(), "the forwards went with it");
    assert!(!s.delete(first).await.unwrap());
}

// ----- 3. per-user operations are bounded -----

/// The review's case: 123 000 sessions of one user made `user_sessions` take 5.7 s
/// (quadratic). With 100 000 it returns the bounded list, oldest first; a login with the
/// default cap then ends all but the newest 19.
#[tokio::test]
async fn a_user_with_100k_sessions_lists_and_logs_in_within_bounds() {
    const N: usize = 100_000;
    let s = MemoryStore::with_capacity(2 * N as u64);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    let mut keys = Vec::with_capacity(N);
    for i in 0..N {
        let mut r = SessionRecord::new(t0 + Duration::from_millis(i as u64));
        r.identity = Some(Identity::new("alice"));
        let k = key();
        assert_eq!(
            s.create(k, Arc::new(r), TTL).await.unwrap(),
            WriteOutcome::Applied
        );
        keys.push(k);
    }
    let listed = s.user_sessions("alice", 20).await.unwrap();
    let listed: Vec<_> = listed.into_iter().map(|(k, _)| k).collect();
    assert_eq!(listed, keys[..20], "the 20 oldest, oldest first");

    let new = key();
    let limit = SessionLimit {
        max: 20,
        policy: LimitPolicy::EvictOldest,
    };
    let LoginOutcome::Applied { evicted } = s
        .login(None, new, user("alice"), TTL, Some(limit))
        .await
        .unwrap()
    else {
        panic!("the login applies");
    };
    assert_eq!(evicted.len(), N - 19);
    assert_eq!(s.len(), 20);
    let listed: Vec<_> = s
        .user_sessions("alice", 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut expected = keys[N - 19..].to_vec();
    expected.push(new);
    assert_eq!(listed, expected);

    let reject = SessionLimit {
        max: 20,
        policy: LimitPolicy::RejectNew,
    };
    let refused = s
        .login(None, key(), user("alice"), TTL, Some(reject))
        .await
        .unwrap();
    assert_eq!(refused, LoginOutcome::LimitReached);
}

/// Sessions that expired leave the per-user list (and its index) without a sweep.
#[tokio::test]
async fn a_users_expired_sessions_are_not_listed() {
    let s = MemoryStore::new();
    for _ in 0..50 {
        let _ = s
            .create(key(), user("carol"), Duration::ZERO)
            .await
            .unwrap();
    }
    let live = users_of(&s, "carol", 3).await;
    let listed = s.user_sessions("carol", 20).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|(k, _)| live.contains(k)));
    assert_eq!(s.user_sessions("carol", 2).await.unwrap().len(), 2);
}

async fn users_of(s: &MemoryStore, id: &str, n: usize) -> Vec<SessionKey> {
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let k = key();
        assert_eq!(
            s.create(k, user(id), TTL).await.unwrap(),
            WriteOutcome::Applied
        );
        keys.push(k);
    }
    keys
}
