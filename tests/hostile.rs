//! Hostile traffic at the edges, through the public API: forged forwarding headers behind a
//! trusted proxy, floods of guest sessions and of random tokens, cookie tossing, values that
//! could not be read back, tokens in logs, absurd settings. Each test is one finding of the
//! hardening review; it failed on the code before the fix.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use tower_session_guard::{
    ConfigError, Decision, ForwardedHeader, GuessingLimit, MemoryStore, PinMode, PolicyContext,
    RateLimit, Rejection, Session, SessionError, SessionEvent, SessionGuardLayer, SessionToken,
};

/// The trusted proxy, on the console host (as in `demo --trusted-proxy 127.0.0.1/32`).
const PROXY: &str = "127.0.0.1";
/// Where the attacker really is; the proxy reports this address when it does its job.
const ATTACKER: &str = "203.0.113.9";

// ----- 1. a client behind a trusted proxy never becomes the proxy -----

/// What a client adds to its request, trying to look like the console host or to break the
/// chain so that the layer falls back to the proxy's address. None of them names an address
/// outside the trusted proxy: a proxy that writes nothing cannot be told from one that
/// forwards these.
fn forged_claims() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![
        vec![],
        vec![("forwarded", "for=unknown")],
        vec![("forwarded", "for=127.0.0.1")],
        vec![("forwarded", "for=_hidden")],
        vec![(
            "forwarded",
            "for=\"127.0.0.1:443\";proto=https, for=unknown",
        )],
        vec![("forwarded", "proto=https")],
        vec![("x-forwarded-for", "")],
        vec![("x-forwarded-for", "unknown")],
        vec![("x-forwarded-for", "garbage")],
        vec![("x-forwarded-for", "127.0.0.1")],
        vec![("x-forwarded-for", "127.0.0.1, 127.0.0.1")],
        vec![("x-forwarded-for", "127.0.0.1"), ("x-forwarded-for", "")],
        vec![("x-real-ip", "127.0.0.1")],
        vec![("x-real-ip", "garbage")],
        vec![("x-real-ip", "127.0.0.1"), ("x-real-ip", "127.0.0.1")],
        vec![
            ("x-forwarded-for", "127.0.0.1"),
            ("forwarded", "for=unknown"),
        ],
        vec![("forwarded", "for=127.0.0.1"), ("x-real-ip", "127.0.0.1")],
    ]
}

