//! IP pinning through the layer: which address a request is resolved to (forwarding headers
//! are believed only from trusted proxies), how a session is bound to its login address in
//! each pin mode, allowed ranges, and what happens when connection info is missing.

mod common;

use std::net::SocketAddr;

use axum::http::{header, Method, StatusCode};
use axum::Router;
use common::*;
use tower_session_guard::{
    ClientIp, ForwardedHeader, MemoryStore, PinMode, SessionEvent, SessionGuardBuilder,
};

/// A trusted proxy (inside `10.0.0.0/8`).
const PROXY: &str = "10.0.0.1";
/// A client on the internet, as a proxy reports it.
const REAL: &str = "198.51.100.7";
/// An address a client claims for itself.
const SPOOF: &str = "203.0.113.66";

/// The standard app with the harness's clock and events, configured by `f`.
fn app_with(h: &Harness, f: impl FnOnce(SessionGuardBuilder) -> SessionGuardBuilder) -> Router {
    app(f(h.builder(MemoryStore::new()))
        .build()
        .expect("valid config"))
}

/// The standard app trusting the proxies in `10.0.0.0/8`, which write `X-Forwarded-For`.
fn proxied_app(h: &Harness) -> Router {
    proxied_app_with(h, ForwardedHeader::XForwardedFor)
}

/// The standard app trusting the proxies in `10.0.0.0/8`, which write `header`.
fn proxied_app_with(h: &Harness, header: ForwardedHeader) -> Router {
    app_with(h, |b| {
        b.trusted_proxies(["10.0.0.0/8"]).forwarded_header(header)
    })
}

/// What `GET /ip` reports (`"<session.client_ip()> <ClientIp extractor>"`) for a request
/// from `from` with `headers`.
async fn resolved(app: &Router, from: &str, headers: &[(&str, &str)]) -> String {
    let res = call_from(app, Method::GET, "/ip", None, Some(peer(from)), headers).await;
    assert_eq!(res.status(), StatusCode::OK);
    body_text(res).await
}

/// `"<ip> <ip>"`: both the session and the extension report `ip`.
fn both(ip: &str) -> String {
    format!("{ip} {ip}")
}

async fn me_from(app: &Router, token: &str, from: SocketAddr) -> StatusCode {
    call_from(app, Method::GET, "/me", Some(token), Some(from), &[])
        .await
        .status()
}

fn pin_violations(h: &Harness) -> Vec<SessionEvent> {
    h.events
        .all()
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::PinViolation { .. }))
        .collect()
}

// ----- forwarding-header spoofing matrix -----

