//! The store contract (`tower_session_guard::store::contract`) on this crate's stores:
//! `MemoryStore` always, `RedisStore` on one Redis when `REDIS_URL` is set and
//! `PostgresStore` on one PostgreSQL when `POSTGRES_URL` is set (each listed as ignored
//! otherwise), and deliberately broken stores, to show that the suite catches them.

mod postgres_support;
mod redis_support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use postgres_support::{postgres_url, PostgresHarness};
use redis_support::{redis_url, RedisHarness};
use tower_session_guard::store::contract::{self, Harness};
use tower_session_guard::store::{
    LoginOutcome, SessionKey, SessionLimit, SessionStore, StoreError, WriteOutcome,
};
use tower_session_guard::{MemoryStore, SessionRecord};

/// Polls `fut` to completion on this thread: no runtime, to show that the suite needs none.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// `MemoryStore`: one store, twice.
struct MemoryHarness;

impl Harness for MemoryHarness {
    type Store = MemoryStore;

    async fn open(&self, guest_budget: Option<u64>) -> (MemoryStore, MemoryStore) {
        let mut builder = MemoryStore::builder();
        if let Some(n) = guest_budget {
            builder = builder.guest_capacity(n);
        }
        let store = builder.build();
        (store.clone(), store)
    }

    async fn open_with_capacity(&self, capacity: u64) -> Option<(MemoryStore, MemoryStore)> {
        let store = MemoryStore::with_capacity(capacity);
        Some((store.clone(), store))
    }
}

// Both stores may still answer a load from a cache for a moment after a record's ttl (the
// memory store's hot tier until its shard is swept, the Redis near-cache for its own ttl).
// The trait allows that late drop, because the layer checks expiry from the record on every
// load, so the expiry rule checks lists, limits and deletes, and that such a load is the
// record as written.

#[test]
fn memory_store_keeps_the_store_contract() {
    let not_checked = block_on(contract::run_all(&MemoryHarness));
    assert!(not_checked.is_empty(), "not checked: {not_checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn redis_store_keeps_the_store_contract_on_one_redis() {
    let not_checked = contract::run_all(&RedisHarness::new(&redis_url())).await;
    // Redis's `maxmemory` is the store's only bound on sessions in all; tests/redis.rs fills
    // a private server to it (a_full_redis_refuses_new_guests_and_still_ends_sessions).
    assert_eq!(not_checked, ["guest_is_refused_when_only_users_are_left"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_postgres),
    ignore = "set POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test to run the PostgreSQL tests"
)]
async fn postgres_store_keeps_the_store_contract() {
    let not_checked = contract::run_all(&PostgresHarness::new(&postgres_url())).await;
    // No total bound on sessions (the disk is the bound), as for Redis's maxmemory.
    assert_eq!(not_checked, ["guest_is_refused_when_only_users_are_left"]);
}

// ----- the suite catches broken stores -----

/// How [`Broken`] breaks the memory store it wraps.
#[derive(Clone, Copy)]
enum Flaw {
    /// `update` writes whatever version is stored: last writer wins.
    IgnoresVersion,
    /// `delete` of a key that loads as absent does nothing, so it never follows a forward.
    DeletesNoForward,
    /// `user_sessions` lists newest first.
    NewestFirst,
    /// `login` ignores the per-user limit.
    NoLimit,
    /// Writes keep records for an hour whatever their ttl.
    NeverExpires,
}

struct Broken(MemoryStore, Flaw);

struct BrokenHarness(Flaw);

impl Harness for BrokenHarness {
    type Store = Broken;

    async fn open(&self, guest_budget: Option<u64>) -> (Broken, Broken) {
        let (a, b) = MemoryHarness.open(guest_budget).await;
        (Broken(a, self.0), Broken(b, self.0))
    }
}

impl Broken {
    fn ttl(&self, ttl: Duration) -> Duration {
        match self.1 {
            Flaw::NeverExpires => Duration::from_secs(3600),
            _ => ttl,
        }
    }
}

impl SessionStore for Broken {
    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        self.0.load(key).await
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.0.create(key, record, self.ttl(ttl)).await
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        let expected = match (self.1, self.0.load(key).await?) {
            (Flaw::IgnoresVersion, Some(stored)) => stored.version,
            _ => expected,
        };
        self.0.update(key, expected, record, self.ttl(ttl)).await
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.0
            .rotate(old, expected, new, record, self.ttl(ttl))
            .await
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, StoreError> {
        if matches!(self.1, Flaw::DeletesNoForward) && self.0.load(key).await?.is_none() {
            return Ok(false);
        }
        self.0.delete(key).await
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        let limit = limit.filter(|_| !matches!(self.1, Flaw::NoLimit));
        self.0.login(old, new, record, self.ttl(ttl), limit).await
    }

    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError> {
        let mut list = self.0.user_sessions(user_id, usize::MAX).await?;
        if matches!(self.1, Flaw::NewestFirst) {
            list.reverse();
        }
        list.truncate(limit);
        Ok(list)
    }
}

#[test]
#[should_panic(expected = "store contract, update is compare-and-set: a wrong expected version")]
fn the_suite_catches_an_update_that_ignores_the_version() {
    block_on(contract::update_is_compare_and_set(&BrokenHarness(
        Flaw::IgnoresVersion,
    )));
}

#[test]
#[should_panic(
    expected = "store contract, delete follows a rotated-away key to its successor: deleting k0 ended no live session"
)]
fn the_suite_catches_a_delete_that_does_not_follow_a_rotation() {
    block_on(contract::delete_follows_a_rotation_to_its_successor(
        &BrokenHarness(Flaw::DeletesNoForward),
    ));
}

#[test]
#[should_panic(
    expected = "store contract, user_sessions lists oldest first, at most limit: oldest first, with their records"
)]
fn the_suite_catches_a_list_newest_first() {
    block_on(contract::user_sessions_lists_oldest_first_within_the_limit(
        &BrokenHarness(Flaw::NewestFirst),
    ));
}

#[test]
#[should_panic(
    expected = "store contract, a login beyond the limit with RejectNew is LimitReached"
)]
fn the_suite_catches_a_login_that_ignores_the_limit() {
    block_on(contract::login_limit_rejects_new_sessions(&BrokenHarness(
        Flaw::NoLimit,
    )));
}

#[test]
// Not the loads (the memory store it wraps breaks that part itself): the list.
#[should_panic(expected = "store contract, a record is gone after its ttl: user_sessions lists")]
fn the_suite_catches_a_store_that_keeps_records_past_their_ttl() {
    block_on(contract::records_expire_after_their_ttl(&BrokenHarness(
        Flaw::NeverExpires,
    )));
}

/// The whole suite stops at the first broken rule, and names it.
#[test]
#[should_panic(expected = "store contract, update is compare-and-set")]
fn run_all_stops_at_a_broken_rule() {
    let _ = block_on(contract::run_all(&BrokenHarness(Flaw::IgnoresVersion)));
}
