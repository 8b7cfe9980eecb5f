//! Contention is not an outage (issue 13, section 4): a write that keeps losing the
//! compare-and-set race answers 429 with `Retry-After` and emits a `contention` event, never
//! 503 (which says the store is down) or 500; and under many concurrent writers on one
//! session no acknowledged update is lost. The same run against Redis is in
//! `tests/redis_faults.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use common::*;
use tower_session_guard::store::{
    LoginOutcome, SessionKey, SessionLimit, SessionStore, StoreError, WriteOutcome,
};
use tower_session_guard::{MemoryStore, SessionRecord};

/// A store whose `update` lets other tasks run first (so concurrent writers really
/// interleave between their read and their compare-and-set), and, while `lose` is on, loses
/// every compare-and-set as if another writer always got there first.
#[derive(Clone)]
struct RacingStore {
    inner: MemoryStore,
    lose: Arc<AtomicBool>,
}

impl SessionStore for RacingStore {
    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        self.inner.load(key).await
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.create(key, record, ttl).await
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        if self.lose.load(Ordering::SeqCst) {
            return Ok(WriteOutcome::Conflict);
        }
        self.inner.update(key, expected, record, ttl).await
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.rotate(old, expected, new, record, ttl).await
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        self.inner.login(old, new, record, ttl, limit).await
    }

    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError> {
        self.inner.user_sessions(user_id, limit).await
    }
}

fn racing() -> (RacingStore, Arc<AtomicBool>) {
    let lose = Arc::new(AtomicBool::new(false));
    let store = RacingStore {
        inner: MemoryStore::new(),
        lose: lose.clone(),
    };
    (store, lose)
}

#[tokio::test]
async fn a_write_that_keeps_losing_the_race_answers_429_with_retry_after() {
    let (store, lose) = racing();
    let h = Harness::new();
    let app = h.app(store);
    let token = login_token(&app, None).await;
    lose.store(true, Ordering::SeqCst);
    h.events.clear();

    let res = call(&app, Method::POST, "/counter", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        res.headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let kinds = h.events.kinds();
    assert!(kinds.contains(&"contention"), "{kinds:?}");
    assert!(!kinds.contains(&"store_failed"), "{kinds:?}");

    // The session is fine: once the burst is over, the same request succeeds.
    lose.store(false, Ordering::SeqCst);
    assert_eq!(
        call_text(&app, Method::POST, "/counter", Some(&token)).await,
        (StatusCode::OK, "1".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_writers_get_200_or_429_never_5xx_and_lose_no_update() {
    let (store, _) = racing();
    let h = Harness::new();
    let app = h.app(store);
    let token = login_token(&app, None).await;
    let (ok, contended) = writers(&app, &token, 40, 5).await;
    let count = call_text(&app, Method::GET, "/counter", Some(&token)).await;
    println!("memory store: {ok} applied, {contended} answered 429");
    assert_eq!(ok + contended, 200);
    // Every 200 is one increment, and nothing else incremented: no update lost or doubled.
    assert_eq!(count, (StatusCode::OK, ok.to_string()));
}

/// `writers` tasks, each sending `each` increments on one session at once; asserts every
/// answer is 200 or 429 with `Retry-After`, and returns how many of each.
async fn writers(app: &axum::Router, token: &str, writers: usize, each: usize) -> (usize, usize) {
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (app, token) = (app.clone(), token.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut contended) = (0, 0);
                for _ in 0..each {
                    let res = call(&app, Method::POST, "/counter", Some(&token)).await;
                    match res.status() {
                        StatusCode::OK => ok += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert!(res.headers().contains_key(header::RETRY_AFTER));
                            contended += 1;
                        }
                        other => panic!("a writer got {other}, not 200 or 429"),
                    }
                }
                (ok, contended)
            })
        })
        .collect();
    let (mut ok, mut contended) = (0, 0);
    for t in tasks {
        let (o, c) = t.await.expect("writer task");
        ok += o;
        contended += c;
    }
    (ok, contended)
}
