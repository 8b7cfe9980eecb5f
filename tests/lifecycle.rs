//! A session's life: fixation defence at login, rotation, logout, idle and absolute expiry,
//! and what the audit events say about it.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use tower_session_guard::{ExpiryKind, MemoryStore, SessionEvent};

fn app_with_timeouts(h: &Harness, idle: Duration, absolute: Duration) -> axum::Router {
    app(h
        .builder(MemoryStore::new())
        .idle_timeout(idle)
        .absolute_timeout(absolute)
        .build()
        .unwrap())
}

async fn status(app: &axum::Router, method: Method, uri: &str, token: &str) -> StatusCode {
    call(app, method, uri, Some(token)).await.status()
}

#[tokio::test]
async fn planted_unknown_token_is_not_adopted_at_login() {
    let (app, h) = default_app();
    let res = call(&app, Method::POST, "/login", Some(PLANTED)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let token = token_of(&res).unwrap();
    assert_ne!(token, PLANTED);

    assert_eq!(
        status(&app, Method::GET, "/me", PLANTED).await,
        StatusCode::UNAUTHORIZED,
        "the planted token stays unknown"
    );
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::OK
    );

    let events = h.events.all();
    assert_eq!(
        events[..2],
        [
            SessionEvent::UnknownToken {
                session: fp(PLANTED),
                client_ip: Some(common::CLIENT.ip()),
            },
            SessionEvent::LoggedIn {
                session: fp(&token),
                previous: None,
                user_id: "alice".into(),
                client_ip: Some(common::CLIENT.ip()),
            },
        ]
    );
}

#[tokio::test]
async fn planted_unknown_token_is_not_adopted_by_a_guest_write() {
    let (app, _h) = default_app();
    let res = call(&app, Method::POST, "/set/k/v", Some(PLANTED)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let token = token_of(&res).unwrap();
    assert_ne!(token, PLANTED);
    assert_eq!(
        status(&app, Method::GET, "/get/k", PLANTED).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call_text(&app, Method::GET, "/get/k", Some(&token)).await,
        (StatusCode::OK, "v".to_owned())
    );
}

#[tokio::test]
async fn guest_token_is_dead_after_login_and_the_new_one_works() {
    let (app, h) = default_app();
    let guest = token_of(&call(&app, Method::POST, "/counter", None).await).unwrap();
    for expected in ["2", "3"] {
        assert_eq!(
            call_text(&app, Method::POST, "/counter", Some(&guest)).await,
            (StatusCode::OK, expected.to_owned())
        );
    }

    let token = login_token(&app, Some(&guest)).await;
    assert_ne!(token, guest);

    assert_eq!(
        status(&app, Method::GET, "/me", &guest).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_text(&app, Method::GET, "/counter", Some(&guest)).await,
        (StatusCode::OK, "0".to_owned())
    );
    let (status, body) = call_text(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let me: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["user_id"], "alice");
    assert_eq!(me["roles"], serde_json::json!(["admin"]));

    assert!(h.events.all().contains(&SessionEvent::LoggedIn {
        session: fp(&token),
        previous: Some(fp(&guest)),
        user_id: "alice".into(),
        client_ip: Some(common::CLIENT.ip()),
    }));
}

#[tokio::test]
async fn guest_data_survives_login() {
    let (app, _h) = default_app();
    let guest = guest_token(&app, "cart", "book").await;
    assert_eq!(
        call_text(&app, Method::POST, "/counter", Some(&guest)).await,
        (StatusCode::OK, "1".to_owned())
    );
    let token = login_token(&app, Some(&guest)).await;
    assert_eq!(
        call_text(&app, Method::GET, "/get/cart", Some(&token)).await,
        (StatusCode::OK, "book".to_owned())
    );
    assert_eq!(
        call_text(&app, Method::GET, "/counter", Some(&token)).await,
        (StatusCode::OK, "1".to_owned())
    );
}

#[tokio::test]
async fn replayed_token_after_logout_is_refused_and_not_revived() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    assert_eq!(
        status(&app, Method::POST, "/logout", &token).await,
        StatusCode::OK
    );
    assert!(h.events.all().contains(&SessionEvent::LoggedOut {
        session: fp(&token),
        user_id: Some("alice".into()),
    }));

    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::UNAUTHORIZED
    );
    // A write with the dead token starts a new guest session under a new token.
    let res = call(&app, Method::POST, "/set/k/v", Some(&token)).await;
    let fresh = token_of(&res).unwrap();
    assert_ne!(fresh, token);
    assert_eq!(
        status(&app, Method::GET, "/get/k", &token).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn idle_session_expires_and_activity_extends_it() {
    let h = Harness::new();
    let app = app_with_timeouts(&h, Duration::from_secs(60), Duration::from_secs(3600));
    let token = login_token(&app, None).await;

    h.clock.advance(Duration::from_secs(59));
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::OK
    );
    // 118 s after login, but only 59 s after the last activity.
    h.clock.advance(Duration::from_secs(59));
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::OK,
        "activity extends the idle deadline"
    );

    h.clock.advance(Duration::from_secs(61));
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(h.events.all().contains(&SessionEvent::Expired {
        session: fp(&token),
        kind: ExpiryKind::Idle,
        user_id: Some("alice".into()),
    }));
    // Expired is final: going back in activity does not help.
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn reads_every_second_keep_a_two_second_idle_session_alive() {
    let h = Harness::new();
    let app = app_with_timeouts(&h, Duration::from_secs(2), Duration::from_secs(3600));
    let token = login_token(&app, None).await;
    for second in 1..=10 {
        h.clock.advance(Duration::from_secs(1));
        assert_eq!(
            status(&app, Method::GET, "/me", &token).await,
            StatusCode::OK,
            "at {second} s"
        );
    }
    assert!(
        !h.events.kinds().contains(&"expired"),
        "{:?}",
        h.events.all()
    );
}

