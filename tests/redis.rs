//! The Redis store against a real Redis: what is Redis's own (key layout, ttls, scripts'
//! bounded work, forwarding entries, the guest set, a full Redis), two instances (two layers,
//! each with its own `RedisStore` and near-cache) sharing one Redis, round trips counted with
//! `MONITOR` on a private server, an outage and recovery of a private `redis-server`, and (with
//! `REDIS_CLUSTER_TEST=1`) the store contract and two layers on a three-node Redis Cluster on
//! loopback ports. The store contract on one Redis is in `tests/store_contract.rs`.
//!
//! Needs `REDIS_URL` (e.g. `redis://127.0.0.1:6379`): without it `cargo test` lists these
//! tests as ignored, with the reason (see `build.rs`); when they run, a missing or unreachable
//! Redis, or a missing `redis-server` binary, fails them. Each test works under its own random
//! key prefix, so tests run in parallel on one Redis, and deletes its keys when done. Tests
//! that need a server of their own (round trips, outage, cluster) start `redis-server` on
//! spare loopback ports and kill it when they end.

mod common;
mod redis_support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{Method, StatusCode};
use axum::Router;
use common::*;
use redis_support::*;
use tower_session_guard::store::contract::{self, Harness as _};
use tower_session_guard::store::{
    LoginOutcome, SessionKey, SessionLimit, SessionStore, StoreError, WriteOutcome, FORWARD_TTL,
    MAX_FORWARD_HOPS,
};
use tower_session_guard::{
    Identity, LimitPolicy, RedisStore, SessionGuardLayer, SessionRecord, SessionToken,
};

// ----- helpers -----

fn record(user: Option<&str>, version: u64) -> Arc<SessionRecord> {
    let mut r = SessionRecord::new(SystemTime::now());
    r.version = version;
    r.identity = user.map(Identity::new);
    if user.is_some() {
        r.authenticated_at = Some(r.created_at);
    }
    Arc::new(r)
}

fn aged(user: &str, created: SystemTime) -> Arc<SessionRecord> {
    let mut r = SessionRecord::new(created);
    r.identity = Some(Identity::new(user));
    Arc::new(r)
}

fn new_key() -> SessionKey {
    SessionToken::generate().key()
}

const TTL: Duration = Duration::from_secs(600);

async fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .build()
        .await
        .expect("RedisStore connects")
}

/// Polls `check` every 10 ms until it holds, for at most `limit`; returns how long it took.
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

async fn status(app: &Router, method: Method, uri: &str, token: Option<&str>) -> StatusCode {
    call(app, method, uri, token).await.status()
}

async fn login_user(app: &Router, user: &str) -> String {
    let res = call(app, Method::POST, &format!("/login/{user}"), None).await;
    assert_eq!(res.status(), StatusCode::OK, "login of {user}");
    token_of(&res).expect("login issues a token")
}

