//! A route guard without the session layer in front is a deployment bug: every request
//! answers 500, and a flood of them logs one ERROR, not one per request.
//!
//! Alone in its test binary: tracing caches each log site's interest for the whole process,
//! so a test that counts events through a thread's own subscriber is reliable only when no
//! other test thread meets the same log site first.

mod common;

use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::Router;
use common::*;
use tower_session_guard::require_role;

/// Counts the ERROR events of the current thread's subscriber.
#[derive(Clone, Default)]
struct ErrorCount(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorCount {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if *event.metadata().level() == tracing::Level::ERROR {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A miswired guard is a deployment bug: every request answers 500, but a flood of them logs
/// one ERROR, not one per request.
#[tokio::test(flavor = "current_thread")]
async fn a_miswired_guard_logs_one_error_not_one_per_request() {
    use tracing_subscriber::layer::SubscriberExt;
    let errors = ErrorCount::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));
    let app: Router = Router::new()
        .route("/admin", get(|| async { "admin area" }))
        .route_layer(require_role("admin"));
    for _ in 0..200 {
        let res = call(&app, Method::GET, "/admin", None).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(errors.0.load(std::sync::atomic::Ordering::Relaxed), 1);
}