#[tokio::test]
async fn untrusted_peer_forwarding_headers_are_ignored() {
    let h = Harness::new();
    for app in [h.app(MemoryStore::new()), proxied_app(&h)] {
        for headers in [
            [("x-forwarded-for", "127.0.0.1")],
            [("forwarded", "for=127.0.0.1")],
            [("x-forwarded-for", "203.0.113.66, 198.51.100.7")],
        ] {
            assert_eq!(
                resolved(&app, "192.0.2.10", &headers).await,
                both("192.0.2.10"),
                "{headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn untrusted_peer_claiming_the_victims_address_is_refused_by_the_pin() {
    let h = Harness::new();
    let app = h.app(MemoryStore::new());
    let token = login_token(&app, None).await;
    h.events.clear();

    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(peer("127.0.0.2")),
        &[
            ("x-forwarded-for", "127.0.0.1"),
            ("forwarded", "for=127.0.0.1"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.events.all(),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip("127.0.0.1")),
            actual: ip("127.0.0.2"),
            reason: "address_changed",
        }]
    );
}

#[tokio::test]
async fn trusted_proxy_x_forwarded_for_gives_the_rightmost_untrusted_hop() {
    let h = Harness::new();
    let app = proxied_app(&h);
    let spoof_real = format!("{SPOOF}, {REAL}");
    assert_eq!(
        resolved(&app, PROXY, &[("x-forwarded-for", &spoof_real)]).await,
        both(REAL)
    );
    // A second trusted proxy in the chain is skipped too.
    let via_two = format!("{SPOOF}, {REAL}, 10.0.0.2");
    assert_eq!(
        resolved(&app, PROXY, &[("x-forwarded-for", &via_two)]).await,
        both(REAL)
    );
}

#[tokio::test]
async fn trusted_proxy_forwarded_gives_the_rightmost_untrusted_hop() {
    let h = Harness::new();
    let app = proxied_app_with(&h, ForwardedHeader::Forwarded);
    let spoof_real = format!("for={SPOOF}, for={REAL}");
    assert_eq!(
        resolved(&app, PROXY, &[("forwarded", &spoof_real)]).await,
        both(REAL)
    );
    let quoted_v6 = format!("for={SPOOF}, for=\"[2001:db8::17]:4711\";proto=https");
    assert_eq!(
        resolved(&app, PROXY, &[("forwarded", &quoted_v6)]).await,
        both("2001:db8::17")
    );
}

#[tokio::test]
async fn trusted_proxy_x_real_ip_gives_the_client() {
    let h = Harness::new();
    let app = proxied_app_with(&h, ForwardedHeader::XRealIp);
    assert_eq!(
        resolved(&app, PROXY, &[("x-real-ip", REAL)]).await,
        both(REAL)
    );
}

#[tokio::test]
async fn unusable_forwarding_header_through_trusted_proxy_leaves_the_client_unknown() {
    // Never the proxy's own address: that would let any client behind the proxy be the proxy.
    let h = Harness::new();
    let xff = proxied_app(&h);
    for headers in [
        &[][..],
        &[("x-forwarded-for", "garbage")],
        &[("x-forwarded-for", "198.51.100.7, garbage")],
        &[("x-forwarded-for", "")],
        &[("x-forwarded-for", "10.0.0.2")],
        &[("forwarded", "for=198.51.100.7")],
    ] {
        assert_eq!(
            resolved(&xff, PROXY, headers).await,
            "none none",
            "{headers:?}"
        );
    }
    let fwd = proxied_app_with(&h, ForwardedHeader::Forwarded);
    for headers in [
        [("forwarded", "for=unknown")],
        [("forwarded", "for=_hidden")],
        [("forwarded", "proto=https")],
        [("forwarded", "for=198.51.100.7, for=999.1.1.1")],
        [("x-forwarded-for", "198.51.100.7")],
    ] {
        assert_eq!(
            resolved(&fwd, PROXY, &headers).await,
            "none none",
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn a_forwarding_header_the_proxies_do_not_write_is_ignored() {
    // The proxy appends to X-Forwarded-For and passes the client's Forwarded through.
    let h = Harness::new();
    let app = proxied_app(&h);
    for forwarded in [
        format!("for={SPOOF}"),
        format!("for={REAL}"),
        "for=unknown".to_owned(),
        "for=10.0.0.1".to_owned(),
    ] {
        assert_eq!(
            resolved(
                &app,
                PROXY,
                &[("x-forwarded-for", REAL), ("forwarded", &forwarded)]
            )
            .await,
            both(REAL),
            "{forwarded}"
        );
    }
}

#[tokio::test]
async fn client_behind_trusted_proxy_claiming_the_victims_address_is_refused_by_the_pin() {
    let h = Harness::new();
    let app = proxied_app(&h);
    let from_proxy = Some(peer(PROXY));
    let res = call_from(
        &app,
        Method::POST,
        "/login",
        None,
        from_proxy,
        &[("x-forwarded-for", REAL)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let token = token_of(&res).unwrap();
    assert!(h.events.all().contains(&SessionEvent::LoggedIn {
        session: fp(&token),
        previous: None,
        user_id: "alice".into(),
        client_ip: Some(ip(REAL)),
    }));
    let me = |xff: String| {
        let (app, token) = (app.clone(), token.clone());
        async move {
            call_from(
                &app,
                Method::GET,
                "/me",
                Some(&token),
                from_proxy,
                &[("x-forwarded-for", &xff)],
            )
            .await
            .status()
        }
    };
    assert_eq!(me(REAL.to_owned()).await, StatusCode::OK);
    h.events.clear();

    // The attacker claims the victim's address; the proxy appends the attacker's own.
    assert_eq!(
        me(format!("{REAL}, {SPOOF}")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.events.all(),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip(REAL)),
            actual: ip(SPOOF),
            reason: "address_changed",
        }]
    );
}

// ----- exact mode -----

#[tokio::test]
async fn exact_pin_allows_the_login_address() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(peer("127.0.0.1")),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body_text(res).await.contains("\"alice\""));
    assert!(pin_violations(&h).is_empty());
}

#[tokio::test]
async fn exact_pin_refuses_another_address_with_removal_cookie_and_event() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    h.events.clear();

    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(peer("127.0.0.2")),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(has_removal_cookie(&res), "{:?}", set_cookies(&res));
    assert_eq!(token_of(&res), None);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        h.events.all(),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip("127.0.0.1")),
            actual: ip("127.0.0.2"),
            reason: "address_changed",
        }]
    );
}

