//! The servers of the HTTP load benchmark (`bench/http_load.sh`, issue 6): the same two
//! routes bare, behind this crate's layer, and behind tower-sessions.
//!
//! ```text
//! cargo build --release --manifest-path bench/Cargo.toml --bin load_server
//! bench/target/release/load_server bare|guard|tower-sessions [IP:PORT]
//! ```
//!
//! * `POST /login`: logs alice in (role admin, group staff) and sets the session cookie; bare
//!   answers `welcome` and sets nothing.
//! * `GET /me`: the logged-in user's id (`alice`), read from the session; bare answers the
//!   same constant.
//!
//! The layer runs as the demo does (`bench/src/lib.rs`: exact pin, the demo's allow-mode
//! validation policy, 30-minute idle timeout with its throttled activity touch, system clock);
//! tower-sessions with its defaults and its `MemoryStore`. Served with axum's
//! `into_make_service_with_connect_info`, on tokio's multi-threaded runtime with one worker per
//! core the process may use (so `taskset -c 0` gives one worker). No log subscriber: neither
//! middleware logs anything on these requests. Prints `ready MODE on ADDR` once listening.

use tsg_bench as support;

use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::Router;
use tower_session_guard::{Identity, MemoryStore, Session, SessionError, SystemClock};

async fn bare_login() -> &'static str {
    "welcome"
}

async fn bare_me() -> String {
    "alice".to_owned()
}

async fn guard_login(session: Session) -> Result<&'static str, SessionError> {
    session
        .login(
            Identity::new("alice")
                .with_roles(["admin"])
                .with_groups(["staff"]),
        )
        .await?;
    Ok("welcome")
}

async fn guard_me(session: Session) -> String {
    // `record()` shares the loaded record: the id is the only copy made.
    session
        .record()
        .and_then(|r| r.identity.as_ref().map(|i| i.user_id.clone()))
        .unwrap_or_default()
}

async fn ts_login(session: tower_sessions::Session) -> Result<&'static str, &'static str> {
    // What a login does with tower-sessions: a new id (no fixation), then the user.
    session.cycle_id().await.map_err(|_| "store error")?;
    session
        .insert(
            support::TS_USER_KEY,
            support::TsUser::of(support::Users::Alice, 0),
        )
        .await
        .map_err(|_| "store error")?;
    Ok("welcome")
}

async fn ts_me(session: tower_sessions::Session) -> String {
    session
        .get::<support::TsUser>(support::TS_USER_KEY)
        .await
        .ok()
        .flatten()
        .map(|u| u.user_id)
        .unwrap_or_default()
}

fn app(mode: &str) -> Option<Router> {
    Some(match mode {
        "bare" => Router::new()
            .route("/login", post(bare_login))
            .route("/me", get(bare_me)),
        "guard" => Router::new()
            .route("/login", post(guard_login))
            .route("/me", get(guard_me))
            .layer(support::guard_layer(
                MemoryStore::new(),
                SystemClock,
                tower_session_guard::config::DEFAULT_ABSOLUTE_TIMEOUT,
            )),
        "tower-sessions" => Router::new()
            .route("/login", post(ts_login))
            .route("/me", get(ts_me))
            .layer(tower_sessions::SessionManagerLayer::new(
                tower_sessions::MemoryStore::default(),
            )),
        _ => return None,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".to_owned());
    let Some(app) = app(&mode) else {
        eprintln!("usage: load_server bare|guard|tower-sessions [IP:PORT]");
        std::process::exit(2);
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("ready {mode} on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
