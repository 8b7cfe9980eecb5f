//! Bytes per live authenticated session (issue 6): fills a session store with N sessions and
//! reports the process's peak resident memory (`VmHWM`) and resident memory (`VmRSS`) before
//! and after, per session. Run one mode per process (`bench/memory.sh` does) so the
//! numbers don't mix.
//!
//! ```text
//! cargo build --release --manifest-path bench/Cargo.toml --bin mem_sessions
//! bench/target/release/mem_sessions guard|tower-sessions|tower-sessions-min [N] [distinct|alice]
//! ```
//!
//! * `guard`: this crate's `MemoryStore` (capacity N + 10 %: its bound evicts a little early,
//!   see `bench/src/lib.rs`), records as a login writes them: identity (user id, role
//!   admin, group staff), authentication time, pinned IP 127.0.0.1, no user agent, no data.
//!   Filled through `SessionStore::create` on this thread only; every session is then looked
//!   up once to check it is there.
//! * `tower-sessions`: tower-sessions' `MemoryStore` with the same facts in its session data
//!   (`{"user": {"user_id", "roles": ["admin"], "groups": ["staff"]}}`, the user struct a
//!   login handler inserts), through its `SessionStore::create`.
//! * `tower-sessions-min`: the least a login can store there, the user id alone
//!   (`{"user_id": "..."}`): a lower bound for tower-sessions.
//!
//! N defaults to 1 000 000; users default to `distinct` (session i belongs to `user000000i`);
//! `alice` gives every session to one user. Prints one JSON object on stdout.

use tsg_bench as support;

use std::time::{Duration, Instant, SystemTime};

use support::{poll_now, proc_status_bytes, Users};
use tower_session_guard::store::SessionStore;
use tower_session_guard::MemoryStore;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: u64 = args
        .next()
        .map(|v| v.replace('_', "").parse().expect("N is a number"))
        .unwrap_or(1_000_000);
    let users = args
        .next()
        .map(|v| Users::parse(&v).expect("users: distinct or alice"))
        .unwrap_or(Users::Distinct);
    if !["guard", "tower-sessions", "tower-sessions-min"].contains(&mode.as_str()) {
        eprintln!(
            "usage: mem_sessions guard|tower-sessions|tower-sessions-min [N] [distinct|alice]"
        );
        std::process::exit(2);
    }

    let hwm_before = proc_status_bytes("VmHWM").expect("/proc/self/status");
    let rss_before = proc_status_bytes("VmRSS").expect("/proc/self/status");
    let started = Instant::now();
    let mut capacity = serde_json::Value::Null;
    // Keep the store alive until memory has been read.
    let _guard_store;
    let _ts_store;
    if mode == "guard" {
        let cap = support::capacity_for(n);
        capacity = cap.into();
        let store = MemoryStore::with_capacity(cap);
        support::guard_fill(&store, users, 0..n, SystemTime::now(), |_| Duration::ZERO);
        let missing = (0..n)
            .filter(|&i| {
                poll_now(store.load(support::guard_key(i)))
                    .expect("memory store")
                    .is_none()
            })
            .count();
        assert_eq!(missing, 0, "every session is held");
        _guard_store = Some(store);
    } else {
        let store = tower_sessions::MemoryStore::default();
        if mode == "tower-sessions" {
            support::ts_prefill(&store, users, 0..n);
        } else {
            for i in 0..n {
                let mut rec = support::ts_record(users, i);
                rec.data.clear();
                rec.data
                    .insert("user_id".to_owned(), users.user_id(i).into());
                poll_now(tower_sessions::SessionStore::create(&store, &mut rec))
                    .expect("memory store");
            }
        }
        let missing = (0..n)
            .filter(|&i| {
                let id = tower_sessions::session::Id(support::ts_id(i));
                poll_now(tower_sessions::SessionStore::load(&store, &id))
                    .expect("memory store")
                    .is_none()
            })
            .count();
        assert_eq!(missing, 0, "every session is held");
        _ts_store = Some(store);
    }
    let seconds = started.elapsed().as_secs_f64();
    let hwm_after = proc_status_bytes("VmHWM").expect("/proc/self/status");
    let rss_after = proc_status_bytes("VmRSS").expect("/proc/self/status");
    let per = |before: u64, after: u64| (after.saturating_sub(before)) as f64 / n as f64;
    let report = serde_json::json!({
        "mode": mode,
        "sessions": n,
        "users": if users == Users::Distinct { "distinct" } else { "alice" },
        "capacity": capacity,
        "vmhwm_before": hwm_before,
        "vmhwm_after": hwm_after,
        "vmrss_before": rss_before,
        "vmrss_after": rss_after,
        "bytes_per_session_peak": (per(hwm_before, hwm_after) * 10.0).round() / 10.0,
        "bytes_per_session_resident": (per(rss_before, rss_after) * 10.0).round() / 10.0,
        "fill_and_check_seconds": (seconds * 100.0).round() / 100.0,
    });
    println!("{report}");
}