#[tokio::test]
async fn exact_pin_termination_is_persistent_for_the_original_client() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    assert_eq!(
        me_from(&app, &token, peer("127.0.0.2")).await,
        StatusCode::UNAUTHORIZED
    );
    h.events.clear();

    assert_eq!(
        me_from(&app, &token, peer("127.0.0.1")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_text(&app, Method::GET, "/get/anything", Some(&token))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.events.kinds(),
        ["unknown_token", "unknown_token"],
        "the session is gone from the store"
    );
}

// ----- subnet mode -----

fn subnet_app(h: &Harness) -> Router {
    app_with(h, |b| b.pin_mode(PinMode::subnet()))
}

#[tokio::test]
async fn subnet_pin_allows_the_same_v4_24() {
    let h = Harness::new();
    let app = subnet_app(&h);
    let token = login_from(&app, peer("127.0.0.1"), "alice", &["admin"], &[]).await;
    assert_eq!(
        me_from(&app, &token, peer("127.0.0.200")).await,
        StatusCode::OK
    );
    assert!(pin_violations(&h).is_empty());
}

#[tokio::test]
async fn subnet_pin_refuses_another_v4_24() {
    let h = Harness::new();
    let app = subnet_app(&h);
    let token = login_from(&app, peer("127.0.0.1"), "alice", &["admin"], &[]).await;
    assert_eq!(
        me_from(&app, &token, peer("127.0.1.1")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        pin_violations(&h),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip("127.0.0.1")),
            actual: ip("127.0.1.1"),
            reason: "address_changed",
        }]
    );
}

#[tokio::test]
async fn subnet_pin_allows_the_same_v6_64() {
    let h = Harness::new();
    let app = subnet_app(&h);
    let token = login_from(&app, peer("2001:db8:1:2::1"), "alice", &[], &[]).await;
    assert_eq!(
        me_from(&app, &token, peer("2001:db8:1:2:aaaa:bbbb:cccc:9")).await,
        StatusCode::OK
    );
    assert!(pin_violations(&h).is_empty());
}

#[tokio::test]
async fn subnet_pin_refuses_another_v6_64() {
    let h = Harness::new();
    let app = subnet_app(&h);
    let token = login_from(&app, peer("2001:db8:1:2::1"), "alice", &[], &[]).await;
    assert_eq!(
        me_from(&app, &token, peer("2001:db8:1:3::1")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        pin_violations(&h),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip("2001:db8:1:2::1")),
            actual: ip("2001:db8:1:3::1"),
            reason: "address_changed",
        }]
    );
}

