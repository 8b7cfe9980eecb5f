//! Failing closed when the store is down, answering gRPC clients in gRPC, and refusing
//! insecure configurations at build time.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::*;
use tower_session_guard::{
    ConfigError, MemoryStore, Rejection, SameSite, SessionEvent, SessionGuardLayer,
};

/// The standard app on a `FlakyStore`, with one logged-in token issued while the store was up.
async fn flaky_app() -> (Router, Harness, Arc<AtomicBool>, String) {
    let h = Harness::new();
    let store = FlakyStore::new(MemoryStore::new());
    let down = store.switch();
    let app = h.app(store);
    let token = login_token(&app, None).await;
    h.events.clear();
    down.store(true, Ordering::SeqCst);
    (app, h, down, token)
}

#[tokio::test]
async fn store_down_with_cookie_is_503_not_no_session() {
    let (app, _h, _down, token) = flaky_app().await;
    for (method, uri) in [
        (Method::GET, "/me"),
        (Method::GET, "/counter"),
        (Method::GET, "/health"),
        (Method::POST, "/logout"),
    ] {
        let res = call(&app, method, uri, Some(&token)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store", "{uri}");
        assert!(set_cookies(&res).is_empty(), "{uri}");
    }
}

#[tokio::test]
async fn store_down_without_cookie_leaves_session_free_routes_working() {
    let (app, h, _down, _token) = flaky_app().await;
    assert_eq!(
        call_text(&app, Method::GET, "/health", None).await,
        (StatusCode::OK, "ok".to_owned())
    );
    // A read of a session-less request needs no store either.
    assert_eq!(
        call_text(&app, Method::GET, "/counter", None).await,
        (StatusCode::OK, "0".to_owned())
    );
    assert!(h.events.all().is_empty(), "{:?}", h.events.all());
}

#[tokio::test]
async fn store_down_guest_write_is_503_without_cookie() {
    let (app, _h, _down, _token) = flaky_app().await;
    let res = call(&app, Method::POST, "/set/k/v", None).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(set_cookies(&res).is_empty());
}

#[tokio::test]
async fn store_down_grpc_request_gets_trailers_only_unavailable() {
    let (app, _h, _down, token) = flaky_app().await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/grpc.health.v1.Health/Check")
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let res = send(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/grpc");
    assert_eq!(res.headers()["grpc-message"], "session store unavailable");
    assert!(set_cookies(&res).is_empty());
    assert_eq!(body_text(res).await, "");
}

#[tokio::test]
async fn store_rejection_is_in_response_extensions() {
    let (app, _h, _down, token) = flaky_app().await;
    let res = call(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::StoreUnavailable)
    );
    // A response the handler produced carries none.
    let res = call(&app, Method::GET, "/health", None).await;
    assert_eq!(res.extensions().get::<Rejection>(), None);
}

#[tokio::test]
async fn store_failure_emits_store_failed_event() {
    let (app, h, _down, token) = flaky_app().await;
    let _ = call(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(
        h.events.all(),
        [SessionEvent::StoreFailed {
            session: Some(fp(&token)),
            error: "session store error: down".into(),
        }]
    );
}

#[tokio::test]
async fn session_survives_a_store_outage() {
    let (app, _h, down, token) = flaky_app().await;
    let res = call(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    down.store(false, Ordering::SeqCst);
    let res = call(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[test]
fn host_prefix_without_secure_is_refused() {
    let err = SessionGuardLayer::builder(MemoryStore::new())
        .secure(false)
        .build()
        .err();
    assert_eq!(err, Some(ConfigError::HostPrefixNeedsSecure));
}

#[test]
fn insecure_cookie_builds_only_without_a_prefix() {
    let built = SessionGuardLayer::builder(MemoryStore::new())
        .cookie_name("sid")
        .secure(false)
        .build();
    assert!(built.is_ok(), "{:?}", built.err());
}

#[test]
fn idle_timeout_longer_than_absolute_is_refused() {
    let err = SessionGuardLayer::builder(MemoryStore::new())
        .idle_timeout(Duration::from_secs(7200))
        .absolute_timeout(Duration::from_secs(3600))
        .build()
        .err();
    assert_eq!(
        err,
        Some(ConfigError::IdleLongerThanAbsolute {
            idle: Duration::from_secs(7200),
            absolute: Duration::from_secs(3600),
        })
    );
}

#[test]
fn same_site_none_without_secure_is_refused() {
    let err = SessionGuardLayer::builder(MemoryStore::new())
        .cookie_name("sid")
        .secure(false)
        .same_site(SameSite::None)
        .build()
        .err();
    assert_eq!(err, Some(ConfigError::SameSiteNoneNeedsSecure));
}
