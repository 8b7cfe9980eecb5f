//! `MemoryStore` under the abuse a security review reproduced, through the public
//! `SessionStore` API only: guest floods against logged-in users, the lineage of a rotated
//! session, and per-user operations on a user with very many sessions.
//!
//! Every loop is bounded; nothing sleeps and nothing asserts a duration.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower_session_guard::{
    Identity, LimitPolicy, LoginWrite, MemoryStore, SessionKey, SessionLimit, SessionRecord,
    SessionStore, SessionToken, Write,
};

const TTL: Duration = Duration::from_secs(3600);

fn key() -> SessionKey {
    SessionToken::generate().key()
}

fn user(id: &str) -> Arc<SessionRecord> {
    let mut r = SessionRecord::new(SystemTime::now());
    r.identity = Some(Identity::new(id));
    Arc::new(r)
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
        assert_eq!(s.create(k, Arc::new(r), TTL).await.unwrap(), Write::Applied);
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
    let LoginWrite::Applied { evicted } = s
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
    assert_eq!(refused, LoginWrite::LimitReached);
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
    let mut keys = Vec::new();
    for _ in 0..n {
        let k = key();
        assert_eq!(s.create(k, user(id), TTL).await.unwrap(), Write::Applied);
        keys.push(k);
    }
    keys
}
