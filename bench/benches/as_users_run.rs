//! The layer's in-process cost as an application pays it (issue 14), next to a bare router
//! and tower-sessions, in one run:
//!
//! ```text
//! cd bench && cargo bench --bench as_users_run
//! ```
//!
//! What `benches/layer.rs` leaves out on purpose (it isolates the layer's own steps with a
//! simulated clock and a small store), this bench puts back, so that its ratios are the ones
//! an application sees and the ones the independent harness (`../shared/perf-anchor/`)
//! reports:
//!
//! * the **system clock** (a real `clock_gettime` per request), not a `ManualClock`;
//! * the client address as axum's **`ConnectInfo<SocketAddr>`**, as `axum::serve` with
//!   `into_make_service_with_connect_info` sets it, not the crate's own `PeerAddr`;
//! * a **store sized for a large site** (`MemoryStore::with_capacity(4_000_000)`);
//! * the demo's configuration: exact pin and a one-rule allow-mode `ValidationPolicy`;
//! * the **handler reads the user and answers JSON** (`{"user":"alice"}`), the same handler
//!   tail in every case; `guard_identity` reads through `Session::identity()` (the README's
//!   read), `guard_record` through `Session::record()`;
//! * every router is finished with `with_state(())`, as `axum::serve` does, and each request
//!   is built the same way (the `Cookie` header and the `ConnectInfo` extension) in every case.
//!
//! Overhead = case − `bare`; the summary prints the layer's overhead ÷ tower-sessions'.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use criterion::Criterion;
use tower::{Service, ServiceExt};
use tower_session_guard::{
    Identity, MemoryStore, PinMode, PolicyMode, Rule, Session, SessionGuardLayer, ValidationPolicy,
};

const USER: &str = "alice";

#[derive(serde::Serialize)]
struct Me<'a> {
    user: &'a str,
}

/// The handler tail every case shares.
fn me_response(user: &str) -> Response {
    Json(Me { user }).into_response()
}

/// One thing `benches/layer.rs` does differently, changed alone (the factor analysis).
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    AsUsersRun,
    ManualClock,
    DefaultStore,
}

fn guard_layer_with(variant: Variant) -> SessionGuardLayer {
    let policy = ValidationPolicy::builder()
        .mode(PolicyMode::Allow)
        .rule(
            Rule::new("users on loopback")
                .roles(["user"])
                .ip_ranges(["127.0.0.0/8"]),
        )
        .build()
        .expect("policy");
    let store = if variant == Variant::DefaultStore {
        MemoryStore::new()
    } else {
        MemoryStore::with_capacity(4_000_000)
    };
    let mut builder = SessionGuardLayer::builder(store)
        .pin_mode(PinMode::Exact)
        .policy(policy);
    if variant == Variant::ManualClock {
        builder = builder.clock(tower_session_guard::ManualClock::new());
    }
    builder.build().expect("layer")
}

async fn guard_login(session: Session) -> StatusCode {
    match session
        .login(Identity::new(USER).with_roles(["user"]))
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn guard_app(me: axum::routing::MethodRouter) -> Router {
    guard_app_with(me, Variant::AsUsersRun)
}

fn guard_app_with(me: axum::routing::MethodRouter, variant: Variant) -> Router {
    Router::new()
        .route("/me", me)
        .route("/login", post(guard_login))
        .layer(guard_layer_with(variant))
}

async fn me_record(session: Session) -> Response {
    match session
        .record()
        .as_deref()
        .and_then(|r| r.identity.as_ref())
    {
        Some(id) => me_response(&id.user_id),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// `guard_record` with a `ManualClock` (no `clock_gettime`), as `benches/layer.rs` runs.
fn guard_manual_clock_app() -> Router {
    guard_app_with(get(me_record), Variant::ManualClock)
}

/// `guard_record` on `MemoryStore::new()` (200 000 sessions) instead of a 4M store.
fn guard_default_store_app() -> Router {
    guard_app_with(get(me_record), Variant::DefaultStore)
}

/// The layer in front of a handler that takes the `Session` but answers a constant text
/// without reading it, against `bare_text`, the bare router answering the same text: the
/// layer's overhead without the handler's read and JSON.
fn guard_constant_app() -> Router {
    guard_app_with(
        get(|_session: Session| async { "alice" }),
        Variant::AsUsersRun,
    )
}

fn bare_text_app() -> Router {
    Router::new()
        .route("/me", get(|| async { "alice" }))
        .route("/login", post(|| async { StatusCode::NO_CONTENT }))
}

fn bare_app() -> Router {
    Router::new()
        .route("/me", get(|| async { me_response(USER) }))
        .route("/login", post(|| async { StatusCode::NO_CONTENT }))
}

fn guard_identity_app() -> Router {
    guard_app(get(|session: Session| async move {
        match session.identity() {
            Some(id) => me_response(&id.user_id),
            None => StatusCode::UNAUTHORIZED.into_response(),
        }
    }))
}

fn guard_record_app() -> Router {
    guard_app(get(|session: Session| async move {
        match session
            .record()
            .as_deref()
            .and_then(|r| r.identity.as_ref())
        {
            Some(id) => me_response(&id.user_id),
            None => StatusCode::UNAUTHORIZED.into_response(),
        }
    }))
}

fn tower_sessions_app() -> Router {
    use tower_sessions::{MemoryStore, Session, SessionManagerLayer};
    Router::new()
        .route(
            "/me",
            get(|session: Session| async move {
                match session.get::<String>("user").await {
                    Ok(Some(user)) => me_response(&user),
                    _ => StatusCode::UNAUTHORIZED.into_response(),
                }
            }),
        )
        .route(
            "/login",
            post(|session: Session| async move {
                let ok =
                    session.insert("user", USER).await.is_ok() && session.cycle_id().await.is_ok();
                if ok {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }),
        )
        .layer(SessionManagerLayer::new(MemoryStore::default()))
}

fn peer() -> ConnectInfo<SocketAddr> {
    ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)))
}

fn request(method: &str, uri: &str, cookie: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookie)
        .extension(peer())
        .body(Body::empty())
        .expect("a valid request")
}

