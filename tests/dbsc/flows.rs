//! What a real browser does: register, refresh, rotate, log out, or never bind at all.

use super::*;

pub(crate) async fn the_browser_registers_refreshes_and_carries_on(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    assert_eq!(chrome.registration.as_ref().unwrap().0, REGISTRATION);
    // Before registering, the session works as any other.
    assert_eq!(chrome.get_me().await, StatusCode::OK);

    let r = chrome.register().await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["refresh_url"], REFRESH);
    assert_eq!(
        body["scope"],
        json!({"include_site": false, "scope_specification": []})
    );
    let cred = &body["credentials"][0];
    assert_eq!(
        (cred["type"].as_str(), cred["name"].as_str()),
        (Some("cookie"), Some(BOUND))
    );
    // The JSON's attributes are the Set-Cookie's, byte for byte, up to its Max-Age (the
    // expiry is no part of what the browser compares; Chromium 156 refuses it there).
    let set_cookie = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(BOUND))
        .unwrap();
    let attributes = cred["attributes"].as_str().unwrap();
    assert_eq!(
        set_cookie.split_once("; ").unwrap().1,
        format!("{attributes}; Max-Age={}", LIFETIME.as_secs())
    );
    assert!(!attributes.contains("Max-Age"));
    assert!(set_cookie.contains("Secure") && set_cookie.contains("HttpOnly"));
    assert!(set_cookie.contains("Max-Age=60"));
    assert_eq!(events_of(&h, "device_registered").len(), 1);
    assert_eq!(chrome.get_me().await, StatusCode::OK);

    // The bound cookie runs out: the session is not served as itself...
    h.clock.advance(LIFETIME + Duration::from_secs(1));
    assert_eq!(chrome.get_me().await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        events_of(&h, "bound_cookie_refused").last(),
        Some(SessionEvent::BoundCookieRefused {
            reason: "expired",
            ..
        })
    ));
    // ...until the browser refreshes through the challenge, and then it is, several times.
    for _ in 0..3 {
        chrome.refresh().await;
        assert_eq!(chrome.get_me().await, StatusCode::OK);
        h.clock.advance(LIFETIME / 2);
        assert_eq!(chrome.get_me().await, StatusCode::OK);
        h.clock.advance(LIFETIME / 2);
    }
    assert_eq!(events_of(&h, "device_refreshed").len(), 3);
    assert!(proof_refusals(&h).is_empty());
}

pub(crate) async fn garbage_and_oversized_headers_never_answer_500(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    let huge = "A".repeat(20_000);
    let dots = "a.b.c.d.e";
    let padded = format!("{}=", chrome.key.registration_proof("x"));
    // Registration with garbage: refused, the session stays pending and registers after.
    for proof in [
        huge.as_str(),
        dots,
        padded.as_str(),
        "\"unterminated",
        "%%%",
    ] {
        let r = chrome.register_with(proof).await;
        assert!(
            matches!(r.status, StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN),
            "{proof:.20}: {}",
            r.status
        );
    }
    chrome.register().await;
    h.clock.advance(LIFETIME);
    // Refresh with a garbage or huge session id: 400, nothing ended.
    for id in [huge.as_str(), "a b c", "", "\"x"] {
        let r = chrome
            .send(Method::POST, REFRESH, &[("sec-secure-session-id", id)])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id:.20}");
    }
    // No session at all: the browser is told to stop, not an error.
    let mut stranger = Browser::new(&app);
    stranger.dbsc_id = chrome.dbsc_id.clone();
    let r = stranger.refresh_with("a.b.c").await;
    assert_eq!(r.json(), json!({"continue": false}));
    let r = stranger.register_with_path("x").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Huge proof at refresh: bounded, refused, never a 500 (and it ends the session: only
    // a forger sends one).
    chrome.challenge().await;
    let r = chrome.refresh_with(&huge).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"continue": false}));
}