#[tokio::test]
async fn absolute_lifetime_ends_the_session_despite_activity() {
    let h = Harness::new();
    let app = app_with_timeouts(&h, Duration::from_secs(600), Duration::from_secs(1800));
    let token = login_token(&app, None).await;

    for minute in [5, 10, 15, 20, 25] {
        h.clock.advance(Duration::from_secs(300));
        assert_eq!(
            call_text(&app, Method::POST, "/counter", Some(&token))
                .await
                .0,
            StatusCode::OK,
            "at {minute} min"
        );
    }
    h.clock.advance(Duration::from_secs(299));
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::OK,
        "one second before the absolute deadline"
    );
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(
        status(&app, Method::GET, "/me", &token).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(h.events.all().contains(&SessionEvent::Expired {
        session: fp(&token),
        kind: ExpiryKind::Absolute,
        user_id: Some("alice".into()),
    }));
}

#[tokio::test]
async fn rotate_issues_new_token_and_kills_the_old_one() {
    let (app, h) = default_app();
    let old = login_token(&app, None).await;
    let _ = call(&app, Method::POST, "/set/k/v", Some(&old)).await;

    let res = call(&app, Method::POST, "/rotate", Some(&old)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let new = token_of(&res).unwrap();
    assert_ne!(new, old);

    assert_eq!(
        status(&app, Method::GET, "/me", &old).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&app, Method::GET, "/get/k", &old).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(&app, Method::GET, "/me", &new).await, StatusCode::OK);
    assert_eq!(
        call_text(&app, Method::GET, "/get/k", Some(&new)).await,
        (StatusCode::OK, "v".to_owned())
    );
    assert!(h.events.all().contains(&SessionEvent::Rotated {
        from: fp(&old),
        to: fp(&new),
        user_id: Some("alice".into()),
    }));
}

#[tokio::test]
async fn events_carry_fingerprints_and_never_the_raw_token() {
    let h = Harness::new();
    let app = app_with_timeouts(&h, Duration::from_secs(60), Duration::from_secs(3600));

    let guest = guest_token(&app, "k", "v").await;
    let user = login_token(&app, Some(&guest)).await;
    let rotated = token_of(&call(&app, Method::POST, "/rotate", Some(&user)).await).unwrap();
    let _ = call(&app, Method::POST, "/logout", Some(&rotated)).await;
    let _ = call(&app, Method::GET, "/me", Some(&rotated)).await; // unknown now
    let idle = login_token(&app, None).await;
    h.clock.advance(Duration::from_secs(61));
    let _ = call(&app, Method::GET, "/me", Some(&idle)).await; // expired

    let events = h.events.all();
    assert_eq!(
        h.events.kinds(),
        [
            "created",
            "logged_in",
            "rotated",
            "logged_out",
            "unknown_token",
            "logged_in",
            "expired"
        ]
    );
    let tokens = [&guest, &user, &rotated, &idle];
    for event in &events {
        let shown = format!("{event:?} {event}");
        for token in tokens {
            assert!(!shown.contains(token.as_str()), "{shown}");
        }
    }
    assert_eq!(
        events,
        [
            SessionEvent::Created {
                session: fp(&guest),
                client_ip: Some(common::CLIENT.ip()),
            },
            SessionEvent::LoggedIn {
                session: fp(&user),
                previous: Some(fp(&guest)),
                user_id: "alice".into(),
                client_ip: Some(common::CLIENT.ip()),
            },
            SessionEvent::Rotated {
                from: fp(&user),
                to: fp(&rotated),
                user_id: Some("alice".into()),
            },
            SessionEvent::LoggedOut {
                session: fp(&rotated),
                user_id: Some("alice".into()),
            },
            SessionEvent::UnknownToken {
                session: fp(&rotated),
                client_ip: Some(common::CLIENT.ip()),
            },
            SessionEvent::LoggedIn {
                session: fp(&idle),
                previous: None,
                user_id: "alice".into(),
                client_ip: Some(common::CLIENT.ip()),
            },
            SessionEvent::Expired {
                session: fp(&idle),
                kind: ExpiryKind::Idle,
                user_id: Some("alice".into()),
            },
        ]
    );
    // The Display form names sessions by their 16-hex-digit fingerprint.
    let shown = events[1].to_string();
    assert!(
        shown.contains(&format!("\"session\":\"{}\"", fp(&user))),
        "{shown}"
    );
    assert_eq!(fp(&user).to_string().len(), 16);
}

#[tokio::test]
async fn login_as_another_user_drops_the_previous_users_data() {
    let (app, _h) = default_app();
    let alice = login_token(&app, None).await;
    let _ = call(&app, Method::POST, "/set/secret/alices", Some(&alice)).await;

    // Same user again: a new ID, same data.
    let alice2 = login_token(&app, Some(&alice)).await;
    assert_eq!(
        call_text(&app, Method::GET, "/get/secret", Some(&alice2)).await,
        (StatusCode::OK, "alices".to_owned())
    );

    let res = call(&app, Method::POST, "/login/bob", Some(&alice2)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let bob = token_of(&res).unwrap();
    assert_ne!(bob, alice2);
    assert_eq!(
        status(&app, Method::GET, "/get/secret", &bob).await,
        StatusCode::NOT_FOUND
    );
    let (_, body) = call_text(&app, Method::GET, "/me", Some(&bob)).await;
    let me: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["user_id"], "bob");
    assert_eq!(
        status(&app, Method::GET, "/me", &alice2).await,
        StatusCode::UNAUTHORIZED
    );
}