/// What the proxy adds when it does its job: the connecting client's address, in the header
/// it is configured to write.
fn proxy_writes(header: ForwardedHeader, headers: &mut Vec<(&'static str, String)>) {
    match header {
        ForwardedHeader::XForwardedFor => {
            headers.push(("x-forwarded-for", ATTACKER.to_owned()));
        }
        ForwardedHeader::Forwarded => headers.push(("forwarded", format!("for={ATTACKER}"))),
        // X-Real-IP is set, replacing whatever the client sent.
        _ => {
            headers.retain(|(k, _)| *k != "x-real-ip");
            headers.push(("x-real-ip", ATTACKER.to_owned()));
        }
    }
}

/// The demo's setup: the admin rule accepts alice only from 127.0.0.1 or ::1, and the proxy
/// runs on 127.0.0.1. `direct` serves the console host (no proxy trusted) and shares the
/// store, so alice's session is pinned to 127.0.0.1 as in the finding.
fn demo_pair(h: &Harness, header: ForwardedHeader, pin: PinMode) -> (Router, Router) {
    let store = MemoryStore::new();
    let direct = app(h
        .builder(store.clone())
        .pin_mode(pin)
        .policy(demo_policy())
        .build()
        .expect("valid config"));
    let proxied = app(h
        .builder(store)
        .pin_mode(pin)
        .trusted_proxies([PROXY])
        .forwarded_header(header)
        .policy(demo_policy())
        .build()
        .expect("valid config"));
    (direct, proxied)
}

#[tokio::test]
async fn a_client_behind_the_trusted_proxy_never_passes_as_the_proxy() {
    let headers = [
        ForwardedHeader::XForwardedFor,
        ForwardedHeader::Forwarded,
        ForwardedHeader::XRealIp,
    ];
    let mut tried = 0;
    for header in headers {
        for pin in [PinMode::Exact, PinMode::Off] {
            for proxy_does_its_job in [true, false] {
                for claims in forged_claims() {
                    let h = Harness::new();
                    let (direct, proxied) = demo_pair(&h, header, pin);
                    let mut sent: Vec<(&'static str, String)> =
                        claims.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
                    if proxy_does_its_job {
                        proxy_writes(header, &mut sent);
                    }
                    let sent: Vec<(&str, &str)> =
                        sent.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let case =
                        format!("{header:?} {pin:?} proxy writes: {proxy_does_its_job} {sent:?}");

                    // A stolen admin token, pinned to the console host.
                    let token = login_from(&direct, peer(PROXY), "alice", &["admin"], &[]).await;
                    h.events.clear();
                    let res = call_from(
                        &proxied,
                        Method::GET,
                        "/me",
                        Some(&token),
                        Some(peer(PROXY)),
                        &sent,
                    )
                    .await;
                    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{case}");
                    let events = h.events.all();
                    if proxy_does_its_job {
                        // The attacker's real address: the pin or the admin rule refuses it.
                        assert!(
                            events.iter().any(|e| matches!(e,
                                SessionEvent::PinViolation { actual, .. }
                                | SessionEvent::PolicyDenied { client_ip: actual, .. }
                                if *actual == ip(ATTACKER))),
                            "{case}: {events:?}"
                        );
                    } else {
                        // No usable chain: the address is unknown, the request refused, and
                        // the session kept (a forged header is no proof that alice was robbed).
                        assert_eq!(
                            res.extensions().get::<Rejection>(),
                            Some(&Rejection::ClientIpUnverifiable),
                            "{case}"
                        );
                        assert!(
                            matches!(events.as_slice(), [SessionEvent::ClientIpUnknown { .. }]),
                            "{case}: {events:?}"
                        );
                        let still = call_from(
                            &direct,
                            Method::GET,
                            "/me",
                            Some(&token),
                            Some(peer(PROXY)),
                            &[],
                        )
                        .await;
                        assert_eq!(still.status(), StatusCode::OK, "{case}: session kept");
                    }

                    // Nor can the attacker log in as an admin through the proxy.
                    let login = call_from(
                        &proxied,
                        Method::POST,
                        "/login-with?user=alice&roles=admin",
                        None,
                        Some(peer(PROXY)),
                        &sent,
                    )
                    .await;
                    let expected = if proxy_does_its_job {
                        StatusCode::FORBIDDEN
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    assert_eq!(login.status(), expected, "{case}: login");
                    assert_eq!(token_of(&login), None, "{case}: login");
                    tried += 1;
                }
            }
        }
    }
    assert_eq!(tried, 3 * 2 * 2 * forged_claims().len());
}

#[test]
fn trusted_proxies_without_a_forwarding_header_do_not_build() {
    let err = SessionGuardLayer::builder(MemoryStore::new())
        .trusted_proxies(["10.0.0.0/8"])
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::ForwardedHeaderRequired);
    assert!(err.to_string().contains("forwarded_header"), "{err}");
}

#[test]
fn a_trusted_range_overlapping_an_allowed_or_policy_range_is_reported() {
    let events = Events::default();
    SessionGuardLayer::builder(MemoryStore::new())
        .event_sink(events.sink())
        .trusted_proxies(["127.0.0.1"])
        .forwarded_header(ForwardedHeader::XForwardedFor)
        .allowed_ranges(["127.0.0.0/8"])
        .policy(demo_policy())
        .build()
        .expect("a warning, not an error");
    let warnings: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::ConfigWarning { .. }))
        .collect();
    // The allowed range, and the demo policy's 127.0.0.1/32 and 127.0.0.0/8.
    assert_eq!(warnings.len(), 3, "{warnings:?}");
}