type App = axum::routing::RouterIntoService<Body>;

async fn call(app: &mut App, req: Request<Body>) -> Response {
    let ready = ServiceExt::<Request<Body>>::ready(app).await;
    match ready {
        Ok(svc) => match svc.call(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        },
        Err(never) => match never {},
    }
}

/// Logs in through the app and returns the `name=value` of its cookie (a same-size dummy for
/// the bare router), checking that `GET /me` with it answers the user.
async fn login(app: &mut App) -> String {
    let res = call(app, request("POST", "/login", "id=AAAAAAAAAAAAAAAAAAAAAA")).await;
    assert!(res.status().is_success(), "login: {}", res.status());
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("id=AAAAAAAAAAAAAAAAAAAAAA")
        .to_owned();
    let res = call(app, request("GET", "/me", &cookie)).await;
    assert_eq!(res.status(), StatusCode::OK, "GET /me after login");
    let body = axum::body::to_bytes(res.into_body(), 1024)
        .await
        .expect("a small body");
    assert!(
        &body[..] == br#"{"user":"alice"}"# || &body[..] == b"alice",
        "GET /me answered {body:?}"
    );
    cookie
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args()
        .without_plots();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    type MakeApp = fn() -> Router;
    let cases: [(&str, MakeApp); 8] = [
        ("bare", bare_app),
        ("tower_sessions", tower_sessions_app),
        ("guard_identity", guard_identity_app),
        ("guard_record", guard_record_app),
        ("guard_manual_clock", guard_manual_clock_app),
        ("guard_default_store", guard_default_store_app),
        ("bare_text", bare_text_app),
        ("guard_constant", guard_constant_app),
    ];
    let mut group = c.benchmark_group("as_users_run");
    for (name, make) in cases {
        let mut app: App = make().with_state(()).into_service();
        let cookie = rt.block_on(login(&mut app));
        group.bench_function(name, |b| {
            b.iter(|| {
                let res = rt.block_on(call(&mut app, request("GET", "/me", &cookie)));
                black_box(res)
            })
        });
    }
    group.finish();
    c.final_summary();
    summary();
}

/// The overheads and their ratio, from the estimates criterion wrote in this run.
fn summary() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion/as_users_run");
    let median = |case: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(case).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("median")?.get("point_estimate")?.as_f64()
    };
    let Some(bare) = median("bare") else {
        println!("no estimates under {} (a filtered run?)", dir.display());
        return;
    };
    let ts = median("tower_sessions").map(|t| t - bare);
    println!("as_users_run: median ns per request, overhead = case - bare ({bare:.0} ns)");
    for case in ["tower_sessions", "guard_identity", "guard_record"] {
        if let Some(m) = median(case) {
            let ratio = ts.map_or("-".to_owned(), |t| format!("{:.2}", (m - bare) / t));
            println!(
                "  {case:<16} {m:>7.0} ns   overhead {:>6.0} ns   ÷ tower-sessions' overhead {ratio}",
                m - bare
            );
        }
    }
    // One factor at a time, against guard_record.
    if let Some(record) = median("guard_record") {
        println!("factors (each case differs from guard_record in one thing):");
        for (case, what) in [
            (
                "guard_manual_clock",
                "a ManualClock instead of the system clock",
            ),
            (
                "guard_default_store",
                "MemoryStore::new() instead of a 4M store",
            ),
        ] {
            if let Some(m) = median(case) {
                println!("  {case:<20} {:>+6.0} ns  ({what})", m - record);
            }
        }
        if let (Some(text), Some(constant)) = (median("bare_text"), median("guard_constant")) {
            println!(
                "  guard_constant - bare_text {:>6.0} ns  (the layer's overhead when the handler \
                 answers a constant without reading the session)",
                constant - text
            );
        }
    }
}
