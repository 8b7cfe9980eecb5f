//! "Remember me" for one login (`LoginOptions::remember_me`): a persistent cookie whose
//! `Max-Age` is what is left of the login's own lifetime, the longer idle timeout of
//! remembered sessions, the cap, and everything that must still end such a session.

mod common;

use std::time::Duration;

use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use common::*;
use tower_session_guard::{
    ExpiryKind, Identity, LoginOptions, MemoryStore, Session, SessionError, SessionEvent,
    SessionGuardBuilder,
};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn remember(session: Session, Path(days): Path<u64>) -> Result<&'static str, SessionError> {
    let options = LoginOptions::new().remember_me(Duration::from_secs(days.saturating_mul(86_400)));
    session.login_with(Identity::new("alice"), options).await?;
    Ok("welcome back, for a while")
}

async fn remembered(session: Session) -> &'static str {
    if session.is_remembered() {
        "remembered"
    } else {
        "not remembered"
    }
}

fn remember_app(builder: SessionGuardBuilder) -> Router {
    Router::new()
        .route("/login-remember/{days}", post(remember))
        .route("/remembered", get(remembered))
        .merge(routes())
        .layer(builder.build().expect("valid config"))
}

fn max_age(res: &axum::http::Response<axum::body::Body>) -> Option<u64> {
    let cookie = set_cookies(res).into_iter().next()?;
    cookie
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
}

async fn me(app: &Router, token: &str) -> StatusCode {
    call(app, Method::GET, "/me", Some(token)).await.status()
}

#[tokio::test]
async fn a_remembered_login_gets_a_persistent_cookie_for_its_own_lifetime() {
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));

    let plain = call(&app, Method::POST, "/login", None).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        max_age(&plain),
        None,
        "a plain login keeps a session cookie"
    );

    let res = call(&app, Method::POST, "/login-remember/14", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(max_age(&res), Some(14 * 24 * 3600));
    let token = token_of(&res).unwrap();
    assert_eq!(
        call_text(&app, Method::GET, "/remembered", Some(&token)).await,
        (StatusCode::OK, "remembered".to_owned())
    );
    let plain = token_of(&plain).unwrap();
    assert_eq!(
        call_text(&app, Method::GET, "/remembered", Some(&plain)).await,
        (StatusCode::OK, "not remembered".to_owned())
    );

    // Past the plain idle timeout (30 min) and the plain absolute lifetime (8 h).
    h.clock.advance(2 * HOUR);
    assert_eq!(me(&app, &token).await, StatusCode::OK, "2 h idle");
    assert_eq!(me(&app, &plain).await, StatusCode::UNAUTHORIZED);
    h.clock.advance(10 * HOUR);
    assert_eq!(me(&app, &token).await, StatusCode::OK, "past 8 h");
}

#[tokio::test]
async fn a_remembered_login_still_ends_at_its_lifetime_and_after_a_week_idle() {
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));

    // Used every day: alive until the 14 days are over, not a second longer.
    let token = token_of(&call(&app, Method::POST, "/login-remember/14", None).await).unwrap();
    for day in 1..14 {
        h.clock.advance(DAY);
        assert_eq!(me(&app, &token).await, StatusCode::OK, "day {day}");
    }
    h.clock.advance(DAY);
    assert_eq!(me(&app, &token).await, StatusCode::UNAUTHORIZED, "day 14");
    assert!(h.events.all().iter().any(|e| matches!(
        e,
        SessionEvent::Expired {
            kind: ExpiryKind::Absolute,
            ..
        }
    )));

    // Left alone for more than the 7-day idle timeout of remembered sessions.
    h.events.clear();
    let token = token_of(&call(&app, Method::POST, "/login-remember/14", None).await).unwrap();
    h.clock.advance(6 * DAY);
    assert_eq!(me(&app, &token).await, StatusCode::OK, "6 days idle");
    h.clock.advance(7 * DAY + HOUR);
    assert_eq!(
        me(&app, &token).await,
        StatusCode::UNAUTHORIZED,
        "7 days idle"
    );
    assert!(h.events.all().iter().any(|e| matches!(
        e,
        SessionEvent::Expired {
            kind: ExpiryKind::Idle,
            ..
        }
    )));
}