pub(crate) async fn logout_ends_the_binding_and_refresh_cannot_revive_it(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    chrome.register().await;
    let before_logout = chrome.jar.clone();
    let r = chrome.send(Method::POST, "/logout", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    // The browser (or anyone holding the old cookies) refreshes: told to stop, no cookie.
    chrome.jar = before_logout;
    let r = chrome.refresh_with("a.b.c").await;
    assert_eq!(r.json(), json!({"continue": false}));
    assert!(!r.sets_cookie(BOUND));
    let id = chrome.dbsc_id.clone().unwrap();
    let r = chrome
        .send(Method::POST, REFRESH, &[("sec-secure-session-id", &id)])
        .await;
    assert_eq!(r.json(), json!({"continue": false}));
    assert_eq!(chrome.get_me().await, StatusCode::UNAUTHORIZED);
}

pub(crate) async fn sessions_that_never_register_keep_working(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut other_browser = Browser::new(&app);
    other_browser.login().await;
    for _ in 0..3 {
        h.clock.advance(LIFETIME);
        assert_eq!(other_browser.get_me().await, StatusCode::OK);
    }
    assert!(events_of(&h, "bound_cookie_refused").is_empty());
}

pub(crate) async fn a_rotation_offers_registration_again_and_keeps_a_binding(
    store: impl SessionStore,
) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    let offered = chrome.registration.clone().unwrap();
    // A privilege change before registering: the new token comes with the offer again.
    let r = chrome.send(Method::POST, "/rotate", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let again = parse_offer(
        r.header("secure-session-registration")
            .expect("offered again"),
    );
    assert_eq!(again, offered, "the same pending registration");
    chrome.register().await;
    // A rotation of a bound session keeps the binding: no new offer, the bound cookie and
    // the key still count under the new token.
    let r = chrome.send(Method::POST, "/rotate", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("secure-session-registration").is_none());
    assert_eq!(chrome.get_me().await, StatusCode::OK);
    h.clock.advance(LIFETIME);
    assert_eq!(chrome.get_me().await, StatusCode::UNAUTHORIZED);
    chrome.refresh().await;
    assert_eq!(chrome.get_me().await, StatusCode::OK);
}

pub(crate) async fn a_registration_challenge_expires(store: impl SessionStore) {
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    h.clock
        .advance(tower_session_guard::dbsc::CHALLENGE_LIFETIME + Duration::from_secs(1));
    let challenge = chrome.registration.clone().unwrap().1;
    let r = chrome
        .register_with(&chrome.key.registration_proof(&challenge))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.sets_cookie(BOUND));
    assert_eq!(proof_refusals(&h), [("challenge_expired", false)]);
    // The session itself is untouched (unbound, as if the browser had no DBSC).
    assert_eq!(chrome.get_me().await, StatusCode::OK);
}

/// Without the option nothing changes: no offer, and the paths are the application's.
#[tokio::test]
async fn without_the_option_there_is_no_offer_and_no_endpoint() {
    let h = Harness::new();
    let app = h.app(MemoryStore::new());
    let mut chrome = Browser::new(&app);
    let r = chrome.send(Method::POST, "/login", &[]).await;
    assert!(r.header("secure-session-registration").is_none());
    let r = chrome.send(Method::POST, REFRESH, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "the app's own 404");
}

#[test]
fn build_refuses_unworkable_options() {
    let bad = [
        DeviceBinding::new().registration_path("relative"),
        DeviceBinding::new().refresh_path("/a?b=c"),
        DeviceBinding::new().refresh_path(REGISTRATION),
        DeviceBinding::new().bound_cookie_name("__Host-session"),
        DeviceBinding::new().bound_cookie_name("bad name"),
        DeviceBinding::new().bound_cookie_lifetime(Duration::ZERO),
        DeviceBinding::new().bound_cookie_lifetime(Duration::from_secs(2 * 3600)),
        DeviceBinding::new().algorithms([]),
    ];
    for option in bad {
        let err = tower_session_guard::SessionGuardLayer::builder(MemoryStore::new())
            .device_binding(option.clone())
            .build()
            .err();
        assert!(
            matches!(
                err,
                Some(tower_session_guard::ConfigError::InvalidDeviceBinding(_))
            ),
            "{option:?}"
        );
    }
}

/// The first navigation after a login can leave before the browser has stored the bound
/// cookie (it registers in the background): within `REGISTRATION_GRACE` a request without
/// any bound cookie is still served as the session; after it, never, and a wrong bound
/// cookie gets no grace at all.
pub(crate) async fn a_request_racing_the_registration_is_served(store: impl SessionStore) {
    use tower_session_guard::dbsc::REGISTRATION_GRACE;
    let h = Harness::new();
    let app = app(&h, store);
    let mut chrome = Browser::new(&app);
    chrome.login().await;
    chrome.register().await;
    let bound = chrome.jar.remove(BOUND).unwrap();
    assert_eq!(
        chrome.get_me().await,
        StatusCode::OK,
        "raced the registration"
    );
    chrome.jar.insert(BOUND.to_owned(), "forged".into());
    assert_eq!(
        chrome.get_me().await,
        StatusCode::UNAUTHORIZED,
        "no grace for a forgery"
    );
    chrome.jar.remove(BOUND);
    h.clock.advance(REGISTRATION_GRACE);
    assert_eq!(
        chrome.get_me().await,
        StatusCode::UNAUTHORIZED,
        "grace over"
    );
    chrome.jar.insert(BOUND.to_owned(), bound);
    assert_eq!(chrome.get_me().await, StatusCode::OK);
}
