//! A flood of anonymous session-creating requests against logged-in users, in both stores.
//! Ignored by default (a million requests take minutes); `bench/flood.sh` runs them in
//! release mode and prints the figures:
//!
//! ```text
//! cargo test --release --test flood -- --ignored --nocapture
//! ```
//!
//! The flood comes from many addresses (a botnet), so the per-address creation budget does not
//! stop it: what must hold is the store's guest budget. Every session logged in before the
//! flood must still answer afterwards, and the store must stay within its bounds.

mod common;

use std::time::Instant;

use axum::http::{Method, StatusCode};
use axum::Router;
use common::*;
use tower_session_guard::store::SessionStore;
use tower_session_guard::{MemoryStore, SessionGuardLayer};

/// Anonymous session-creating requests in the flood (`FLOOD_REQUESTS` overrides).
fn flood_size() -> u64 {
    std::env::var("FLOOD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Users logged in before the flood.
const USERS: usize = 2_000;

fn flood_app<St: SessionStore>(store: St) -> Router {
    app(SessionGuardLayer::builder(store)
        // A botnet: many addresses, so the per-address budget never fires.
        .guest_creation_limit(None)
        .build()
        .expect("valid config"))
}

/// Logs in `USERS` users, floods, and checks every one of them afterwards. Returns the
/// flood's requests per second.
async fn flood(app: &Router, size: u64) -> f64 {
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let from = peer(&format!("10.{}.{}.1", i / 250, i % 250));
        users.push((
            from,
            login_from(app, from, &format!("user{i}"), &[], &[]).await,
        ));
    }
    let start = Instant::now();
    let mut refused = 0u64;
    for i in 0..size {
        let from = peer(&format!(
            "198.{}.{}.{}",
            18 + (i >> 16) % 2,
            (i >> 8) % 256,
            i % 256
        ));
        let res = call_from(app, Method::POST, "/counter", None, Some(from), &[]).await;
        match res.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("request {i}: {other}"),
        }
    }
    let rate = size as f64 / start.elapsed().as_secs_f64();
    println!("flood: {size} anonymous writes, {refused} refused (store full), {rate:.0} req/s");
    let mut alive = 0;
    for (from, token) in &users {
        let res = call_from(app, Method::GET, "/me", Some(token), Some(*from), &[]).await;
        if res.status() == StatusCode::OK {
            alive += 1;
        }
    }
    println!("flood: {alive} of {USERS} logged-in users still logged in");
    println!(
        "flood: peak resident memory of this test process {}",
        peak_rss()
    );
    assert_eq!(alive, USERS, "the flood logged users out");
    rate
}

#[tokio::test]
#[ignore = "a million requests; run with --release --ignored (bench/flood.sh)"]
async fn a_million_anonymous_writes_leave_every_user_logged_in_memory_store() {
    const CAPACITY: u64 = 200_000;
    let store = MemoryStore::with_capacity(CAPACITY);
    let app = flood_app(store.clone());
    let size = flood_size();
    flood(&app, size).await;
    println!(
        "memory store: {} sessions held after the flood (capacity {CAPACITY})",
        store.len()
    );
    assert!(store.len() <= CAPACITY);
}

#[tokio::test]
#[ignore = "a million Redis round trips; run with --release --ignored (bench/flood.sh)"]
async fn a_million_anonymous_writes_leave_every_user_logged_in_redis_store() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        panic!("REDIS_URL is not set: this test needs a Redis (bench/flood.sh sets it)");
    };
    const GUESTS: u64 = 50_000;
    let prefix = format!("{{flood{}}}:", std::process::id());
    let store = tower_session_guard::RedisStore::builder(url.as_str())
        .prefix(prefix.clone())
        .guest_capacity(GUESTS)
        .build()
        .await
        .expect("Redis store");
    let app = flood_app(store);
    let size = flood_size();
    flood(&app, size).await;
    let client = redis_keys(&url, &prefix);
    println!("redis store: {client}");
}

/// How many keys the flood left under `prefix`, and Redis's memory, via `redis-cli`.
fn redis_keys(url: &str, prefix: &str) -> String {
    let cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-u", url])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("redis-cli failed: {e}"))
    };
    // Guests are spread over guest buckets, one set each (`{flood<pid>.<tag>}:guests`).
    const SUM: &str = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
        n = n + redis.call('ZCARD', k) end return n";
    let pattern = format!("{}*guests", prefix.trim_end_matches("}:"));
    let guests = cli(&["EVAL", SUM, "0", &pattern]);
    let memory = cli(&["INFO", "memory"])
        .lines()
        .find(|l| l.starts_with("used_memory_human:"))
        .unwrap_or("used_memory_human:?")
        .to_owned();
    format!("{guests} guests tracked (cap 50000), {memory}")
}

/// `VmHWM` (peak resident set) of this process, from `/proc/self/status`.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
