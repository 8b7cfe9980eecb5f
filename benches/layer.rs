//! What the session layer costs per request, in process (no sockets), on a current-thread
//! tokio runtime.
//!
//! * `authenticated_get`: a bare axum `Router`, the same `Router` behind the layer with no
//!   cookie, and an authenticated `GET /me` that reads the identity and one value.
//! * `login`: a guest presenting its token logs in, which rotates the session to a new ID.
//!
//! `cargo bench --bench layer -- --quick`

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tower::ServiceExt;
use tower_session_guard::{
    Identity, MemoryStore, PeerAddr, Session, SessionError, SessionGuardLayer,
};

/// The login bench moves to a fresh application (and store) after this many logins, so a
/// store stays far below `MemoryStore`'s default capacity (200 000) and no eviction touches
/// the measurement.
const LOGINS_PER_STORE: usize = 50_000;

async fn hello() -> &'static str {
    "hello"
}

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session
        .login(Identity::new("alice").with_roles(["admin"]))
        .await?;
    Ok("welcome")
}

async fn set_theme(session: Session) -> Result<&'static str, SessionError> {
    session.insert("theme", "dark").await?;
    Ok("ok")
}

async fn me(session: Session) -> Result<String, SessionError> {
    let user = session.identity().map(|i| i.user_id).unwrap_or_default();
    let theme = session.get::<String>("theme")?.unwrap_or_default();
    Ok(format!("{user} {theme}"))
}

/// The bare application: one GET route with a fixed answer.
fn bare() -> Router {
    Router::new().route("/", get(hello))
}

/// The same application behind the layer, plus the session routes.
fn guarded() -> Router {
    bare()
        .route("/login", post(login))
        .route("/theme", post(set_theme))
        .route("/me", get(me))
        .layer(SessionGuardLayer::new(MemoryStore::new()))
}

fn cookie(token: &str) -> HeaderValue {
    HeaderValue::try_from(format!("__Host-session={token}")).expect("valid cookie header")
}

fn request(method: &str, uri: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie.clone());
    }
    // Connection info, as axum's `ConnectInfo` or tonic's `TcpConnectInfo` would give it.
    req.extension(PeerAddr(SocketAddr::from(([127, 0, 0, 1], 40000))))
        .body(Body::empty())
        .expect("valid request")
}

/// The token from the response's session `Set-Cookie`.
fn issued_token(res: &Response<Body>) -> String {
    assert_eq!(res.status(), StatusCode::OK);
    let set_cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .expect("a session cookie was issued")
        .to_str()
        .expect("ASCII Set-Cookie");
    let pair = set_cookie.split(';').next().unwrap_or_default();
    let token = pair
        .strip_prefix("__Host-session=")
        .expect("the session cookie");
    token.to_owned()
}

/// Drives a future that never waits to completion, outside any executor. criterion's
/// `iter_batched` setup is synchronous and runs inside the runtime's `block_on`, so it can
/// neither `.await` nor start a runtime; with `MemoryStore` (answers synchronously) and
/// these handlers nothing ever waits. `unconstrained` keeps tokio's cooperative budget from
/// forcing a yield during long setup batches.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(tokio::task::unconstrained(fut));
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("setup future waited; it must complete synchronously"),
    }
}

/// A fresh guest session on `app`: its token.
fn guest(app: &Router) -> HeaderValue {
    let res = now(app.clone().oneshot(request("POST", "/theme", None))).expect("infallible");
    cookie(&issued_token(&res))
}

fn authenticated_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let bare = bare();
    let guarded = guarded();

    // Log in once and store one value; check that /me sees both.
    let token = rt.block_on(async {
        let res = guarded
            .clone()
            .oneshot(request("POST", "/login", None))
            .await
            .expect("infallible");
        let token = cookie(&issued_token(&res));
        let res = guarded
            .clone()
            .oneshot(request("POST", "/theme", Some(&token)))
            .await
            .expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        let res = guarded
            .clone()
            .oneshot(request("GET", "/me", Some(&token)))
            .await
            .expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
        let body = axum::body::to_bytes(res.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"alice dark");
        token
    });

    let mut group = c.benchmark_group("authenticated_get");
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter(|| bare.clone().oneshot(request("GET", "/", None)))
    });
    group.bench_function("layer_no_cookie", |b| {
        b.to_async(&rt)
            .iter(|| guarded.clone().oneshot(request("GET", "/", None)))
    });
    group.bench_function("layer_authenticated", |b| {
        b.to_async(&rt)
            .iter(|| guarded.clone().oneshot(request("GET", "/me", Some(&token))))
    });
    group.finish();
}

fn login_rotation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");

    // Check once that the guest's login rotates: a new token, and the old one is dead.
    rt.block_on(async {
        let app = guarded();
        let old = guest(&app);
        let res = app
            .clone()
            .oneshot(request("POST", "/login", Some(&old)))
            .await
            .expect("infallible");
        let new = cookie(&issued_token(&res));
        assert_ne!(old, new);
        let res = app
            .clone()
            .oneshot(request("GET", "/me", Some(&old)))
            .await
            .expect("infallible");
        let body = axum::body::to_bytes(res.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b" ", "the guest token no longer opens a session");
    });

    let mut app = guarded();
    // The application before `app`, kept until the next switch so that its store (tens of
    // thousands of sessions) is dropped in setup, not by the last timed request using it.
    let mut _retired = None;
    let mut guests = 0;
    let mut group = c.benchmark_group("login");
    group.bench_function("guest_login_rotates", |b| {
        b.to_async(&rt).iter_batched(
            || {
                if guests == LOGINS_PER_STORE {
                    _retired = Some(std::mem::replace(&mut app, guarded()));
                    guests = 0;
                }
                guests += 1;
                let guest = guest(&app);
                (app.clone(), request("POST", "/login", Some(&guest)))
            },
            |(app, req)| app.oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, authenticated_get, login_rotation);
criterion_main!(benches);