// ----- 2. anonymous floods -----

#[tokio::test]
async fn one_address_cannot_create_guest_sessions_without_limit() {
    let h = Harness::new();
    let app = app(h
        .builder(MemoryStore::new())
        .guest_creation_limit(Some(RateLimit {
            max: 3,
            per: Duration::from_secs(60),
        }))
        .build()
        .unwrap());
    let flooder = peer("198.51.100.1");
    // A logged-in neighbour behind the same address.
    let user = login_from(&app, flooder, "alice", &[], &[]).await;
    for i in 0..3 {
        let res = call_from(&app, Method::POST, "/counter", None, Some(flooder), &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "guest {i}");
    }
    let res = call_from(&app, Method::POST, "/counter", None, Some(flooder), &[]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::RETRY_AFTER], "60");
    assert_eq!(token_of(&res), None, "no session was created");
    // The logged-in user writes on: only creations are budgeted.
    let res = call_from(
        &app,
        Method::POST,
        "/counter",
        Some(&user),
        Some(flooder),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Another address, and the same one a window later, create again.
    let other = call_from(
        &app,
        Method::POST,
        "/counter",
        None,
        Some(peer("198.51.100.2")),
        &[],
    );
    assert_eq!(other.await.status(), StatusCode::OK);
    h.clock.advance(Duration::from_secs(60));
    let res = call_from(&app, Method::POST, "/counter", None, Some(flooder), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(h.events.kinds().contains(&"guest_refused"));
}

#[tokio::test]
async fn guests_expire_sooner_than_users() {
    let h = Harness::new();
    let app = app(h
        .builder(MemoryStore::new())
        .guest_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap());
    let guest = token_of(&call(&app, Method::POST, "/counter", None).await).unwrap();
    let user = login_from(&app, CLIENT, "alice", &[], &[]).await;
    h.clock.advance(Duration::from_secs(61));
    assert_eq!(
        call_text(&app, Method::GET, "/counter", Some(&guest))
            .await
            .1,
        "0"
    );
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&user)).await.status(),
        StatusCode::OK
    );
}

// ----- ID guessing and event floods -----

fn guessing_app(h: &Harness, cooldown: Option<Duration>) -> Router {
    app(h
        .builder(MemoryStore::new())
        .token_guessing(Some(GuessingLimit {
            threshold: 20,
            window: Duration::from_secs(60),
            cooldown,
        }))
        .build()
        .unwrap())
}

#[tokio::test]
async fn guessing_tokens_is_detected_once_per_window() {
    let h = Harness::new();
    let app = guessing_app(&h, None);
    let guesser = peer("198.51.100.66");
    for _ in 0..50 {
        let guess = SessionToken::generate();
        let res = call_from(
            &app,
            Method::GET,
            "/me",
            Some(guess.as_str()),
            Some(guesser),
            &[],
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // A browser repeating one stale cookie is not a guesser.
    let stale = SessionToken::generate();
    for _ in 0..50 {
        call_from(
            &app,
            Method::GET,
            "/me",
            Some(stale.as_str()),
            Some(peer("198.51.100.7")),
            &[],
        )
        .await;
    }
    let detections: Vec<_> = h
        .events
        .all()
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::TokenGuessing { .. }))
        .collect();
    assert_eq!(
        detections,
        [SessionEvent::TokenGuessing {
            client_ip: ip("198.51.100.66"),
            unknown_tokens: 21,
            window_secs: 60,
            cooldown_secs: None,
        }]
    );
}