#[tokio::test]
async fn v4_mapped_peer_counts_as_its_v4_address_for_the_exact_pin() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    assert_eq!(
        resolved(&app, "::ffff:127.0.0.1", &[]).await,
        both("127.0.0.1")
    );
    assert_eq!(
        me_from(&app, &token, peer("::ffff:127.0.0.1")).await,
        StatusCode::OK
    );
    assert!(pin_violations(&h).is_empty());
    assert_eq!(
        me_from(&app, &token, peer("::ffff:127.0.0.2")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        pin_violations(&h),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip("127.0.0.1")),
            actual: ip("127.0.0.2"),
            reason: "address_changed",
        }]
    );
}

#[tokio::test]
async fn login_from_a_v4_mapped_peer_is_pinned_to_the_v4_address() {
    let (app, h) = default_app();
    let token = login_from(&app, peer("::ffff:127.0.0.1"), "alice", &[], &[]).await;
    assert_eq!(
        h.events.all(),
        [SessionEvent::LoggedIn {
            session: fp(&token),
            previous: None,
            user_id: "alice".into(),
            client_ip: Some(ip("127.0.0.1")),
        }]
    );
    assert_eq!(
        me_from(&app, &token, peer("127.0.0.1")).await,
        StatusCode::OK
    );
}

// ----- off mode -----

#[tokio::test]
async fn off_mode_allows_another_address() {
    let h = Harness::new();
    let app = app_with(&h, |b| b.pin_mode(PinMode::Off));
    let token = login_token(&app, None).await;
    for from in ["127.0.0.2", "192.0.2.1", "::1"] {
        assert_eq!(me_from(&app, &token, peer(from)).await, StatusCode::OK);
    }
    assert!(pin_violations(&h).is_empty());
}

// ----- allowed ranges -----

#[tokio::test]
async fn allowed_ranges_refuse_a_session_used_from_outside_them() {
    let h = Harness::new();
    let app = app_with(&h, |b| {
        b.pin_mode(PinMode::Off).allowed_ranges(["127.0.0.0/24"])
    });
    let token = login_token(&app, None).await;
    assert_eq!(
        me_from(&app, &token, peer("127.0.0.5")).await,
        StatusCode::OK
    );

    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(peer("127.0.1.5")),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(has_removal_cookie(&res));
    assert_eq!(
        pin_violations(&h),
        [SessionEvent::PinViolation {
            session: fp(&token),
            user_id: "alice".into(),
            expected: Some(ip("127.0.0.1")),
            actual: ip("127.0.1.5"),
            reason: "outside_allowed_ranges",
        }]
    );
    assert_eq!(
        me_from(&app, &token, peer("127.0.0.1")).await,
        StatusCode::UNAUTHORIZED,
        "the session was destroyed"
    );
}

