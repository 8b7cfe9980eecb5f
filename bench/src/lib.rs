//! What the benchmarks share (issue 6): the bench binary `bench/benches/layer.rs`, the HTTP load
//! servers `bench/src/bin/load_server.rs` and the memory probe `bench/src/bin/mem_sessions.rs` include
//! this file with `#[path]`, so all three measure the same configuration and the same records.
//!
//! * The layer as the demo runs it: pin [`PinMode::Exact`] (the default), the demo's
//!   validation policy in allow mode (the same rules as `demo_policy()` in
//!   `examples/common/mod.rs`, rebuilt here so the benches do not depend on the demo's flags),
//!   default idle timeout (30 min, so an activity touch at most every 90 s).
//! * Authenticated records as a login writes them: user id (alice, or one user per session:
//!   `user0000042`), role admin, group staff, pinned to 127.0.0.1, no user agent, no data.
//! * tower-sessions records with the same facts in its session data: the user id, roles and
//!   groups as one typed value under `"user"`.
//! * Tokens derived from a session's number, so a benchmark can build the cookie of session
//!   `i` on the fly (a few ns, no memory access) instead of keeping a million cookies around
//!   whose cache misses would be charged to the layer.
#![allow(dead_code)] // each user of this file takes a different part

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tower_session_guard::store::{SessionKey, SessionStore, WriteOutcome};
use tower_session_guard::{
    Clock, Identity, MemoryStore, PinMode, PolicyMode, RateLimit, Rule, SessionGuardLayer,
    SessionRecord, ValidationPolicy,
};

/// The layer's cookie name (its default).
pub const GUARD_COOKIE: &str = "__Host-session";
/// tower-sessions' cookie name (its default).
pub const TS_COOKIE: &str = "id";
/// The layer's default idle timeout, and the touch interval that follows from it (idle / 20).
pub const IDLE: Duration = Duration::from_secs(30 * 60);
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(90);
/// The address every benchmark session is pinned to and every request comes from.
pub const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The demo's session validation policy (`examples/common/mod.rs`, `demo_policy()`): allow
/// mode; admins only from 127.0.0.1 or ::1, users from 127.0.0.0/8 or ::1.
pub fn demo_policy() -> ValidationPolicy {
    ValidationPolicy::builder()
        .mode(PolicyMode::Allow)
        .rule(
            Rule::new("admins from the console host")
                .roles(["admin"])
                .ip_ranges(["127.0.0.1/32", "::1/128"]),
        )
        .rule(
            Rule::new("users on loopback")
                .roles(["user"])
                .ip_ranges(["127.0.0.0/8", "::1/128"]),
        )
        .build()
        .expect("valid demo policy")
}

/// The layer as measured: exact pin (the default, set explicitly), the demo policy, the given
/// clock and absolute lifetime, every other setting at its default.
pub fn guard_layer(
    store: impl SessionStore,
    clock: impl Clock,
    absolute: Duration,
) -> SessionGuardLayer<ValidationPolicy> {
    SessionGuardLayer::builder(store)
        .pin_mode(PinMode::Exact)
        .idle_timeout(IDLE)
        .absolute_timeout(absolute)
        .clock(clock)
        // Every request of the bench comes from one address. A budget that never runs out
        // keeps the per-address limiter's cost in the measurement; the default (300 a
        // minute) would answer most guest writes with a cheaper 429 and flatter the figure.
        .guest_creation_limit(Some(RateLimit {
            max: u32::MAX,
            per: Duration::from_secs(60),
        }))
        .policy(demo_policy())
        .build()
        .expect("valid session settings")
}

/// The `MemoryStore` capacity for `n` sessions, with headroom. Up to commit c98b8c7 the
/// store's bound was per shard and, filled to capacity, evicted a few percent early (68 of
/// 1 000, 256 of 10 000, 887 of 100 000 sessions; e1bda08 made it global). The benches keep
/// the headroom and check that every session is still there, so an early eviction fails
/// loudly instead of shrinking the store under test.
pub fn capacity_for(n: u64) -> u64 {
    if n < 100_000 {
        2 * n + 1_000
    } else {
        n + n / 10
    }
}