/// Waits (at most 1 s) until `store` sees `key` at `version` (`None`: gone). Another
/// instance's write reaches this one's near-cache through pub/sub, asynchronously.
async fn eventually(store: &RedisStore, key: SessionKey, version: Option<u64>) {
    let seen = within(Duration::from_secs(1), || async {
        store.load(key).await.unwrap().map(|r| r.version) == version
    })
    .await;
    assert!(seen.is_some(), "{key:?} never reached version {version:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn records_are_versioned_blobs_with_ttls_and_fail_closed() {
    let url = redis_url();
    let prefix = unique_prefix();
    let _cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let a = store(&url, &prefix).await;
    let mut raw = Raw::connect(&url).unwrap();
    let user = format!("user-{}", random_id());
    let k = new_key();
    let name = format!("{prefix}s:{}", k.to_hex());
    let index = format!("{prefix}u:{user}");
    assert!(matches!(
        a.login(
            None,
            k,
            record(Some(&user), 1),
            Duration::from_secs(60),
            None
        )
        .await
        .unwrap(),
        LoginOutcome::Applied { .. }
    ));

    // the hash: version, blob with format byte 1, user, creation
    assert_eq!(raw.cmd(&["HGET", &name, "v"]).unwrap().text(), "1");
    assert_eq!(raw.cmd(&["HGET", &name, "u"]).unwrap().text(), user);
    let blob = raw.cmd(&["HGET", &name, "d"]).unwrap().bytes().unwrap();
    assert_eq!(blob[0], 1, "format byte");
    let pttl = raw.cmd(&["PTTL", &name]).unwrap().int();
    assert!((55_000..=60_000).contains(&pttl), "record PTTL {pttl}");

    // the index: the member's score is the record's expiry deadline, the index expires with it
    let score = |raw: &mut Raw| {
        raw.cmd(&["ZSCORE", &index, &name])
            .unwrap()
            .text()
            .parse::<f64>()
            .unwrap()
    };
    let now_ms = |raw: &mut Raw| match raw.cmd(&["TIME"]).unwrap() {
        Reply::Array(t) => t[0].text().parse::<f64>().unwrap() * 1000.0,
        other => panic!("{other:?}"),
    };
    let first = score(&mut raw) - now_ms(&mut raw);
    assert!(
        (55_000.0..=61_000.0).contains(&first),
        "score - now = {first}"
    );
    let index_ttl = raw.cmd(&["PTTL", &index]).unwrap().int();
    assert!(
        (55_000..=60_000).contains(&index_ttl),
        "index PTTL {index_ttl}"
    );
    // a touch with a longer TTL raises the score (the session lives longer), never lowers it
    let mut touched = SessionRecord::clone(&record(Some(&user), 2));
    touched.created_at = SystemTime::now();
    assert_eq!(
        a.update(k, 1, Arc::new(touched.clone()), Duration::from_secs(600))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let raised = score(&mut raw) - now_ms(&mut raw);
    assert!(
        raised > 590_000.0,
        "score raised to the new deadline: {raised}"
    );
    touched.version = 3;
    assert_eq!(
        a.update(k, 2, Arc::new(touched), Duration::from_secs(60))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert!(
        score(&mut raw) - now_ms(&mut raw) > 590_000.0,
        "never lowered"
    );

    // an index entry whose record vanished is pruned when the index is next read
    let gone = new_key();
    assert!(matches!(
        a.login(None, gone, record(Some(&user), 1), TTL, None)
            .await
            .unwrap(),
        LoginOutcome::Applied { .. }
    ));
    raw.cmd(&["DEL", &format!("{prefix}s:{}", gone.to_hex())])
        .unwrap();
    assert_eq!(raw.cmd(&["ZCARD", &index]).unwrap().int(), 2);
    let listed = a.user_sessions(&user, 100).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(raw.cmd(&["ZCARD", &index]).unwrap().int(), 1, "pruned");

    // deleting the last session deletes the index
    assert!(a.delete(k).await.unwrap());
    assert_eq!(raw.cmd(&["EXISTS", &index]).unwrap().int(), 0);

    // an unknown format or a corrupt blob is an error (fail closed), for every instance
    let fresh = store(&url, &prefix).await;
    for (i, bad) in [&b"\x02future"[..], b"\x01\xc1garbage", b""]
        .into_iter()
        .enumerate()
    {
        let k = new_key();
        let name = format!("{prefix}s:{}", k.to_hex());
        raw.cmd_bytes(&[b"HSET", name.as_bytes(), b"v", b"1", b"d", bad])
            .unwrap();
        let err: StoreError = fresh.load(k).await.expect_err("fails closed");
        assert!(!err.to_string().is_empty(), "case {i}");
    }
    // and a layer answers 503 for such a session
    let k = SessionToken::generate();
    let name = format!("{prefix}s:{}", k.key().to_hex());
    raw.cmd_bytes(&[b"HSET", name.as_bytes(), b"v", b"1", b"d", b"\x09"])
        .unwrap();
    let h = Harness::new();
    let app = h.app(fresh);
    assert_eq!(
        status(&app, Method::GET, "/me", Some(k.as_str())).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

// ----- two instances -----

struct Pair {
    a: SessionGuardLayer,
    b: SessionGuardLayer,
    /// The stores behind `a` and `b` (clones share connections and near-cache).
    store_a: RedisStore,
    store_b: RedisStore,
    app_a: Router,
    app_b: Router,
    harness: Harness,
    _cleanup: Cleanup,
}

async fn pair(url: &str, limit: Option<(usize, LimitPolicy)>) -> Pair {
    let prefix = unique_prefix();
    let harness = Harness::new();
    let layer = |store: &RedisStore| {
        let mut b = harness.builder(store.clone());
        if let Some((max, policy)) = limit {
            b = b.max_sessions_per_user(max, policy);
        }
        b.build().expect("valid config")
    };
    let (store_a, store_b) = (store(url, &prefix).await, store(url, &prefix).await);
    let (a, b) = (layer(&store_a), layer(&store_b));
    Pair {
        app_a: app(a.clone()),
        app_b: app(b.clone()),
        a,
        b,
        store_a,
        store_b,
        harness,
        _cleanup: Cleanup {
            url: url.to_owned(),
            prefix,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn login_on_a_is_usable_on_b_and_logout_on_b_is_refused_on_a_at_once() {
    let url = redis_url();
    let p = pair(&url, None).await;
    let token = login_token(&p.app_a, None).await;
    assert_eq!(
        status(&p.app_b, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    // writes on either instance are seen by the other
    assert_eq!(
        call_text(&p.app_b, Method::POST, "/counter", Some(&token))
            .await
            .1,
        "1"
    );
    let next = within(Duration::from_secs(1), || async {
        call_text(&p.app_a, Method::POST, "/counter", Some(&token))
            .await
            .1
            == "2"
    })
    .await;
    assert!(next.is_some(), "A increments B's write, without losing it");
    // B reads A's write as soon as the invalidation arrives
    let seen = within(Duration::from_secs(1), || async {
        call_text(&p.app_b, Method::GET, "/counter", Some(&token))
            .await
            .1
            == "2"
    })
    .await;
    assert!(seen.is_some(), "B reads A's write");

    // A serves the session from its near-cache...
    assert_eq!(
        status(&p.app_a, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    let before = p.store_a.near_cache_stats();
    assert_eq!(
        status(&p.app_a, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    assert_eq!(
        p.store_a.near_cache_stats().hits,
        before.hits + 1,
        "a near-cache hit"
    );

    // ...until B logs it out
    assert_eq!(
        status(&p.app_b, Method::POST, "/logout", Some(&token)).await,
        StatusCode::OK
    );
    let start = Instant::now();
    let mut attempts = 0;
    let delay = loop {
        attempts += 1;
        if status(&p.app_a, Method::GET, "/me", Some(&token)).await == StatusCode::UNAUTHORIZED {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "A refuses the session within 1 s of B's logout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "logout on B refused on A after {delay:?}, on request {attempts} after the logout response"
    );
    // and it stays refused, whatever the request
    assert_eq!(
        status(&p.app_a, Method::POST, "/counter", Some(&token)).await,
        StatusCode::OK
    );
    assert_eq!(
        call_text(&p.app_a, Method::GET, "/counter", Some(&token))
            .await
            .1,
        "0"
    );
}

/// Logs out on B, `TRIALS` times, sessions that A serves from its near-cache, and measures
/// how long A keeps accepting each one: the pub/sub invalidation delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn invalidation_delay_across_instances() {
    const TRIALS: usize = 20;
    let url = redis_url();
    let p = pair(&url, None).await;
    let mut delays = Vec::new();
    let mut next_request_refused = 0;
    for _ in 0..TRIALS {
        let token = login_token(&p.app_a, None).await;
        assert_eq!(
            status(&p.app_a, Method::GET, "/me", Some(&token)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&p.app_b, Method::POST, "/logout", Some(&token)).await,
            StatusCode::OK
        );
        let start = Instant::now();
        let mut first = true;
        loop {
            if status(&p.app_a, Method::GET, "/me", Some(&token)).await == StatusCode::UNAUTHORIZED
            {
                next_request_refused += usize::from(first);
                delays.push(start.elapsed());
                break;
            }
            first = false;
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "refused within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    delays.sort();
    println!(
        "invalidation delay over {TRIALS} logouts: median {:?}, max {:?}; \
         refused on the very next request {next_request_refused}/{TRIALS}",
        delays[TRIALS / 2],
        delays[TRIALS - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn revoking_a_user_on_a_is_refused_on_b() {
    let url = redis_url();
    let p = pair(&url, None).await;
    let user = format!("bob-{}", random_id());
    let mut tokens = Vec::new();
    for i in 0..4 {
        let app = if i % 2 == 0 { &p.app_a } else { &p.app_b };
        tokens.push(login_user(app, &user).await);
        p.harness.clock.advance(Duration::from_secs(1));
    }
    let other = login_user(&p.app_a, "carol").await;
    // B has every session in its near-cache
    for t in &tokens {
        assert_eq!(
            status(&p.app_b, Method::GET, "/me", Some(t)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&p.app_b, Method::GET, "/me", Some(t)).await,
            StatusCode::OK
        );
    }
    assert_eq!(p.b.user_sessions(&user).await.unwrap().len(), 4);

    assert_eq!(p.a.revoke_user(&user).await.unwrap(), 4);
    let start = Instant::now();
    for t in &tokens {
        let refused = within(Duration::from_secs(1), || async {
            status(&p.app_b, Method::GET, "/me", Some(t)).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused.is_some(), "B refuses a revoked session within 1 s");
    }
    println!(
        "all 4 revoked sessions refused on B within {:?}",
        start.elapsed()
    );
    assert!(p.b.user_sessions(&user).await.unwrap().is_empty());
    assert_eq!(
        status(&p.app_b, Method::GET, "/me", Some(&other)).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn session_cap_evicts_the_oldest_across_instances() {
    let url = redis_url();
    let p = pair(&url, Some((2, LimitPolicy::EvictOldest))).await;
    let user = format!("dave-{}", random_id());
    let s1 = login_user(&p.app_a, &user).await;
    p.harness.clock.advance(Duration::from_secs(1));
    let s2 = login_user(&p.app_b, &user).await;
    p.harness.clock.advance(Duration::from_secs(1));
    // both instances have s1 cached
    for app in [&p.app_a, &p.app_b] {
        assert_eq!(
            status(app, Method::GET, "/me", Some(&s1)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(app, Method::GET, "/me", Some(&s1)).await,
            StatusCode::OK
        );
    }
    let s3 = login_user(&p.app_b, &user).await;
    for app in [&p.app_a, &p.app_b] {
        let refused = within(Duration::from_secs(1), || async {
            status(app, Method::GET, "/me", Some(&s1)).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(
            refused.is_some(),
            "the evicted session is refused on both instances"
        );
    }
    for t in [&s2, &s3] {
        assert_eq!(
            status(&p.app_a, Method::GET, "/me", Some(t)).await,
            StatusCode::OK
        );
    }
    assert_eq!(p.a.user_sessions(&user).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn session_cap_rejects_new_logins_across_instances() {
    let url = redis_url();
    let p = pair(&url, Some((2, LimitPolicy::RejectNew))).await;
    let user = format!("erin-{}", random_id());
    let s1 = login_user(&p.app_a, &user).await;
    let s2 = login_user(&p.app_b, &user).await;
    let res = call(&p.app_a, Method::POST, &format!("/login/{user}"), None).await;
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "the third login is refused"
    );
    assert!(token_of(&res).is_none());
    let res = call(&p.app_b, Method::POST, &format!("/login/{user}"), None).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    // logging out elsewhere makes room
    assert_eq!(
        status(&p.app_a, Method::POST, "/logout", Some(&s1)).await,
        StatusCode::OK
    );
    let s3 = login_user(&p.app_b, &user).await;
    for t in [&s2, &s3] {
        assert_eq!(
            status(&p.app_a, Method::GET, "/me", Some(t)).await,
            StatusCode::OK
        );
    }
}

// ----- hardening: the guest budget, bounded script work, forwarding, a full Redis -----

/// Per-member reads (`HGET`, `EXISTS`, `HMGET`, `HEXISTS`) that Redis ran since the last
/// `CONFIG RESETSTAT`, inside scripts included (which is why the round-trip test cannot use
/// `INFO commandstats`, and why this one can), and the microseconds spent in `EVALSHA`.
fn script_work(raw: &mut Raw) -> (i64, i64) {
    let stats = raw.cmd(&["INFO", "commandstats"]).unwrap().text();
    let field = |cmd: &str, field: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:")))
            .and_then(|rest| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0) as i64
    };
    let reads = ["hget", "exists", "hmget", "hexists"]
        .iter()
        .map(|c| field(c, "calls"))
        .sum();
    (reads, field("evalsha", "usec"))
}

fn reset_stats(raw: &mut Raw) {
    assert_eq!(
        raw.cmd(&["CONFIG", "RESETSTAT"]).unwrap(),
        Reply::Status("OK".into())
    );
}

/// `login` and `user_sessions` on an index of thousands of entries examine a bounded number
/// of them (counted with `INFO commandstats` on a private server, so nothing else runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn login_and_user_sessions_do_bounded_work_on_a_huge_index() {
    const N: i64 = 5000;
    const SCAN: i64 = 64; // INDEX_SCAN in src/store/redis.rs
    const LIST: usize = 20;
    need_binary("redis-server");
    let server = Server::start(&["--appendonly", "no"]);
    let url = server.url();
    let prefix = unique_prefix();
    let a = store(&url, &prefix).await;
    let mut raw = Raw::connect(&url).unwrap();
    let name = |k: &SessionKey| format!("{prefix}s:{}", k.to_hex());
    let limit = |max, policy| Some(SessionLimit { max, policy });
    let login = |user: &str| a.login(None, new_key(), aged(user, SystemTime::now()), TTL, None);

    // N live sessions of one user (what logins without a limit, or under a limit lowered
    // since, leave behind), copied in Redis from one real record: creation times 1..N ms,
    // deadlines in the same order, all after the real record's
    let user = format!("many-{}", random_id());
    let index = format!("{prefix}u:{user}");
    let model = new_key();
    assert!(matches!(
        a.login(None, model, aged(&user, SystemTime::UNIX_EPOCH), TTL, None)
            .await
            .unwrap(),
        LoginOutcome::Applied { .. }
    ));
    const FILL: &str = "local blob = redis.call('HGET', KEYS[1], 'd') \
        local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 \
        for i = 1, tonumber(ARGV[3]) do \
          local k = ARGV[1] .. string.format('%064x', i) \
          redis.call('HSET', k, 'v', '1', 'd', blob, 'c', tostring(i), 'u', ARGV[2]) \
          redis.call('PEXPIRE', k, 600000) \
          redis.call('ZADD', KEYS[2], string.format('%.0f', now + 601000 + i), k) \
        end \
        return redis.call('ZCARD', KEYS[2])";
    let records = format!("{prefix}s:");
    let filled = raw
        .cmd(&[
            "EVAL",
            FILL,
            "2",
            &name(&model),
            &index,
            &records,
            &user,
            &N.to_string(),
        ])
        .unwrap()
        .int();
    assert_eq!(filled, N + 1);

    // a login under a limit of 20 examines one window of the index and evicts from it (the
    // oldest first); the rest waits for the next logins
    reset_stats(&mut raw);
    let outcome = a
        .login(
            None,
            new_key(),
            aged(&user, SystemTime::now()),
            TTL,
            limit(20, LimitPolicy::EvictOldest),
        )
        .await
        .unwrap();
    let (reads, usec) = script_work(&mut raw);
    println!(
        "login, {} live sessions: {reads} entries examined, {usec} µs",
        N + 1
    );
    assert!(reads <= SCAN + 2, "login examined {reads} entries");
    let LoginOutcome::Applied { evicted } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(evicted.len() as i64, SCAN, "one window per login");
    assert_eq!(evicted[0], model, "the oldest first");
    assert_eq!(raw.cmd(&["ZCARD", &index]).unwrap().int(), N + 2 - SCAN);
    for k in &evicted {
        assert_eq!(raw.cmd(&["EXISTS", &name(k)]).unwrap().int(), 0);
    }

    // a list holds at most its limit, with bounded work
    reset_stats(&mut raw);
    let listed = a.user_sessions(&user, LIST).await.unwrap();
    let (reads, usec) = script_work(&mut raw);
    println!(
        "user_sessions({LIST}), {} live: {reads} entries examined, {usec} µs",
        N + 2 - SCAN
    );
    assert_eq!(listed.len(), LIST);
    assert!(
        reads <= LIST as i64 + SCAN,
        "user_sessions examined {reads}"
    );

    // a login refused by the limit costs no more
    reset_stats(&mut raw);
    assert_eq!(
        a.login(
            None,
            new_key(),
            aged(&user, SystemTime::now()),
            TTL,
            limit(20, LimitPolicy::RejectNew)
        )
        .await
        .unwrap(),
        LoginOutcome::LimitReached
    );
    let (reads, _) = script_work(&mut raw);
    assert!(reads <= SCAN + 2, "a refused login examined {reads}");

    // N entries whose records are gone (deleted behind the store's back: a manual DEL, an
    // eviction policy that should not be there) with deadlines ahead: bounded work, and
    // every call drops what it examined
    let ghost = format!("ghost-{}", random_id());
    let ghost_index = format!("{prefix}u:{ghost}");
    const STALE: &str = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 \
        for i = 1, tonumber(ARGV[2]) do \
          redis.call('ZADD', KEYS[1], string.format('%.0f', now + 600000 + i), \
            ARGV[1] .. string.format('%064x', 1000000 + i)) \
        end \
        return redis.call('ZCARD', KEYS[1])";
    let stale = raw
        .cmd(&["EVAL", STALE, "1", &ghost_index, &records, &N.to_string()])
        .unwrap()
        .int();
    assert_eq!(stale, N);
    reset_stats(&mut raw);
    assert!(matches!(
        login(&ghost).await.unwrap(),
        LoginOutcome::Applied { .. }
    ));
    let (reads, usec) = script_work(&mut raw);
    println!("login, {N} stale entries: {reads} entries examined, {usec} µs");
    assert!(reads <= SCAN + 2, "login examined {reads}");
    assert_eq!(
        raw.cmd(&["ZCARD", &ghost_index]).unwrap().int(),
        N - SCAN + 1,
        "the examined entries are dropped"
    );
    reset_stats(&mut raw);
    let listed = a.user_sessions(&ghost, LIST).await.unwrap();
    let (reads, usec) = script_work(&mut raw);
    println!(
        "user_sessions({LIST}), {} stale entries: {reads} examined, {usec} µs",
        N - SCAN
    );
    assert!(
        reads <= LIST as i64 + SCAN,
        "user_sessions examined {reads}"
    );
    assert!(listed.len() <= 1);

    // N entries past their deadlines go by score, in one command, whatever their number
    let expired = format!("expired-{}", random_id());
    let expired_index = format!("{prefix}u:{expired}");
    const PAST: &str = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 \
        for i = 1, tonumber(ARGV[2]) do \
          redis.call('ZADD', KEYS[1], string.format('%.0f', now - 1000 - i), \
            ARGV[1] .. string.format('%064x', 2000000 + i)) \
        end \
        return redis.call('ZCARD', KEYS[1])";
    raw.cmd(&["EVAL", PAST, "1", &expired_index, &records, &N.to_string()])
        .unwrap();
    reset_stats(&mut raw);
    assert!(matches!(
        login(&expired).await.unwrap(),
        LoginOutcome::Applied { .. }
    ));
    let (reads, usec) = script_work(&mut raw);
    println!("login, {N} expired entries: {reads} entries examined, {usec} µs");
    assert!(reads <= 2, "login examined {reads}");
    assert_eq!(raw.cmd(&["ZCARD", &expired_index]).unwrap().int(), 1);
    assert_eq!(a.user_sessions(&expired, LIST).await.unwrap().len(), 1);
}

/// `rotate` and `login` leave the old key forwarding to the new one for `FORWARD_TTL`, and
/// `delete` of the old key follows it: a logout or a revocation with a key that rotated
/// meanwhile (on another instance) still ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn deleting_a_rotated_away_key_ends_the_session_it_forwards_to() {
    let url = redis_url();
    let prefix = unique_prefix();
    let _cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (a, b) = (store(&url, &prefix).await, store(&url, &prefix).await);
    let mut raw = Raw::connect(&url).unwrap();
    let name = |k: &SessionKey| format!("{prefix}s:{}", k.to_hex());
    let user = format!("user-{}", random_id());
    let index = format!("{prefix}u:{user}");

    // a guest session rotates on A
    let k0 = new_key();
    assert_eq!(
        a.create(k0, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(b.load(k0).await.unwrap().is_some());
    let k1 = new_key();
    assert_eq!(
        a.rotate(k0, 1, k1, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    // the old key only forwards to the new one, for FORWARD_TTL
    match raw.cmd(&["HGETALL", &name(&k0)]).unwrap() {
        Reply::Array(fields) => assert_eq!(
            fields.iter().map(Reply::text).collect::<Vec<_>>(),
            ["f".to_owned(), name(&k1)]
        ),
        other => panic!("{other:?}"),
    }
    let pttl = raw.cmd(&["PTTL", &name(&k0)]).unwrap().int();
    let forward_ms = FORWARD_TTL.as_millis() as i64;
    assert!(
        (forward_ms - 5_000..=forward_ms).contains(&pttl),
        "PTTL {pttl}"
    );
    // it is no session: loads find nothing and cache nothing, every write conflicts
    assert!(a.load(k0).await.unwrap().is_none());
    assert!(a.load_now(k0).is_none());
    eventually(&b, k0, None).await;
    assert!(b.load_now(k0).is_none());
    assert_eq!(
        a.update(k0, 1, record(None, 2), TTL).await.unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        b.rotate(k0, 1, new_key(), record(None, 1), TTL)
            .await
            .unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        a.create(k0, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        b.login(Some((k0, 1)), new_key(), record(Some(&user), 1), TTL, None)
            .await
            .unwrap(),
        LoginOutcome::Conflict
    );
    assert_eq!(
        raw.cmd(&["HLEN", &name(&k0)]).unwrap().int(),
        1,
        "unchanged"
    );

    // the rotated guest logs in on A: k1 forwards to k2 now
    let k2 = new_key();
    assert_eq!(
        a.login(Some((k1, 1)), k2, record(Some(&user), 1), TTL, None)
            .await
            .unwrap(),
        LoginOutcome::Applied { evicted: vec![] }
    );
    assert_eq!(
        raw.cmd(&["HGET", &name(&k1), "f"]).unwrap().text(),
        name(&k2)
    );
    // both instances serve the session from their near-caches
    for s in [&a, &b] {
        assert!(s.load(k2).await.unwrap().is_some());
        assert!(s.load_now(k2).is_some());
    }

    // a logout (or revocation) on B with the key from before both rotations ends it
    assert!(b.delete(k0).await.unwrap(), "a live session was ended");
    assert!(b.load_now(k2).is_none());
    assert!(b.load(k2).await.unwrap().is_none());
    eventually(&a, k2, None).await;
    assert!(a.load_now(k2).is_none());
    for k in [k0, k1, k2] {
        assert_eq!(raw.cmd(&["EXISTS", &name(&k)]).unwrap().int(), 0);
    }
    assert_eq!(
        raw.cmd(&["EXISTS", &index]).unwrap().int(),
        0,
        "index entry gone"
    );
    assert!(a.user_sessions(&user, 10).await.unwrap().is_empty());
    assert!(!a.delete(k0).await.unwrap(), "nothing live left");

    // a forwarding delete that reaches nothing live (the session ended already) says so
    let (f0, f1) = (new_key(), new_key());
    assert_eq!(
        a.create(f0, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        a.rotate(f0, 1, f1, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(b.delete(f1).await.unwrap());
    assert!(!a.delete(f0).await.unwrap());
    assert_eq!(raw.cmd(&["EXISTS", &name(&f0)]).unwrap().int(), 0);

    // hops are bounded: MAX_FORWARD_HOPS rotations are followed, one more is not
    for hops in [MAX_FORWARD_HOPS, MAX_FORWARD_HOPS + 1] {
        let chain: Vec<SessionKey> = (0..=hops).map(|_| new_key()).collect();
        assert_eq!(
            a.create(chain[0], record(None, 1), TTL).await.unwrap(),
            WriteOutcome::Applied
        );
        for w in chain.windows(2) {
            assert_eq!(
                a.rotate(w[0], 1, w[1], record(None, 1), TTL).await.unwrap(),
                WriteOutcome::Applied
            );
        }
        let reached = hops <= MAX_FORWARD_HOPS;
        assert_eq!(b.delete(chain[0]).await.unwrap(), reached, "{hops} hops");
        let last = chain[hops];
        if reached {
            eventually(&a, last, None).await;
        } else {
            assert!(a.load(last).await.unwrap().is_some(), "{hops} hops");
        }
        for (i, k) in chain.iter().enumerate() {
            let left = raw.cmd(&["EXISTS", &name(k)]).unwrap().int();
            assert_eq!(
                left,
                i64::from(i > MAX_FORWARD_HOPS),
                "{hops} hops, key {i}"
            );
        }
    }
}

/// The members of a sorted set, lowest score first.
fn zmembers(raw: &mut Raw, key: &str) -> Vec<String> {
    match raw.cmd(&["ZRANGE", key, "0", "-1"]).unwrap() {
        Reply::Array(items) => items.iter().map(Reply::text).collect(),
        other => panic!("ZRANGE answered {other:?}"),
    }
}

/// `items` sorted, for comparing a sorted set's members as a set: members written in the same
/// millisecond share a score, and Redis then orders them by name, which is random here.
fn as_set<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    v.sort();
    v
}

/// Redis's clock, in ms.
fn redis_now_ms(raw: &mut Raw) -> i64 {
    match raw.cmd(&["TIME"]).unwrap() {
        Reply::Array(t) => {
            t[0].text().parse::<i64>().unwrap() * 1000 + t[1].text().parse::<i64>().unwrap() / 1000
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn guest_budget_evicts_the_least_recently_active_guests_never_users() {
    const CAP: usize = 5;
    let url = redis_url();
    let prefix = unique_prefix();
    let _cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let build = || {
        RedisStore::builder(url.as_str())
            .prefix(prefix.as_str())
            .guest_capacity(CAP as u64)
            .build()
    };
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    let mut raw = Raw::connect(&url).unwrap();
    let guests = format!("{prefix}guests");
    let name = |k: &SessionKey| format!("{prefix}s:{}", k.to_hex());
    let pause = || tokio::time::sleep(Duration::from_millis(3));

    // a logged-in session, which must never make room for guests
    let user = format!("user-{}", random_id());
    let index = format!("{prefix}u:{user}");
    let u1 = new_key();
    assert!(matches!(
        a.login(None, u1, record(Some(&user), 1), TTL, None)
            .await
            .unwrap(),
        LoginOutcome::Applied { .. }
    ));

    // CAP guests from both instances, each a little later (so with a later deadline)
    let mut g = Vec::new();
    for i in 0..CAP {
        let k = new_key();
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            s.create(k, record(None, 1), TTL).await.unwrap(),
            WriteOutcome::Applied
        );
        g.push(k);
        pause().await;
    }
    assert_eq!(
        zmembers(&mut raw, &guests),
        g.iter().map(name).collect::<Vec<_>>(),
        "the guest set, earliest deadline first"
    );
    // a guest's record expires with the ttl it was given (the layer's guest idle lifetime),
    // and its entry in the guest set is scored with that deadline
    let pttl = raw.cmd(&["PTTL", &name(&g[0])]).unwrap().int();
    assert!((595_000..=600_000).contains(&pttl), "guest PTTL {pttl}");
    let score: i64 = raw
        .cmd(&["ZSCORE", &guests, &name(&g[0])])
        .unwrap()
        .text()
        .parse()
        .unwrap();
    let ahead = score - redis_now_ms(&mut raw);
    assert!(
        (595_000..=600_000).contains(&ahead),
        "score - now = {ahead}"
    );
    let short = new_key();
    assert_eq!(
        a.create(short, record(None, 1), Duration::from_secs(90))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let pttl = raw.cmd(&["PTTL", &name(&short)]).unwrap().int();
    assert!((85_000..=90_000).contains(&pttl), "guest PTTL {pttl}");
    // the shortest-lived guest was the first to go to make room for it
    assert!(a.load(short).await.unwrap().is_some());
    assert!(a.load(g[0]).await.unwrap().is_none());
    assert!(a.delete(short).await.unwrap());
    g.remove(0);
    let refill = new_key();
    assert_eq!(
        b.create(refill, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    g.push(refill);
    pause().await;
    assert_eq!(raw.cmd(&["ZCARD", &guests]).unwrap().int(), CAP as i64);

    // both instances have the next guest to go cached...
    for s in [&a, &b] {
        assert!(s.load(g[0]).await.unwrap().is_some());
        assert!(s.load_now(g[0]).is_some(), "cached");
    }
    // ...and one more guest evicts it, on both instances
    let extra = new_key();
    assert_eq!(
        a.create(extra, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(
        a.load_now(g[0]).is_none(),
        "the evicting instance dropped it"
    );
    assert!(a.load(g[0]).await.unwrap().is_none());
    eventually(&b, g[0], None).await;
    assert!(raw.cmd(&["EXISTS", &name(&g[0])]).unwrap().int() == 0);
    assert_eq!(raw.cmd(&["ZCARD", &guests]).unwrap().int(), CAP as i64);
    // the logged-in session and its index entry are untouched
    assert!(b.load(u1).await.unwrap().is_some());
    assert!(raw
        .cmd(&["ZSCORE", &index, &name(&u1)])
        .unwrap()
        .bytes()
        .is_some());
    pause().await;

    // activity keeps a guest: a touch raises its deadline, so the next guest goes instead
    assert_eq!(
        a.update(g[1], 1, record(None, 2), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(zmembers(&mut raw, &guests).last(), Some(&name(&g[1])));
    let h = new_key();
    assert_eq!(
        b.create(h, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(
        b.load(g[1]).await.unwrap().is_some(),
        "the active guest stays"
    );
    eventually(&a, g[2], None).await;

    // a rotated guest moves in the set; a guest that logs in and a deleted one leave it
    let g4r = new_key();
    assert_eq!(
        a.rotate(g[4], 1, g4r, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    let members = zmembers(&mut raw, &guests);
    assert!(!members.contains(&name(&g[4])) && members.contains(&name(&g4r)));
    assert_eq!(members.len(), CAP);
    let u2 = new_key();
    assert!(matches!(
        b.login(Some((g[3], 1)), u2, record(Some(&user), 1), TTL, None)
            .await
            .unwrap(),
        LoginOutcome::Applied { .. }
    ));
    assert!(!zmembers(&mut raw, &guests).contains(&name(&g[3])));
    assert!(a.delete(g[1]).await.unwrap());
    assert_eq!(
        as_set(zmembers(&mut raw, &guests)),
        as_set([&extra, &h, &g4r].map(name)),
        "rotated, logged in and deleted guests left the set"
    );

    // an expired guest leaves the set by its deadline, which makes room without evicting
    let brief = new_key();
    assert_eq!(
        a.create(brief, record(None, 1), Duration::from_millis(30))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(zmembers(&mut raw, &guests)[0], name(&brief));
    tokio::time::sleep(Duration::from_millis(80)).await;
    let next = new_key();
    assert_eq!(
        b.create(next, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        as_set(zmembers(&mut raw, &guests)),
        as_set([&extra, &h, &g4r, &next].map(name))
    );

    // a logged-in session is never evicted for a guest, even if listed in the guest set
    raw.cmd(&["ZADD", &guests, "0", &name(&u1)]).unwrap();
    let last = new_key();
    assert_eq!(
        a.create(last, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(
        b.load(u1).await.unwrap().is_some(),
        "the user keeps the session"
    );
    assert_eq!(
        as_set(zmembers(&mut raw, &guests)),
        as_set([&extra, &h, &g4r, &next, &last].map(name))
    );

    // bytes per guest: its record and its entry in the guest set, as the layer writes them
    // (the guests here are on another prefix, so the set holds only them)
    let prefix2 = unique_prefix();
    let _cleanup2 = Cleanup {
        url: url.clone(),
        prefix: prefix2.clone(),
    };
    let harness = Harness::new();
    // 5 guest buckets of 64, as in a full default budget (781 buckets of 65): 200 guests fit
    // without an eviction (about 40 per bucket).
    let store2 = RedisStore::builder(url.as_str())
        .prefix(prefix2.as_str())
        .guest_capacity(320)
        .build()
        .await
        .expect("RedisStore connects");
    let app = harness.app(store2);
    const MEASURED: i64 = 200;
    let mut record_bytes = 0;
    let mut last_key = String::new();
    // Guests are spread over guest buckets (one set each): every set they went into.
    let mut guest_sets = std::collections::BTreeSet::new();
    for _ in 0..MEASURED {
        let res = call(&app, Method::POST, "/set/cart/3-items", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let key = SessionKey::from_token_str(&token_of(&res).unwrap()).unwrap();
        let usage = raw
            .cmd(&[
                "MEMORY",
                "USAGE",
                &record_name(&prefix2, &key),
                "SAMPLES",
                "0",
            ])
            .unwrap()
            .int();
        record_bytes += usage;
        last_key = record_name(&prefix2, &key);
        guest_sets.insert(format!("{}guests", base_name(&prefix2, key.route())));
    }
    println!(
        "a guest record: blob {} B, encoding {}",
        raw.cmd(&["HSTRLEN", &last_key, "d"]).unwrap().int(),
        raw.cmd(&["OBJECT", "ENCODING", &last_key]).unwrap().text()
    );
    // (a few sets, so that their fixed overhead is shared as in a full budget's buckets of
    // about 64 guests each)
    let set_bytes: i64 = guest_sets
        .iter()
        .map(|set| {
            raw.cmd(&["MEMORY", "USAGE", set, "SAMPLES", "0"])
                .unwrap()
                .int()
        })
        .sum();
    let per_guest = (record_bytes + set_bytes) / MEASURED;
    println!(
        "MEMORY USAGE per guest: record {} B + guest-set entry {} B = {per_guest} B",
        record_bytes / MEASURED,
        set_bytes / MEASURED
    );
    // and, for sizing maxmemory, per logged-in session (each of its own user here, so with
    // a one-entry index each)
    let (mut auth_record, mut auth_index) = (0, 0);
    for i in 0..MEASURED {
        let who = format!("u{i}-{}", random_id());
        let key = SessionKey::from_token_str(&login_user(&app, &who).await).unwrap();
        let mut usage = |k: String| {
            raw.cmd(&["MEMORY", "USAGE", &k, "SAMPLES", "0"])
                .unwrap()
                .int()
        };
        auth_record += usage(record_name(&prefix2, &key));
        auth_index += usage(format!("{}u:{who}", base_name(&prefix2, key.route())));
    }
    println!(
        "MEMORY USAGE per logged-in session: record {} B, a one-session index {} B",
        auth_record / MEASURED,
        auth_index / MEASURED
    );
    assert!(
        per_guest <= 850,
        "DEFAULT_GUEST_CAPACITY's documented ~790 B per guest no longer holds: {per_guest} B"
    );
}

fn info_field(raw: &mut Raw, section: &str, field: &str) -> i64 {
    let info = raw.cmd(&["INFO", section]).unwrap().text();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

/// With `maxmemory` and `noeviction`, a full Redis refuses new guests with
/// `StoreError::full` (the layer answers 503 with `Retry-After`) instead of growing past its
/// limit, while logouts keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn a_full_redis_refuses_new_guests_and_still_ends_sessions() {
    need_binary("redis-server");
    let server = Server::start(&["--appendonly", "no", "--maxmemory-policy", "noeviction"]);
    let url = server.url();
    let prefix = unique_prefix();
    let a = store(&url, &prefix).await;
    let mut raw = Raw::connect(&url).unwrap();
    let user = format!("user-{}", random_id());
    let s1 = new_key();
    assert!(matches!(
        a.login(None, s1, record(Some(&user), 1), TTL, None)
            .await
            .unwrap(),
        LoginOutcome::Applied { .. }
    ));
    let g1 = new_key();
    assert_eq!(
        a.create(g1, record(None, 1), TTL).await.unwrap(),
        WriteOutcome::Applied
    );

    let max = info_field(&mut raw, "memory", "used_memory") + 256 * 1024;
    raw.cmd(&["CONFIG", "SET", "maxmemory", &max.to_string()])
        .unwrap();
    let mut created = 0;
    let err = loop {
        assert!(
            created < 20_000,
            "Redis never refused a guest: {created} created, used_memory {} > maxmemory {max}",
            info_field(&mut raw, "memory", "used_memory")
        );
        match a.create(new_key(), record(None, 1), TTL).await {
            Ok(WriteOutcome::Applied) => created += 1,
            Ok(WriteOutcome::Conflict) => panic!("a fresh key conflicted"),
            Err(e) => break e,
        }
    };
    let used = info_field(&mut raw, "memory", "used_memory");
    println!("full after {created} guests: {err}; used_memory {used}, maxmemory {max}");
    assert!(
        err.is_full(),
        "a guest refused for lack of memory is 'full': {err}"
    );
    assert!(
        used <= max + 16 * 1024,
        "used_memory {used} > maxmemory {max}"
    );
    // a login is refused as well, as a plain store error
    let err = a
        .login(None, new_key(), record(Some(&user), 1), TTL, None)
        .await
        .expect_err("no room for a login either");
    assert!(!err.is_full(), "{err}");
    // the layer answers a new guest with 503 and Retry-After
    let harness = Harness::new();
    let app = harness.app(a.clone());
    let res = call(&app, Method::POST, "/set/k/v", None).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    // ending sessions still works
    assert!(a.delete(s1).await.unwrap());
    assert!(a.delete(g1).await.unwrap());
    assert!(a.load(s1).await.unwrap().is_none());
}

// ----- round trips -----

/// The commands that clients send to a server (not those its scripts run), from `MONITOR`.
/// `INFO commandstats` would count the commands inside scripts as well, so it over-counts
/// round trips; `MONITOR` tags those with `lua` instead of a client address.
struct Monitor {
    lines: std::sync::mpsc::Receiver<String>,
    marker: Raw,
    markers: u64,
}

impl Monitor {
    fn start(url: &str) -> Monitor {
        let mut feed = Raw::connect(url).unwrap();
        assert_eq!(feed.cmd(&["MONITOR"]).unwrap(), Reply::Status("OK".into()));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(line) = feed.line() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Monitor {
            lines,
            marker: Raw::connect(url).unwrap(),
            markers: 0,
        }
    }

    /// The names of the commands clients sent since the previous call. A marker command
    /// sent after them bounds the read: the server handles commands in order.
    fn client_commands(&mut self) -> Vec<String> {
        self.markers += 1;
        let marker = format!("tsg-marker-{}", self.markers);
        self.marker.cmd(&["ECHO", &marker]).unwrap();
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .expect("MONITOR shows the marker");
            if line.contains(&marker) {
                return out;
            }
            // +1700000000.123456 [0 127.0.0.1:5000] "HGET" "key" "d"
            let Some((client, rest)) = line.split_once('[').and_then(|(_, r)| r.split_once("] "))
            else {
                continue;
            };
            if client.ends_with(" lua") {
                continue;
            }
            let name = rest
                .split('"')
                .nth(1)
                .unwrap_or_default()
                .to_ascii_lowercase();
            out.push(name);
        }
    }
}

/// Sends one request and returns the response and the commands the server got meanwhile.
async fn measure(
    monitor: &mut Monitor,
    what: &str,
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
) -> (axum::http::Response<axum::body::Body>, Vec<String>) {
    monitor.client_commands();
    let res = call(app, method, uri, token).await;
    let sent = monitor.client_commands();
    println!("{what}: {} round trip(s) {sent:?}", sent.len());
    (res, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn round_trips_hit_0_miss_1_login_at_most_2() {
    need_binary("redis-server");
    let server = Server::start(&["--appendonly", "no"]);
    let url = server.url();
    let p = pair(&url, Some((3, LimitPolicy::EvictOldest))).await;
    let mut monitor = Monitor::start(&url);

    let (res, d) = measure(
        &mut monitor,
        "login without a session",
        &p.app_a,
        Method::POST,
        "/login",
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(d, ["evalsha"]);
    let token = token_of(&res).unwrap();

    let (res, d) = measure(
        &mut monitor,
        "load on A, near-cache hit",
        &p.app_a,
        Method::GET,
        "/me",
        Some(&token),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(d.is_empty(), "{d:?}");

    let (res, d) = measure(
        &mut monitor,
        "load on B, near-cache miss",
        &p.app_b,
        Method::GET,
        "/me",
        Some(&token),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(d, ["hget"]);

    let (res, d) = measure(
        &mut monitor,
        "load on B again, hit",
        &p.app_b,
        Method::GET,
        "/me",
        Some(&token),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(d.is_empty(), "{d:?}");

    // a guest session (created on A) logs in on B: load (miss) + login script
    let (res, d) = measure(
        &mut monitor,
        "guest write on A",
        &p.app_a,
        Method::POST,
        "/set/k/v",
        None,
    )
    .await;
    assert_eq!(d, ["evalsha"]);
    let guest = token_of(&res).unwrap();
    let (res, d) = measure(
        &mut monitor,
        "login of a guest session, miss",
        &p.app_b,
        Method::POST,
        "/login",
        Some(&guest),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(d.len() <= 2, "a login costs at most 2 round trips: {d:?}");
    assert_eq!(d, ["hget", "evalsha"]);
    let (res, d) = measure(
        &mut monitor,
        "guest write on A",
        &p.app_a,
        Method::POST,
        "/set/k/v",
        None,
    )
    .await;
    assert_eq!(d, ["evalsha"]);
    let guest = token_of(&res).unwrap();
    let (res, d) = measure(
        &mut monitor,
        "login of a guest session, hit",
        &p.app_a,
        Method::POST,
        "/login",
        Some(&guest),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(d, ["evalsha"]);

    // a logout is one script (and so is a session list, below)
    let (res, d) = measure(
        &mut monitor,
        "logout",
        &p.app_a,
        Method::POST,
        "/logout",
        Some(&token),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(d, ["evalsha"]);

    monitor.client_commands();
    assert_eq!(p.a.user_sessions("alice").await.unwrap().len(), 2);
    assert_eq!(monitor.client_commands(), ["evalsha"], "user_sessions");

    // after a script cache flush (as after a Redis restart) EVALSHA answers NOSCRIPT and the
    // store falls back to EVAL once, which caches the script again
    let mut raw = Raw::connect(&url).unwrap();
    assert_eq!(
        raw.cmd(&["SCRIPT", "FLUSH"]).unwrap(),
        Reply::Status("OK".into())
    );
    let (res, d) = measure(
        &mut monitor,
        "login after SCRIPT FLUSH",
        &p.app_a,
        Method::POST,
        "/login",
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(d, ["evalsha", "eval"]);
    let (res, d) = measure(
        &mut monitor,
        "login after that",
        &p.app_b,
        Method::POST,
        "/login",
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(d, ["evalsha"]);

    let stats = p.store_b.near_cache_stats();
    println!("near-cache on B: {stats:?}");
    assert!(stats.hits >= 1 && stats.misses >= 1);
}

// ----- outage -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn outage_fails_closed_and_recovers() {
    need_binary("redis-server");
    // The append-only file (fsynced on every write) makes sessions survive the SIGKILL, so
    // that "recovered" can be told apart from "everything forgotten".
    let mut server = Server::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let p = pair(&url, None).await;

    let live = login_token(&p.app_a, None).await;
    let revoked = login_user(&p.app_a, "mallory").await;
    for t in [&live, &revoked] {
        assert_eq!(
            status(&p.app_a, Method::GET, "/me", Some(t)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&p.app_a, Method::GET, "/me", Some(t)).await,
            StatusCode::OK
        );
    }
    assert!(p.store_a.near_cache_active());
    // revoked on B before the outage; A, which had it cached, refuses it
    assert_eq!(p.b.revoke_user("mallory").await.unwrap(), 1);
    let refused = within(Duration::from_secs(1), || async {
        status(&p.app_a, Method::GET, "/me", Some(&revoked)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused.is_some());

    server.kill();
    let killed = Instant::now();
    // the near-cache goes out of use, and requests with a session fail closed, fast
    let down = within(Duration::from_secs(2), || async {
        status(&p.app_a, Method::GET, "/me", Some(&live)).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await
    .expect("a session request gets 503 while Redis is down");
    println!("first 503 {down:?} after the kill");
    assert!(!p.store_a.near_cache_active());
    for t in [&live, &revoked] {
        let start = Instant::now();
        assert_eq!(
            status(&p.app_a, Method::GET, "/me", Some(t)).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "fails fast: {:?}",
            start.elapsed()
        );
        assert_eq!(
            status(&p.app_b, Method::GET, "/me", Some(t)).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    // requests without a session never touch the store
    assert_eq!(
        status(&p.app_a, Method::GET, "/health", None).await,
        StatusCode::OK
    );
    assert_eq!(
        call_text(&p.app_b, Method::GET, "/counter", None).await,
        (StatusCode::OK, "0".into())
    );
    // a login cannot happen without the store
    assert_eq!(
        status(&p.app_a, Method::POST, "/login", None).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.restart();
    let restarted = Instant::now();
    let back = within(Duration::from_secs(10), || async {
        status(&p.app_a, Method::GET, "/me", Some(&live)).await == StatusCode::OK
    })
    .await
    .expect("the layer recovers within 10 s of Redis coming back");
    println!(
        "outage: down {:?}, A serves the session again {back:?} after the restart",
        restarted - killed
    );
    assert!(within(Duration::from_secs(10), || async {
        status(&p.app_b, Method::GET, "/me", Some(&live)).await == StatusCode::OK
    })
    .await
    .is_some());
    for app in [&p.app_a, &p.app_b] {
        assert_eq!(
            status(app, Method::GET, "/me", Some(&revoked)).await,
            StatusCode::UNAUTHORIZED,
            "revoked before the outage stays revoked after it"
        );
    }
    // coherence is back too: a logout on B is refused on A
    let active = within(Duration::from_secs(5), || async {
        p.store_a.near_cache_active()
    })
    .await;
    assert!(active.is_some(), "the near-cache is back in use");
    assert_eq!(
        status(&p.app_a, Method::GET, "/me", Some(&live)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&p.app_b, Method::POST, "/logout", Some(&live)).await,
        StatusCode::OK
    );
    let refused = within(Duration::from_secs(1), || async {
        status(&p.app_a, Method::GET, "/me", Some(&live)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused.is_some());
    let fresh = login_token(&p.app_b, None).await;
    assert_eq!(
        status(&p.app_a, Method::GET, "/me", Some(&fresh)).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_with_a_store_error() {
    let port = spare_port();
    let start = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .expect_err("nothing listens there");
    assert!(start.elapsed() < Duration::from_secs(5));
    println!("{err}");
    let err = RedisStore::builder("redis-cluster://127.0.0.1:1")
        .prefix("no-tag:")
        .build()
        .await
        .expect_err("a cluster prefix needs a hash tag");
    assert!(err.to_string().contains("hash tag"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn dropping_a_store_closes_its_connections() {
    need_binary("redis-server");
    let server = Server::start(&["--appendonly", "no"]);
    let mut raw = Raw::connect(&server.url()).unwrap();
    let mut clients = || raw.cmd(&["CLIENT", "LIST"]).unwrap().text().lines().count();
    let alone = clients();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let clone = store.clone();
    assert_eq!(clients(), alone + 2, "a main connection and a subscriber");
    drop(store);
    assert_eq!(clients(), alone + 2, "clones share the connections");
    drop(clone);
    let closed = within(Duration::from_secs(2), || {
        let n = clients();
        async move { n == alone }
    })
    .await;
    assert!(closed.is_some(), "the last drop closes both connections");
}

// ----- Redis Cluster -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis_cluster),
    ignore = "set REDIS_CLUSTER_TEST=1 (needs redis-server and redis-cli) to run the Redis Cluster test"
)]
async fn two_layers_and_the_store_contract_on_a_three_node_cluster() {
    need_binary("redis-server");
    need_binary("redis-cli");
    let nodes: Vec<Server> = (0..3)
        .map(|_| {
            Server::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--appendonly",
                "no",
            ])
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli runs");
    assert!(created.success(), "redis-cli --cluster create");
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        loop {
            let info = Raw::connect(&n.url())
                .unwrap()
                .cmd(&["CLUSTER", "INFO"])
                .unwrap()
                .text();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let url = format!("redis-cluster://{}", addrs.join(","));
    let cluster = RedisHarness::new(&url);
    let (a, b) = cluster.open(None).await;

    // and the layer on two instances, through the cluster
    let h = Harness::new();
    let app_a = h.app(a);
    let app_b = h.app(b);
    let token = login_token(&app_a, None).await;
    assert_eq!(
        status(&app_b, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app_a, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app_b, Method::POST, "/logout", Some(&token)).await,
        StatusCode::OK
    );
    let refused = within(Duration::from_secs(1), || async {
        status(&app_a, Method::GET, "/me", Some(&token)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("cluster: logout on B refused on A after {refused:?}");
    assert!(refused.is_some());

    // Last, as it ends in the expiry rule's known violation (see tests/store_contract.rs).
    let not_checked = contract::run_all(&cluster).await;
    // Redis's maxmemory is the store's only total bound (see tests/store_contract.rs).
    assert_eq!(not_checked, ["guest_is_refused_when_only_users_are_left"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tsg_redis),
    ignore = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests"
)]
async fn a_token_with_a_forged_or_garbled_routing_tag_is_no_session() {
    let url = redis_url();
    let p = pair(&url, None).await;
    let token = login_user(&p.app_a, &format!("tagged-{}", random_id())).await;
    assert_eq!(
        token.len(),
        46,
        "the layer issues tagged tokens on RedisStore"
    );
    assert_eq!(
        status(&p.app_b, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
    let (tag, secret) = token.split_at(3);
    let other = if tag == "AAA" { "AAB" } else { "AAA" };
    for forged in [
        format!("{other}{secret}"), // another valid tag: another slot, no record there
        secret.to_owned(),          // no tag: the old layout's name, no record there
        format!("{{}}{}{secret}", &tag[..1]), // not base64url
        format!("{}{secret}", &tag[..2]), // a tag too short
        format!("{tag}A{secret}"),  // too long
        format!("{tag}{}", "A".repeat(10_000)),
    ] {
        for app in [&p.app_a, &p.app_b] {
            assert_eq!(
                status(app, Method::GET, "/me", Some(&forged)).await,
                StatusCode::UNAUTHORIZED,
                "{}",
                &forged[..forged.len().min(60)]
            );
        }
    }
    // and the real one still works
    assert_eq!(
        status(&p.app_a, Method::GET, "/me", Some(&token)).await,
        StatusCode::OK
    );
}