#[tokio::test]
async fn a_guessing_address_cools_down_but_its_logged_in_users_do_not() {
    let h = Harness::new();
    let app = guessing_app(&h, Some(Duration::from_secs(300)));
    let nat = peer("198.51.100.66");
    let neighbour = login_from(&app, nat, "alice", &[], &[]).await;
    for _ in 0..21 {
        call_from(
            &app,
            Method::GET,
            "/me",
            Some(SessionToken::generate().as_str()),
            Some(nat),
            &[],
        )
        .await;
    }
    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(SessionToken::generate().as_str()),
        Some(nat),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::TooManyUnknownTokens)
    );
    let res = call_from(&app, Method::POST, "/counter", None, Some(nat), &[]).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "no new guests either"
    );
    // The logged-in neighbour behind the same NAT is served as ever.
    let res = call_from(&app, Method::GET, "/me", Some(&neighbour), Some(nat), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    h.clock.advance(Duration::from_secs(300));
    let res = call_from(&app, Method::POST, "/counter", None, Some(nat), &[]).await;
    assert_eq!(res.status(), StatusCode::OK, "after the cool-down");
}

#[tokio::test]
async fn a_flood_of_unknown_tokens_writes_two_events_per_interval() {
    let h = Harness::new();
    let app = app(SessionGuardLayer::builder(MemoryStore::new())
        .clock(h.clock.clone())
        .event_sink(h.events.sink())
        .token_guessing(None)
        .build()
        .unwrap());
    for i in 0..1000u32 {
        let from = peer(&format!("198.51.{}.{}", 100 + i / 250, i % 250 + 1));
        call_from(
            &app,
            Method::GET,
            "/me",
            Some(SessionToken::generate().as_str()),
            Some(from),
            &[],
        )
        .await;
    }
    assert_eq!(h.events.kinds(), ["unknown_token"], "one sample");
    h.clock.advance(Duration::from_secs(10));
    let last = SessionToken::generate();
    call_from(
        &app,
        Method::GET,
        "/me",
        Some(last.as_str()),
        Some(peer("192.0.2.1")),
        &[],
    )
    .await;
    let events = h.events.all();
    assert_eq!(events.len(), 3, "{events:?}");
    let SessionEvent::Suppressed {
        kind,
        count,
        sample_client_ip,
        sample_session,
        ..
    } = &events[1]
    else {
        panic!("{events:?}");
    };
    assert_eq!((*kind, *count), ("unknown_token", 999));
    assert_eq!(*sample_client_ip, Some(ip("198.51.103.250")));
    assert!(sample_session.is_some());
    assert_eq!(
        events[2],
        SessionEvent::UnknownToken {
            session: fp(last.as_str()),
            client_ip: Some(ip("192.0.2.1")),
        }
    );
}

// ----- 4. smaller findings -----

#[tokio::test]
async fn a_policy_that_logs_its_context_never_prints_the_token() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let h = Harness::new();
    let app = app(h
        .builder(MemoryStore::new())
        .policy(move |ctx: &PolicyContext<'_>| {
            log.lock()
                .unwrap()
                .push(format!("{ctx:?} {:?}", ctx.headers));
            Decision::Allow
        })
        .build()
        .unwrap());
    let token = login_from(&app, CLIENT, "alice", &[], &[]).await;
    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(CLIENT),
        &[("x-session-token", &token)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "at login and on the request");
    for line in seen.iter() {
        assert!(!line.contains(&token), "{line}");
    }
    assert!(seen[1].contains("[redacted]"), "{}", seen[1]);
}