/// Who session `i` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Users {
    /// Every session is alice's (role admin, group staff). Slow to fill with many sessions
    /// while the store's per-user index is a list (each create scans it).
    Alice,
    /// Session `i` is user `user0000042`-style, one user per session (role admin, group
    /// staff): the per-user index then holds one entry per session.
    Distinct,
}

impl Users {
    pub fn parse(s: &str) -> Option<Users> {
        match s {
            "alice" => Some(Users::Alice),
            "distinct" => Some(Users::Distinct),
            _ => None,
        }
    }

    pub fn user_id(self, i: u64) -> String {
        match self {
            Users::Alice => "alice".to_owned(),
            Users::Distinct => format!("user{i:07}"),
        }
    }
}

/// splitmix64: a bijective 64-bit mix, so distinct inputs give distinct outputs.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 32 token bytes of session `i` (the first 8 are a bijection of `i`: no collisions).
pub fn token_bytes(i: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (j, chunk) in out.chunks_exact_mut(8).enumerate() {
        chunk
            .copy_from_slice(&mix(i.wrapping_mul(4).wrapping_add(j as u64) ^ 0x5e55).to_le_bytes());
    }
    out[..8].copy_from_slice(&mix(i).to_le_bytes());
    out
}

/// `__Host-session=<43 base64url characters>`: the Cookie header of session `i`.
pub fn guard_cookie(i: u64, buf: &mut [u8; 58]) -> &[u8] {
    buf[..15].copy_from_slice(b"__Host-session=");
    let n = URL_SAFE_NO_PAD
        .encode_slice(token_bytes(i), &mut buf[15..])
        .expect("43 characters");
    debug_assert_eq!(n, 43);
    &buf[..]
}

/// The store key of session `i` (SHA-256 of its token bytes, as the layer computes it).
pub fn guard_key(i: u64) -> SessionKey {
    let mut buf = [0u8; 58];
    let cookie = guard_cookie(i, &mut buf);
    let token = std::str::from_utf8(&cookie[15..]).expect("ASCII");
    SessionKey::from_token_str(token).expect("a well-formed token")
}

/// An authenticated record as `Session::login` writes it: version 1, logged in at
/// `logged_in`, last activity at `last_seen`, pinned to [`CLIENT_IP`], no user agent, no data.
pub fn guard_record(
    users: Users,
    i: u64,
    logged_in: SystemTime,
    last_seen: SystemTime,
) -> SessionRecord {
    let mut rec = SessionRecord::new(logged_in);
    rec.last_seen = last_seen;
    rec.authenticated_at = Some(logged_in);
    rec.identity = Some(
        Identity::new(users.user_id(i))
            .with_roles(["admin"])
            .with_groups(["staff"]),
    );
    rec.pinned_ip = Some(CLIENT_IP);
    rec
}

/// Puts sessions `range` into `store` through `SessionStore::create` (as a login would, minus
/// the request), on every core. Session `i` last touched `phase(i)` before `now`, so touches
/// are spread.
pub fn guard_prefill(
    store: &MemoryStore,
    users: Users,
    range: std::ops::Range<u64>,
    now: SystemTime,
    phase: impl Fn(u64) -> Duration + Sync,
) {
    let fill = |part: std::ops::Range<u64>| guard_fill(store, users, part, now, &phase);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    if range.end - range.start < 10_000 || threads == 1 {
        return fill(range);
    }
    let per = (range.end - range.start).div_ceil(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let start = range.start + t * per;
            let part = start..(start + per).min(range.end);
            s.spawn(move || fill(part));
        }
    });
}

