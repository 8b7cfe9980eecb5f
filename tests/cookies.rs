//! What goes over the wire: `Set-Cookie` attributes, token shape, and how the layer reads
//! (and refuses to read) `Cookie` headers.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method, StatusCode};
use common::*;
use tower_session_guard::{MemoryStore, SessionEvent, MAX_COOKIE_HEADER};

/// Splits a `Set-Cookie` value into `name=value` and its attributes.
fn parse_set_cookie(s: &str) -> (String, Vec<String>) {
    let mut parts = s.split(';').map(|p| p.trim().to_owned());
    let pair = parts.next().unwrap();
    (pair, parts.collect())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[tokio::test]
async fn login_cookie_is_host_only_secure_httponly_lax_session_cookie() {
    let (app, _h) = default_app();
    let res = call(&app, Method::POST, "/login", None).await;
    assert_eq!(res.status(), StatusCode::OK);

    let cookies = set_cookies(&res);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let (pair, attrs) = parse_set_cookie(&cookies[0]);
    let token = token_of(&res).unwrap();
    assert_eq!(pair, format!("__Host-session={token}"));
    // Exactly these attributes: in particular no Domain, no Max-Age, no Expires.
    assert_eq!(
        sorted(attrs),
        ["HttpOnly", "Path=/", "SameSite=Lax", "Secure"]
    );
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn persistent_cookie_max_age_is_the_remaining_absolute_lifetime() {
    let h = Harness::new();
    let app = app(h
        .builder(MemoryStore::new())
        .persistent(true)
        .absolute_timeout(Duration::from_secs(3600))
        .idle_timeout(Duration::from_secs(600))
        .build()
        .unwrap());
    let res = call(&app, Method::POST, "/login", None).await;
    let (_, attrs) = parse_set_cookie(&set_cookies(&res)[0]);
    assert!(attrs.contains(&"Max-Age=3600".to_owned()), "{attrs:?}");
    assert!(attrs.contains(&"HttpOnly".to_owned()), "{attrs:?}");
    let token = token_of(&res).unwrap();

    // Rotation keeps the session's age, so the cookie's lifetime shrinks with it.
    h.clock.advance(Duration::from_secs(100));
    let res = call(&app, Method::POST, "/rotate", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, attrs) = parse_set_cookie(&set_cookies(&res)[0]);
    assert!(attrs.contains(&"Max-Age=3500".to_owned()), "{attrs:?}");
}

#[tokio::test]
async fn logout_sends_removal_cookie_with_same_attributes_and_max_age_zero() {
    let (app, _h) = default_app();
    let token = login_token(&app, None).await;
    let res = call(&app, Method::POST, "/logout", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");

    let cookies = set_cookies(&res);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let (pair, attrs) = parse_set_cookie(&cookies[0]);
    assert_eq!(pair, "__Host-session=");
    assert_eq!(token_of(&res), None);
    let (expires, rest): (Vec<String>, Vec<String>) =
        attrs.into_iter().partition(|a| a.starts_with("Expires="));
    assert_eq!(expires.len(), 1, "a past Expires for old browsers");
    assert_eq!(
        sorted(rest),
        ["HttpOnly", "Max-Age=0", "Path=/", "SameSite=Lax", "Secure"]
    );
}

#[tokio::test]
async fn issued_token_is_43_base64url_chars_and_never_one_the_request_carried() {
    let (app, _h) = default_app();
    let guest = guest_token(&app, "k", "v").await;
    assert_eq!(guest.len(), 43);
    assert!(is_base64url(&guest), "{guest}");

    let res = send(
        &app,
        request_with_cookie_headers(
            Method::POST,
            "/login",
            vec![
                HeaderValue::from_str(&format!("other={PLANTED}; {COOKIE}={guest}")).unwrap(),
                HeaderValue::from_str(&format!("{COOKIE}={PLANTED}")).unwrap(),
            ],
        ),
    )
    .await;
    let token = token_of(&res).unwrap();
    assert_eq!(token.len(), 43);
    assert!(is_base64url(&token), "{token}");
    assert_ne!(token, guest);
    assert_ne!(token, PLANTED);

    let rotated = token_of(&call(&app, Method::POST, "/rotate", Some(&token)).await).unwrap();
    assert_eq!(rotated.len(), 43);
    assert_ne!(rotated, token);
    assert_ne!(rotated, guest);
}

#[tokio::test]
async fn two_hundred_logins_give_two_hundred_distinct_tokens() {
    let (app, _h) = default_app();
    let mut seen = HashSet::new();
    for _ in 0..200 {
        seen.insert(login_token(&app, None).await);
    }
    assert_eq!(seen.len(), 200);
}

#[tokio::test]
async fn token_is_found_in_any_of_several_cookie_headers() {
    let (app, _h) = default_app();
    let token = login_token(&app, None).await;
    let res = send(
        &app,
        request_with_cookie_headers(
            Method::GET,
            "/me",
            vec![
                HeaderValue::from_static("theme=dark"),
                HeaderValue::from_static("lang=en; tz=UTC"),
                HeaderValue::from_str(&format!("{COOKIE}={token}")).unwrap(),
                HeaderValue::from_static("last=1"),
            ],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
    assert_eq!(body["user_id"], "alice");
}

#[tokio::test]
async fn malformed_oversized_and_non_utf8_cookies_are_no_session_never_an_error() {
    let h = Harness::new();
    let memory = MemoryStore::new();
    let app_plain = h.app(memory.clone());
    let token = login_token(&app_plain, None).await;

    let store = CountingStore::new(memory);
    let calls = store.counter();
    let app = h.app(store);

    let oversized = format!("pad={}; {COOKIE}={token}", "a".repeat(MAX_COOKIE_HEADER));
    let mut non_utf8 = b"\xff\xfe\xfd=".to_vec();
    non_utf8.extend_from_slice(format!("; {COOKIE}={token}").as_bytes());
    let cases: Vec<(&str, HeaderValue)> = vec![
        (
            "not a token",
            HeaderValue::from_static("__Host-session=not-a-token"),
        ),
        (
            "44 chars",
            HeaderValue::from_str(&format!("{COOKIE}={token}A")).unwrap(),
        ),
        (
            "42 chars",
            HeaderValue::from_str(&format!("{COOKIE}={}", &token[..42])).unwrap(),
        ),
        ("no value", HeaderValue::from_static("__Host-session")),
        ("separators", HeaderValue::from_static(";;;===;;")),
        ("empty", HeaderValue::from_static("")),
        ("oversized", HeaderValue::from_str(&oversized).unwrap()),
        ("non-utf8", HeaderValue::from_bytes(&non_utf8).unwrap()),
    ];
    for (name, value) in cases {
        let before = calls.load(Ordering::SeqCst);
        let res = send(
            &app,
            request_with_cookie_headers(Method::GET, "/counter", vec![value.clone()]),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert!(set_cookies(&res).is_empty(), "{name}");
        assert_eq!(body_text(res).await, "0", "{name}");

        let res = send(
            &app,
            request_with_cookie_headers(Method::GET, "/me", vec![value.clone()]),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}: no session");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "{name}: nothing that is not a well-formed token reaches the store"
        );

        // And a login through such a header works and issues a fresh token.
        let res = send(
            &app,
            request_with_cookie_headers(Method::POST, "/login", vec![value]),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_ne!(token_of(&res).unwrap(), token, "{name}");
    }
    // The real session behind those headers was never touched.
    let (status, _) = call_text(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn request_without_cookie_makes_no_store_call() {
    let h = Harness::new();
    let store = CountingStore::new(MemoryStore::new());
    let calls = store.counter();
    let app = h.app(store);

    for (method, uri) in [
        (Method::GET, "/health"),
        (Method::GET, "/me"),
        (Method::GET, "/counter"),
        (Method::GET, "/get/k"),
        (Method::POST, "/logout"),
        (Method::POST, "/rotate"),
    ] {
        let res = call(&app, method, uri, None).await;
        assert!(!res.status().is_server_error(), "{uri}");
        assert!(set_cookies(&res).is_empty(), "{uri}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(h.events.all().is_empty(), "{:?}", h.events.all());
}

#[tokio::test]
async fn read_without_session_creates_no_session_and_sets_no_cookie() {
    let h = Harness::new();
    let store = MemoryStore::new();
    let app = h.app(store.clone());

    let res = call(&app, Method::GET, "/get/k", None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(set_cookies(&res).is_empty());
    let res = call(&app, Method::GET, "/counter", None).await;
    assert!(set_cookies(&res).is_empty());
    assert!(res.headers().get(header::CACHE_CONTROL).is_none());
    assert_eq!(body_text(res).await, "0");

    assert_eq!(store.len(), 0);
    assert!(h.events.all().is_empty(), "{:?}", h.events.all());
}

#[tokio::test]
async fn reading_a_live_session_sends_no_set_cookie() {
    let (app, _h) = default_app();
    let token = guest_token(&app, "k", "v").await;
    let res = call(&app, Method::GET, "/get/k", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookies(&res).is_empty());
    assert_eq!(body_text(res).await, "v");
}

#[tokio::test]
async fn guest_write_creates_session_and_sets_cookie() {
    let h = Harness::new();
    let store = MemoryStore::new();
    let app = h.app(store.clone());

    let res = call(&app, Method::POST, "/set/colour/blue", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    let token = token_of(&res).expect("a guest write issues a cookie");
    assert_eq!(store.len(), 1);
    assert_eq!(
        h.events.all(),
        [SessionEvent::Created {
            session: fp(&token),
            client_ip: Some(common::CLIENT.ip()),
        }]
    );

    assert_eq!(
        call_text(&app, Method::GET, "/get/colour", Some(&token)).await,
        (StatusCode::OK, "blue".to_owned())
    );
    // A guest is not logged in.
    let (status, _) = call_text(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A routing tag is part of a token's name (a Redis Cluster store puts it in the key). The
/// memory store issues none, so a made-up tag in front of a live token is another token:
/// unknown here, never the same session under a second spelling. Found by the
/// `cookie_token` fuzz target.
#[tokio::test]
async fn a_made_up_routing_tag_in_front_of_a_live_token_is_no_session() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&token)).await.status(),
        StatusCode::OK
    );
    h.events.clear();
    for tag in ["AAA", "jjj", "_-0"] {
        let tagged = format!("{tag}{token}");
        let res = call(&app, Method::GET, "/me", Some(&tagged)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{tagged}");
    }
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&token)).await.status(),
        StatusCode::OK,
        "the real token still works"
    );
}