#[tokio::test]
async fn an_unknown_header_token_never_hides_a_valid_cookie() {
    let (app, _h) = default_app();
    let token = login_from(&app, CLIENT, "alice", &[], &[]).await;
    let planted = SessionToken::generate();
    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(CLIENT),
        &[("x-session-token", planted.as_str())],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // And a header token alone does not make a browser request authenticated.
    let res = call_from(
        &app,
        Method::GET,
        "/me",
        None,
        Some(CLIENT),
        &[("x-session-token", &token)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A guest write from a browser gets a cookie, never a token header page script could read.
    let res = call_from(
        &app,
        Method::POST,
        "/counter",
        None,
        Some(CLIENT),
        &[("x-session-token", planted.as_str())],
    )
    .await;
    assert!(token_of(&res).is_some());
    assert!(res.headers().get("x-session-token").is_none());
}

#[tokio::test]
async fn with_several_session_cookies_the_first_live_one_counts() {
    let (app, h) = default_app();
    let expired = login_from(&app, CLIENT, "bob", &[], &[]).await;
    h.clock.advance(Duration::from_secs(31 * 60));
    let live = login_from(&app, CLIENT, "alice", &[], &[]).await;
    let tossed = SessionToken::generate();
    // A cookie planted by a sibling subdomain comes first in the header; then an expired one.
    let cookie = format!(
        "__Host-session={}; __Host-session={expired}; __Host-session={live}",
        tossed.as_str()
    );
    let res = call_from(
        &app,
        Method::GET,
        "/me",
        None,
        Some(CLIENT),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body_text(res).await.contains("\"alice\""));
}

#[tokio::test]
async fn a_value_that_could_not_be_read_back_is_refused_at_insert() {
    let h = Harness::new();
    let deep = |depth: usize| {
        let mut v = serde_json::json!(1);
        for _ in 0..depth {
            v = serde_json::json!([v]);
        }
        v
    };
    let insert = move |depth: usize| {
        move |session: Session| async move {
            match session.insert("deep", deep(depth)).await {
                Ok(()) => "stored".to_owned(),
                Err(SessionError::Value { .. }) => "refused".to_owned(),
                Err(e) => format!("other: {e}"),
            }
        }
    };
    let app = Router::new()
        .route("/deep", post(insert(126)))
        .route("/fine", post(insert(40)))
        .merge(routes())
        .layer(
            h.builder(MemoryStore::with_capacities(1000, 1))
                .build()
                .unwrap(),
        );
    let token = login_from(&app, CLIENT, "alice", &[], &[]).await;
    let res = call_from(&app, Method::POST, "/deep", Some(&token), Some(CLIENT), &[]).await;
    assert_eq!(body_text(res).await, "refused");
    let res = call_from(&app, Method::POST, "/fine", Some(&token), Some(CLIENT), &[]).await;
    assert_eq!(body_text(res).await, "stored");
    // Other sessions push alice out of the one-entry hot tier, so her record is decoded again.
    for _ in 0..3 {
        call(&app, Method::POST, "/counter", None).await;
    }
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::POST, "/logout", Some(&token))
            .await
            .status(),
        StatusCode::OK
    );
}

#[test]
fn absurd_timeouts_are_refused_at_build() {
    for build in [
        SessionGuardLayer::builder(MemoryStore::new())
            .idle_timeout(Duration::MAX)
            .build(),
        SessionGuardLayer::builder(MemoryStore::new())
            .absolute_timeout(Duration::MAX)
            .build(),
        SessionGuardLayer::builder(MemoryStore::new())
            .absolute_timeout(Duration::from_secs(401 * 24 * 3600))
            .build(),
    ] {
        assert!(matches!(build, Err(ConfigError::TimeoutTooLong(..))));
    }
}

#[tokio::test]
async fn the_longest_lifetimes_never_overflow_on_a_request() {
    let h = Harness::new();
    let max = tower_session_guard::config::MAX_LIFETIME;
    let app = app(h
        .builder(MemoryStore::new())
        .idle_timeout(max)
        .guest_idle_timeout(max)
        .absolute_timeout(max)
        .persistent(true)
        .build()
        .unwrap());
    let token = login_from(&app, CLIENT, "alice", &[], &[]).await;
    h.clock.advance(max - Duration::from_secs(1));
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&token)).await.status(),
        StatusCode::OK
    );
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_default_session_cap_evicts_a_users_oldest_session() {
    let (app, h) = default_app();
    let first = login_from(&app, CLIENT, "alice", &[], &[]).await;
    for _ in 0..20 {
        h.clock.advance(Duration::from_secs(1));
        login_from(&app, CLIENT, "alice", &[], &[]).await;
    }
    assert_eq!(
        call(&app, Method::GET, "/me", Some(&first)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(h.events.all().iter().any(|e| matches!(
        e,
        SessionEvent::Revoked {
            reason: "session_limit",
            ..
        }
    )));
}