/// [`guard_prefill`] on the calling thread only.
pub fn guard_fill(
    store: &MemoryStore,
    users: Users,
    range: std::ops::Range<u64>,
    now: SystemTime,
    phase: impl Fn(u64) -> Duration,
) {
    let logged_in = now - Duration::from_secs(600);
    for i in range {
        let last_seen = now - phase(i);
        let rec = Arc::new(guard_record(users, i, logged_in, last_seen));
        // What the layer would give: the idle deadline from the last activity, plus the
        // store's retention margin (60 s), counted from now.
        let ttl = IDLE - phase(i) + Duration::from_secs(60);
        let written = poll_now(store.create(guard_key(i), rec, ttl)).expect("memory store");
        assert_eq!(written, WriteOutcome::Applied, "session {i} created once");
    }
}

/// tower-sessions' session id of session `i` (an `i128`, like its random ids).
pub fn ts_id(i: u64) -> i128 {
    let hi = mix(i ^ 0x7533_0000_0000_0000);
    let lo = mix(i);
    (i128::from(hi) << 64) | i128::from(lo)
}

/// `id=<22 base64url characters>`: tower-sessions' Cookie header of session `i`.
pub fn ts_cookie(i: u64, buf: &mut [u8; 25]) -> &[u8] {
    buf[..3].copy_from_slice(b"id=");
    let n = URL_SAFE_NO_PAD
        .encode_slice(ts_id(i).to_le_bytes(), &mut buf[3..])
        .expect("22 characters");
    debug_assert_eq!(n, 22);
    &buf[..]
}

/// What an application keeps in a tower-sessions session to know who is logged in: the same
/// facts as the layer's `Identity`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TsUser {
    pub user_id: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

impl TsUser {
    pub fn of(users: Users, i: u64) -> TsUser {
        TsUser {
            user_id: users.user_id(i),
            roles: vec!["admin".to_owned()],
            groups: vec!["staff".to_owned()],
        }
    }
}

/// tower-sessions' key for [`TsUser`].
pub const TS_USER_KEY: &str = "user";

/// A tower-sessions record for session `i`, as its session middleware saves it after a login
/// handler inserted the user: expiry at its default (two weeks from now: no `with_expiry`).
pub fn ts_record(users: Users, i: u64) -> tower_sessions::session::Record {
    let value = serde_json::to_value(TsUser::of(users, i)).expect("serializable");
    tower_sessions::session::Record {
        id: tower_sessions::session::Id(ts_id(i)),
        data: HashMap::from([(TS_USER_KEY.to_owned(), value)]),
        expiry_date: tower_sessions::cookie::time::OffsetDateTime::now_utc()
            + tower_sessions::cookie::time::Duration::weeks(2),
    }
}

/// Puts sessions `range` into tower-sessions' `MemoryStore` through its `SessionStore::create`.
pub fn ts_prefill(store: &tower_sessions::MemoryStore, users: Users, range: std::ops::Range<u64>) {
    use tower_sessions::SessionStore as _;
    for i in range {
        let mut rec = ts_record(users, i);
        poll_now(store.create(&mut rec)).expect("memory store");
        assert_eq!(rec.id.0, ts_id(i), "session {i} kept its id");
    }
}

/// Drives a future that never waits to completion, outside any executor (both memory stores
/// answer without waiting when uncontended). `unconstrained` keeps tokio's cooperative
/// budget (its `Mutex` takes part in it) from forcing a yield during long loops.
pub fn poll_now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(tokio::task::unconstrained(fut));
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("future waited; it must complete synchronously"),
    }
}

/// Reads one field of `/proc/self/status` (`VmHWM`, `VmRSS`), in bytes.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub mod as_users;
pub mod floor;

/// The user every `as_users_run` case logs in.
pub const USER: &str = "alice";

#[derive(serde::Serialize)]
struct Me<'a> {
    user: &'a str,
}

/// The handler tail every `as_users_run` case shares: `{"user":"alice"}` as JSON.
pub fn me_response(user: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(Me { user }).into_response()
}
