//! The applications of `benches/as_users_run.rs` and `src/bin/as_users_interleaved.rs`
//! (issue 14): the same tiny axum app bare, behind tower-sessions, behind this crate as the
//! demo runs it, and behind the floor layers of [`crate::floor`], each built the way
//! `axum::serve` runs it, with requests built the same way in every case.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower::{Service, ServiceExt};
use tower_session_guard::{
    Identity, MemoryStore, PinMode, PolicyMode, Rule, Session, SessionGuardLayer, ValidationPolicy,
};

use crate::floor::{floor_app, identity_app, one_extension_app, Floor, Lookup};
use crate::{me_response, USER};

/// A case: its name and how to build its router.
pub type Case = (&'static str, fn() -> Router);

/// Every case, `bare` first. The floor cases (`floor_*`, see [`crate::floor`]) are lower
/// bounds, not session layers.
pub const CASES: [Case; 14] = [
    ("bare", bare_app),
    ("tower_sessions", tower_sessions_app),
    ("guard_identity", guard_identity_app),
    ("guard_record", guard_record_app),
    ("guard_manual_clock", guard_manual_clock_app),
    ("guard_default_store", guard_default_store_app),
    ("bare_text", bare_text_app),
    ("guard_constant", guard_constant_app),
    ("floor_identity_layer", identity_app),
    ("floor_one_extension", one_extension_app),
    ("floor_no_hash_clock_store", || {
        floor_app(Floor {
            hash: false,
            clock: false,
            lookup: Lookup::One,
        })
    }),
    ("floor_no_store", || {
        floor_app(Floor {
            hash: true,
            clock: true,
            lookup: Lookup::One,
        })
    }),
    ("floor_moka", || {
        floor_app(Floor {
            hash: true,
            clock: true,
            lookup: Lookup::Moka,
        })
    }),
    ("floor_rwlock_map", || {
        floor_app(Floor {
            hash: true,
            clock: true,
            lookup: Lookup::Map,
        })
    }),
];

/// What the floor cases add, one step at a time, for the summaries.
pub const FLOOR_STEPS: [(&str, &str); 6] = [
    ("floor_identity_layer", "a Router::layer that does nothing"),
    (
        "floor_one_extension",
        "+ one shared value in the extensions, read by the handler",
    ),
    (
        "floor_no_hash_clock_store",
        "+ cookie, base64, pin, role, range, per-request handle",
    ),
    (
        "floor_no_store",
        "+ SHA-256 of the token and the system clock",
    ),
    (
        "floor_moka",
        "+ one moka get: the work the design asks, nothing else",
    ),
    (
        "floor_rwlock_map",
        "the same with a sharded RwLock<HashMap> instead of moka",
    ),
];

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

/// The bare router: `GET /me` answers the same JSON as every case, with no layer.
pub fn bare_app() -> Router {
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
    guard_app(get(me_record))
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

pub fn request(method: &str, uri: &str, cookie: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookie)
        .extension(peer())
        .body(Body::empty())
        .expect("a valid request")
}

/// A case's router, finished as `axum::serve` finishes it.
pub type App = axum::routing::RouterIntoService<Body>;

/// One request through `app`.
pub async fn call(app: &mut App, req: Request<Body>) -> Response {
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
pub async fn login(app: &mut App) -> String {
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