#[tokio::test]
async fn allowed_ranges_refuse_a_login_from_outside_them() {
    // Checked at login: a user outside the ranges gets a clear 403 instead of a session
    // that is thrown out on its next request.
    let h = Harness::new();
    let app = app_with(&h, |b| b.allowed_ranges(["10.0.0.0/8"]));
    let outside = peer("192.0.2.1");
    let res = call_from(&app, Method::POST, "/login", None, Some(outside), &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(token_of(&res), None);
    assert_eq!(
        h.events.all(),
        [SessionEvent::LoginDenied {
            user_id: "alice".into(),
            client_ip: ip("192.0.2.1"),
            reason: "outside_allowed_ranges".into(),
        }]
    );
    assert!(
        login_from(&app, peer("10.1.2.3"), "alice", &[], &[])
            .await
            .len()
            > 40
    );
}

// ----- guests -----

#[tokio::test]
async fn guest_session_is_usable_from_any_address_and_without_connection_info() {
    let (app, h) = default_app();
    let res = call_from(&app, Method::POST, "/counter", None, Some(CLIENT), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let token = token_of(&res).unwrap();
    assert_eq!(body_text(res).await, "1");

    for (from, expected) in [(Some(peer("127.0.0.2")), "2"), (None, "3")] {
        let res = call_from(&app, Method::POST, "/counter", Some(&token), from, &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "{from:?}");
        assert!(set_cookies(&res).is_empty(), "{from:?}");
        assert_eq!(body_text(res).await, expected, "{from:?}");
    }
    assert_eq!(h.events.kinds(), ["created"]);
}

#[tokio::test]
async fn guest_session_is_not_limited_by_allowed_ranges() {
    let h = Harness::new();
    let app = app_with(&h, |b| b.allowed_ranges(["10.0.0.0/8"]));
    let token = guest_token(&app, "k", "v").await;
    let res = call_from(
        &app,
        Method::GET,
        "/get/k",
        Some(&token),
        Some(peer("192.0.2.1")),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await, "v");
    assert!(pin_violations(&h).is_empty());
}

// ----- no connection info -----

#[tokio::test]
async fn authenticated_request_without_connection_info_is_500_and_keeps_the_session() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    h.events.clear();

    let res = call_from(&app, Method::GET, "/me", Some(&token), None, &[]).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
    let events = h.events.all();
    let [SessionEvent::ClientIpUnknown { session, error }] = events.as_slice() else {
        panic!("expected one ClientIpUnknown event, got {events:?}");
    };
    assert_eq!(*session, Some(fp(&token)));
    assert!(
        error.contains("into_make_service_with_connect_info"),
        "{error}"
    );

    assert_eq!(
        me_from(&app, &token, CLIENT).await,
        StatusCode::OK,
        "the session was not destroyed"
    );
}

#[tokio::test]
async fn login_without_connection_info_fails_and_issues_no_cookie() {
    let (app, h) = default_app();
    let res = call_from(&app, Method::POST, "/login", None, None, &[]).await;
    assert_ne!(res.status(), StatusCode::OK);
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
    let events = h.events.all();
    let [SessionEvent::ClientIpUnknown { session, error }] = events.as_slice() else {
        panic!("expected one ClientIpUnknown event, got {events:?}");
    };
    assert_eq!(*session, None);
    assert!(
        error.contains("into_make_service_with_connect_info"),
        "{error}"
    );
}

// ----- gRPC -----

#[tokio::test]
async fn pin_violation_on_grpc_request_is_grpc_unauthenticated() {
    let (app, h) = default_app();
    let token = login_token(&app, None).await;
    h.events.clear();

    let res = call_from(
        &app,
        Method::POST,
        "/me",
        Some(&token),
        Some(peer("127.0.0.2")),
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "16");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/grpc");
    assert!(has_removal_cookie(&res));
    assert_eq!(h.events.kinds(), ["pin_violation"]);
    assert_eq!(
        me_from(&app, &token, CLIENT).await,
        StatusCode::UNAUTHORIZED,
        "the session was destroyed"
    );
}

/// `ClientIp` as a required extractor answers as the layer would when the address is
/// unknown: 500 without connection info (a wiring bug), 401 when a trusted proxy names no
/// client; with an address it is that address. (`Option<ClientIp>` is covered by `/ip`.)
#[tokio::test]
async fn the_client_ip_extractor_answers_for_an_unknown_address() {
    let h = Harness::new();
    let layer = h
        .builder(MemoryStore::new())
        .trusted_proxies(["10.0.0.0/8"])
        .forwarded_header(ForwardedHeader::XForwardedFor)
        .build()
        .expect("valid config");
    let app: Router = Router::new()
        .route(
            "/who",
            axum::routing::get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
        )
        .layer(layer);
    let who = |from: Option<SocketAddr>, headers: &'static [(&'static str, &'static str)]| {
        call_from(&app, Method::GET, "/who", None, from, headers)
    };

    let res = who(Some(peer("198.51.100.7")), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await, "198.51.100.7");

    let res = who(
        Some(peer("10.0.0.2")),
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert_eq!(body_text(res).await, "203.0.113.9");

    // A trusted proxy that names no client: unverifiable, never the proxy's own address.
    let res = who(Some(peer("10.0.0.2")), &[]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // No connection info at all: the server is miswired.
    let res = who(None, &[]).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
