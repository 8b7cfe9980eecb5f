//! Route guards are authorization, not session validation: 401 without a login, 403 without
//! the role or group, and the session survives both; the `Authenticated` extractor answers
//! 401 the same way. A guard without the session layer in front is a wiring error, said so.

mod common;

use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::Router;
use common::*;
use tower_session_guard::{
    require_group, require_login, require_role, Authenticated, MemoryStore, Rejection,
};

async fn whoami(Authenticated(user): Authenticated) -> String {
    user.user_id.clone()
}

fn guarded_app(h: &Harness) -> Router {
    Router::new()
        .route("/admin", get(|| async { "admin area" }))
        .route_layer(require_role("admin"))
        .route("/staff", get(|| async { "staff area" }))
        .route_layer(require_group("staff"))
        .route("/account", get(|| async { "your account" }))
        .route_layer(require_login())
        .route("/whoami", get(whoami))
        .merge(routes())
        .layer(h.builder(MemoryStore::new()).build().expect("valid config"))
}

#[tokio::test]
async fn without_a_login_every_guard_answers_401() {
    let h = Harness::new();
    let app = guarded_app(&h);
    for uri in ["/admin", "/staff", "/account", "/whoami"] {
        let res = call(&app, Method::GET, uri, None).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            token_of(&res),
            None,
            "{uri}: no session is created to refuse one"
        );
    }
}

#[tokio::test]
async fn the_wrong_role_is_403_and_the_session_survives_it() {
    let h = Harness::new();
    let app = guarded_app(&h);
    let bob = login_from(&app, CLIENT, "bob", &["user"], &["contractors"]).await;

    let res = call(&app, Method::GET, "/admin", Some(&bob)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::Forbidden)
    );
    assert!(!has_removal_cookie(&res), "a guard never ends the session");
    let res = call(&app, Method::GET, "/staff", Some(&bob)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Still logged in: the 403s ended nothing.
    for uri in ["/me", "/account", "/whoami"] {
        let res = call(&app, Method::GET, uri, Some(&bob)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
    }
    let res = call(&app, Method::GET, "/whoami", Some(&bob)).await;
    assert_eq!(body_text(res).await, "bob");
    assert!(
        !h.events
            .kinds()
            .iter()
            .any(|k| k.contains("denied") || *k == "revoked"),
        "{:?}",
        h.events.all()
    );
}

#[tokio::test]
async fn the_right_role_or_group_passes() {
    let h = Harness::new();
    let app = guarded_app(&h);
    let alice = login_from(&app, CLIENT, "alice", &["admin"], &["staff"]).await;
    for (uri, body) in [
        ("/admin", "admin area"),
        ("/staff", "staff area"),
        ("/account", "your account"),
        ("/whoami", "alice"),
    ] {
        let res = call(&app, Method::GET, uri, Some(&alice)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert_eq!(body_text(res).await, body, "{uri}");
    }
}

#[tokio::test]
async fn a_guard_without_the_session_layer_is_a_500_that_says_why() {
    let app: Router = Router::new()
        .route("/admin", get(|| async { "admin area" }))
        .route_layer(require_role("admin"));
    let res = call(&app, Method::GET, "/admin", None).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::MissingSessionLayer)
    );
}