#[tokio::test]
async fn the_lifetime_a_login_asks_for_is_capped() {
    // The default cap: 30 days, however long the application asks for.
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));
    let res = call(&app, Method::POST, "/login-remember/365", None).await;
    assert_eq!(max_age(&res), Some(30 * 24 * 3600));
    let token = token_of(&res).unwrap();
    for _ in 0..29 {
        h.clock.advance(DAY);
        assert_eq!(me(&app, &token).await, StatusCode::OK);
    }
    h.clock.advance(DAY);
    assert_eq!(me(&app, &token).await, StatusCode::UNAUTHORIZED);

    // A lower cap from the builder, and its own idle timeout.
    let h = Harness::new();
    let app = remember_app(
        h.builder(MemoryStore::new())
            .max_remember_me(2 * DAY)
            .remember_me_idle_timeout(DAY),
    );
    let res = call(&app, Method::POST, "/login-remember/14", None).await;
    assert_eq!(max_age(&res), Some(2 * 24 * 3600));
    let token = token_of(&res).unwrap();
    h.clock.advance(DAY + HOUR);
    assert_eq!(
        me(&app, &token).await,
        StatusCode::UNAUTHORIZED,
        "1 day idle"
    );

    // An enormous lifetime neither overflows nor panics: it is the cap.
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));
    let res = call(
        &app,
        Method::POST,
        "/login-remember/18446744073709551",
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(max_age(&res), Some(30 * 24 * 3600));
}

#[tokio::test]
async fn a_rotated_remembered_session_keeps_its_deadline_and_a_plain_relogin_drops_it() {
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));
    let token = token_of(&call(&app, Method::POST, "/login-remember/14", None).await).unwrap();

    h.clock.advance(DAY);
    let rotated = call(&app, Method::POST, "/rotate", Some(&token)).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(
        max_age(&rotated),
        Some(13 * 24 * 3600),
        "the new cookie lives as long as the login has left, not 14 days more"
    );
    let token = token_of(&rotated).unwrap();

    // A privilege change rotates too, and keeps the login remembered.
    let changed = call(&app, Method::POST, "/roles/admin", Some(&token)).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(max_age(&changed), Some(13 * 24 * 3600));
    let token = token_of(&changed).unwrap();

    // Logging in again without asking: a plain session, plain lifetimes.
    let relogin = call(&app, Method::POST, "/login", Some(&token)).await;
    assert_eq!(max_age(&relogin), None);
    let token = token_of(&relogin).unwrap();
    assert_eq!(
        call_text(&app, Method::GET, "/remembered", Some(&token))
            .await
            .1,
        "not remembered"
    );
    h.clock.advance(HOUR);
    assert_eq!(me(&app, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_ends_a_remembered_session_at_once() {
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));
    let token = token_of(&call(&app, Method::POST, "/login-remember/14", None).await).unwrap();
    let res = call(&app, Method::POST, "/logout", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(has_removal_cookie(&res));
    assert_eq!(me(&app, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_remembered_session_is_still_pinned() {
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));
    let token = token_of(&call(&app, Method::POST, "/login-remember/14", None).await).unwrap();
    let elsewhere = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(peer("203.0.113.9")),
        &[],
    )
    .await;
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        me(&app, &token).await,
        StatusCode::UNAUTHORIZED,
        "the replay from elsewhere ended it"
    );
}

#[tokio::test]
async fn a_zero_lifetime_asks_for_nothing() {
    let h = Harness::new();
    let app = remember_app(h.builder(MemoryStore::new()));
    let res = call(&app, Method::POST, "/login-remember/0", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(max_age(&res), None);
}

#[test]
fn a_remembered_idle_timeout_longer_than_the_cap_is_refused() {
    let refused = Harness::new()
        .builder(MemoryStore::new())
        .max_remember_me(DAY)
        .remember_me_idle_timeout(2 * DAY)
        .build();
    let Err(err) = refused else {
        panic!("an idle timeout longer than the cap was accepted")
    };
    assert!(err.to_string().contains("idle"), "{err}");
    assert!(Harness::new()
        .builder(MemoryStore::new())
        .max_remember_me(Duration::ZERO)
        .build()
        .is_err());
}
