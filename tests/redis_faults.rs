//! Redis faults answered clearly (issue 13, section 4): after a `kill -9` every request fails
//! at once (no request waits for the command timeout); a write whose command timed out is
//! reported as "outcome unknown", not as failed; and concurrent writers on one session that
//! keep losing the compare-and-set race get 429 with `Retry-After`, never 503.
//!
//! Needs `REDIS_URL` and `redis-server` (like `tests/redis.rs`): without `REDIS_URL` these
//! tests are listed as ignored, with the reason.

mod common;
mod redis_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::*;
use redis_support::*;
use tower_session_guard::{RedisStore, SessionEvent};

/// Polls `check` every 10 ms for at most `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store on `url` without a near-cache, so that every session request reaches Redis.
async fn uncached(url: &str, timeout: Duration) -> RedisStore {
    RedisStore::builder(url)
        .prefix(unique_prefix())
        .near_cache_ttl(Duration::ZERO)
        .command_timeout(timeout)
        .build()
        .await
        .expect("RedisStore connects")
}

/// Well under the 300 ms command timeout, and generous next to the fail-fast path
/// (microseconds): a request over it waited for Redis instead of failing at once.
const FAST: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn after_a_kill_every_request_fails_at_once_and_recovers() {
    need_binary("redis-server");
    let mut server = Server::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = uncached(&server.url(), Duration::from_millis(300)).await;
    // The store's watcher ticks every second from here on (its first tick is at once).
    let built = Instant::now();
    let app = Harness::new().app(store.clone());
    let token = login_token(&app, None).await;
    assert_eq!(
        status(&app, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    for round in 0..2u32 {
        // The kill lands 25 ms before a tick of the watcher, inside fred's first reconnection
        // delay (50 ms), during which fred still calls the dead connection "connected": the
        // old watcher's tick believed it, marked the store up, and the next request waited
        // the whole command timeout (300 ms) on the dead socket.
        let tick = built + Duration::from_secs(2 + 2 * u64::from(round));
        tokio::time::sleep_until((tick - Duration::from_millis(25)).into()).await;
        server.kill();
        // Requests for 1.5 s, past that tick and the next.
        let killed = Instant::now();
        let mut slow = Vec::new();
        let mut n = 0;
        while killed.elapsed() < Duration::from_millis(1500) && n < 500 {
            let start = Instant::now();
            let got = status(&app, Method::GET, "/me", Some(&token)).await;
            assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE, "round {round}");
            if start.elapsed() >= FAST {
                slow.push((killed.elapsed(), start.elapsed()));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            slow.is_empty(),
            "round {round}: of {n} requests after the kill, these waited (at, took): {slow:?}"
        );
        server.restart();
        let back = within(Duration::from_secs(10), || async {
            status(&app, Method::GET, "/me", Some(&token)).await == StatusCode::OK
        })
        .await;
        println!(
            "round {round}: {n} requests failed fast; served again {back:?} after the restart"
        );
        assert!(back.is_some(), "round {round}: the layer recovers");
    }
}

/// The run: many clients on one instance (with its near-cache) while Redis is
/// killed. Before the fix, a whole round of them (about one per client) waited 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn under_load_a_kill_fails_every_request_at_once() {
    need_binary("redis-server");
    const CLIENTS: usize = 30;
    let mut server = Server::start(&[]);
    let store = RedisStore::builder(server.url())
        .prefix(unique_prefix())
        .build()
        .await
        .expect("RedisStore connects");
    let app = Harness::new().app(store.clone());
    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        // one user each: the per-user session limit would evict a shared user's sessions
        let res = call(&app, Method::POST, &format!("/login/user{i}"), None).await;
        assert_eq!(res.status(), StatusCode::OK);
        tokens.push(token_of(&res).expect("login issues a token"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut slow_503 = Vec::new();
                let mut count = 0u32;
                while !stop.load(Ordering::SeqCst) && count < 100_000 {
                    let start = Instant::now();
                    let (method, path) = match count % 3 {
                        0 => (Method::POST, "/counter"),
                        _ => (Method::GET, "/me"),
                    };
                    let got = status(&app, method, path, Some(&t)).await;
                    assert!(
                        got == StatusCode::OK || got == StatusCode::SERVICE_UNAVAILABLE,
                        "{got}"
                    );
                    if got == StatusCode::SERVICE_UNAVAILABLE && start.elapsed() >= FAST {
                        slow_503.push(start.elapsed());
                    }
                    count += 1;
                    // A client paces itself; the test measures latency, not throughput.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (count, slow_503)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut total, mut slow) = (0, Vec::new());
    for c in clients {
        let (count, s) = c.await.expect("client task");
        total += count;
        slow.extend(s);
    }
    println!("{CLIENTS} clients, {total} requests, 503s that waited: {slow:?}");
    assert!(slow.is_empty(), "503s that waited: {slow:?}");
}

async fn status(app: &axum::Router, method: Method, uri: &str, token: Option<&str>) -> StatusCode {
    call(app, method, uri, token).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn a_logout_that_timed_out_is_reported_as_outcome_unknown_and_was_applied() {
    need_binary("redis-server");
    let server = Server::start(&[]);
    let store = RedisStore::builder(server.url())
        .prefix(unique_prefix())
        .command_timeout(Duration::from_millis(100))
        .build()
        .await
        .expect("RedisStore connects");
    let h = Harness::new();
    let app = h.app(store.clone());
    let token = login_token(&app, None).await;
    assert_eq!(
        status(&app, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    h.events.clear();

    // Redis holds every write (scripts included) for 500 ms; reads still run.
    let mut raw = Raw::connect(&server.url()).expect("connects");
    assert_eq!(
        raw.cmd(&["CLIENT", "PAUSE", "500", "WRITE"]).unwrap(),
        Reply::Status("OK".into())
    );
    let paused = Instant::now();
    assert_eq!(
        status(&app, Method::POST, "/logout", Some(&token)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "the logout's script timed out"
    );
    assert!(
        paused.elapsed() < Duration::from_millis(500),
        "it did not wait for the pause"
    );
    let events = h.events.all();
    let unknown: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::WriteOutcomeUnknown {
                operation, session, ..
            } => Some((*operation, *session)),
            _ => None,
        })
        .collect();
    assert_eq!(unknown, [("logout", Some(fp(&token)))], "{events:?}");
    assert!(
        !kinds(&events).contains(&"store_failed"),
        "a write that may have been applied is not reported as failed: {events:?}"
    );

    // And indeed it was applied when the pause ended: the session is gone.
    let ended = within(Duration::from_secs(3), || async {
        status(&app, Method::GET, "/me", Some(&token)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("the timed-out logout took effect {ended:?} later");
    assert!(ended.is_some(), "the logout was applied after the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn forty_writers_on_one_session_get_200_or_429_never_503_on_redis() {
    let url = redis_url();
    let prefix = unique_prefix();
    let _cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let store = RedisStore::builder(url.as_str())
        .prefix(prefix.as_str())
        .build()
        .await
        .expect("RedisStore connects");
    let h = Harness::new();
    let app = h.app(store);
    let token = login_token(&app, None).await;
    let (mut ok, mut contended) = (0, 0);
    // Bounded: the issue measured 24 % of such requests losing the race; stop at the first
    // round with contention.
    for _ in 0..20 {
        let (o, c) = writers(&app, &token, 40, 3).await;
        ok += o;
        contended += c;
        if contended > 0 {
            break;
        }
    }
    println!("redis: {ok} applied, {contended} answered 429");
    assert!(contended > 0, "40 concurrent writers never lost the race");
    let count = call(&app, Method::GET, "/counter", Some(&token)).await;
    assert_eq!(count.status(), StatusCode::OK);
    assert_eq!(
        body_text(count).await,
        ok.to_string(),
        "no update lost or doubled"
    );
    let kinds = kinds(&h.events.all());
    assert!(kinds.contains(&"contention"), "{kinds:?}");
    assert!(!kinds.contains(&"store_failed"), "{kinds:?}");
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
                            assert!(res.headers().contains_key("retry-after"));
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

fn kinds(events: &[SessionEvent]) -> Vec<&'static str> {
    events.iter().map(SessionEvent::kind).collect()
}
