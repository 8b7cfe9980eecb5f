//! The post-authentication policy through the layer: the built-in `ValidationPolicy` in allow
//! and deny mode, closure and async policies and their combination, what a policy sees, and
//! when it is (not) asked.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::Router;
use common::*;
use tower_session_guard::{
    ConfigError, Decision, MemoryStore, PinMode, PolicyContext, PolicyError, PolicyMode,
    PostAuthPolicy, Rule, SessionEvent, SessionGuardBuilder, SessionGuardLayer, ValidationPolicy,
};

/// Allow mode's reason when no rule holds.
const NO_RULE: &str = "no rule allows this session (allow mode)";

/// The standard app with `policy` on requests (logins let through, see [`OnRequests`]), the
/// pin mode `pin`, and the harness's clock and events. The login-time check has its own
/// tests at the end of this file.
fn policy_app<P: PostAuthPolicy>(h: &Harness, pin: PinMode, policy: P) -> Router {
    app(h
        .builder(MemoryStore::new())
        .pin_mode(pin)
        .policy(OnRequests(policy))
        .build()
        .expect("valid config"))
}

/// Like `policy_app`, but the builder is finished by `f` (to chain policies).
fn app_from<P: PostAuthPolicy>(
    h: &Harness,
    f: impl FnOnce(SessionGuardBuilder) -> SessionGuardBuilder<P>,
) -> Router {
    app(f(h.builder(MemoryStore::new()))
        .build()
        .expect("valid config"))
}

async fn me_from(app: &Router, token: &str, from: SocketAddr) -> StatusCode {
    call_from(app, Method::GET, "/me", Some(token), Some(from), &[])
        .await
        .status()
}

fn denials(h: &Harness) -> Vec<SessionEvent> {
    h.events
        .all()
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::PolicyDenied { .. }))
        .collect()
}

fn denied(token: &str, user: &str, from: &str, reason: &str) -> SessionEvent {
    SessionEvent::PolicyDenied {
        session: fp(token),
        user_id: user.into(),
        client_ip: ip(from),
        reason: reason.into(),
    }
}

// ----- the demo's validation policy (allow mode) -----

#[tokio::test]
async fn demo_policy_allows_admin_from_the_console_host() {
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Exact, demo_policy());
    let token = login_from(&app, peer("127.0.0.1"), "alice", &["admin"], &[]).await;
    for _ in 0..3 {
        assert_eq!(
            me_from(&app, &token, peer("127.0.0.1")).await,
            StatusCode::OK
        );
    }
    assert!(denials(&h).is_empty());
}

#[tokio::test]
async fn demo_policy_refuses_admin_elsewhere_on_her_next_request() {
    for pin in [PinMode::Off, PinMode::Exact] {
        let h = Harness::new();
        let app = policy_app(&h, pin, demo_policy());
        // The login itself is never checked...
        let token = login_from(&app, peer("127.0.0.2"), "alice", &["admin"], &[]).await;
        assert!(denials(&h).is_empty(), "{pin:?}");

        // ...but the next request is.
        let res = call_from(
            &app,
            Method::GET,
            "/me",
            Some(&token),
            Some(peer("127.0.0.2")),
            &[],
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{pin:?}");
        assert!(has_removal_cookie(&res), "{pin:?}");
        assert_eq!(
            denials(&h),
            [denied(&token, "alice", "127.0.0.2", NO_RULE)],
            "{pin:?}"
        );
        assert_eq!(
            me_from(&app, &token, peer("127.0.0.1")).await,
            StatusCode::UNAUTHORIZED,
            "{pin:?}: the session was destroyed"
        );
    }
}

#[tokio::test]
async fn demo_policy_allows_user_from_another_loopback_address() {
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Exact, demo_policy());
    let token = login_from(&app, peer("127.0.0.2"), "bob", &["user"], &[]).await;
    for _ in 0..3 {
        assert_eq!(
            me_from(&app, &token, peer("127.0.0.2")).await,
            StatusCode::OK
        );
    }
    assert!(denials(&h).is_empty());
}

#[tokio::test]
async fn demo_policy_refuses_user_off_loopback() {
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Off, demo_policy());
    let token = login_from(&app, peer("127.0.0.1"), "bob", &["user"], &[]).await;
    assert_eq!(
        me_from(&app, &token, peer("127.9.9.9")).await,
        StatusCode::OK
    );
    assert_eq!(
        me_from(&app, &token, peer("192.0.2.1")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(denials(&h), [denied(&token, "bob", "192.0.2.1", NO_RULE)]);
}

#[tokio::test]
async fn demo_policy_refuses_user_with_neither_role() {
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Exact, demo_policy());
    let token = login_from(&app, peer("127.0.0.1"), "carol", &["auditor"], &["staff"]).await;
    assert_eq!(
        me_from(&app, &token, peer("127.0.0.1")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(denials(&h), [denied(&token, "carol", "127.0.0.1", NO_RULE)]);
}

// ----- deny mode -----

fn contractors_denied() -> ValidationPolicy {
    ValidationPolicy::builder()
        .mode(PolicyMode::Deny)
        .rule(
            Rule::new("contractors on loopback")
                .groups(["contractors"])
                .ip_ranges(["127.0.0.0/8"]),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn deny_mode_matching_rule_terminates_the_session() {
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Exact, contractors_denied());
    let token = login_from(&app, peer("127.0.0.1"), "bob", &["user"], &["contractors"]).await;
    let res = call_from(&app, Method::GET, "/me", Some(&token), Some(CLIENT), &[]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(has_removal_cookie(&res));
    assert_eq!(
        denials(&h),
        [denied(
            &token,
            "bob",
            "127.0.0.1",
            "rule \"contractors on loopback\" matched (deny mode)"
        )]
    );
}

#[tokio::test]
async fn deny_mode_non_matching_session_continues() {
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Exact, contractors_denied());
    // Not a contractor.
    let alice = login_from(&app, peer("127.0.0.1"), "alice", &["admin"], &["staff"]).await;
    assert_eq!(
        me_from(&app, &alice, peer("127.0.0.1")).await,
        StatusCode::OK
    );
    // A contractor, but not on loopback.
    let bob = login_from(&app, peer("192.0.2.1"), "bob", &["user"], &["contractors"]).await;
    assert_eq!(me_from(&app, &bob, peer("192.0.2.1")).await, StatusCode::OK);
    assert!(denials(&h).is_empty());
}

// ----- rules combining conditions -----

/// A user name naming the case, roles, groups, the address, and the expected status.
type Case = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
    StatusCode,
);

#[tokio::test]
async fn rule_holds_only_when_roles_groups_and_ranges_all_hold() {
    let policy = ValidationPolicy::builder()
        .rule(
            Rule::new("staff admins on the console subnet")
                .roles(["admin", "owner"])
                .groups(["staff"])
                .ip_ranges(["127.0.0.0/24"]),
        )
        .build()
        .unwrap();
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Exact, policy);
    let cases: [Case; 6] = [
        (
            "all-hold",
            &["admin"],
            &["staff"],
            "127.0.0.1",
            StatusCode::OK,
        ),
        (
            "any-role",
            &["owner"],
            &["staff"],
            "127.0.0.9",
            StatusCode::OK,
        ),
        (
            "any-group",
            &["admin"],
            &["ops", "staff"],
            "127.0.0.1",
            StatusCode::OK,
        ),
        (
            "wrong-group",
            &["admin"],
            &["other"],
            "127.0.0.1",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong-role",
            &["user"],
            &["staff"],
            "127.0.0.1",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong-range",
            &["admin"],
            &["staff"],
            "127.0.1.1",
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (case, roles, groups, from, expected) in cases {
        h.events.clear();
        let token = login_from(&app, peer(from), case, roles, groups).await;
        assert_eq!(me_from(&app, &token, peer(from)).await, expected, "{case}");
        let expected_denials = if expected == StatusCode::OK {
            vec![]
        } else {
            vec![denied(&token, case, from, NO_RULE)]
        };
        assert_eq!(denials(&h), expected_denials, "{case}");
    }
}

// ----- closure and async policies -----

/// Denies any request that carries `x-risk: high`.
fn risky_header(ctx: &PolicyContext<'_>) -> Decision {
    if ctx.headers.get("x-risk").is_some_and(|v| v == "high") {
        Decision::deny("risky request")
    } else {
        Decision::Allow
    }
}

#[tokio::test]
async fn closure_policy_can_deny() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let policy = move |ctx: &PolicyContext<'_>| {
        seen.fetch_add(1, Ordering::SeqCst);
        risky_header(ctx)
    };
    let app = policy_app(&h, PinMode::Exact, policy);
    let token = login_token(&app, None).await;
    assert_eq!(me_from(&app, &token, CLIENT).await, StatusCode::OK);

    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(CLIENT),
        &[("x-risk", "high")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(has_removal_cookie(&res));
    assert_eq!(
        denials(&h),
        [denied(&token, "alice", "127.0.0.1", "risky request")]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        me_from(&app, &token, CLIENT).await,
        StatusCode::UNAUTHORIZED,
        "the session was destroyed"
    );
}

/// An asynchronous policy, like one asking a risk service: yields to the runtime, then denies
/// the users on its block list.
#[derive(Clone, Default)]
struct RiskService {
    blocked: Arc<Mutex<Vec<String>>>,
    calls: Arc<AtomicUsize>,
}

impl PostAuthPolicy for RiskService {
    async fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        tokio::task::yield_now().await;
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.blocked.lock().unwrap().contains(&ctx.identity.user_id) {
            Decision::deny("risk service: blocked")
        } else {
            Decision::Allow
        }
    }
}

#[tokio::test]
async fn async_policy_can_deny() {
    let h = Harness::new();
    let risk = RiskService::default();
    let app = policy_app(&h, PinMode::Exact, risk.clone());
    let token = login_token(&app, None).await;
    assert_eq!(me_from(&app, &token, CLIENT).await, StatusCode::OK);

    risk.blocked.lock().unwrap().push("alice".into());
    let res = call_from(&app, Method::GET, "/me", Some(&token), Some(CLIENT), &[]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(has_removal_cookie(&res));
    assert_eq!(
        denials(&h),
        [denied(
            &token,
            "alice",
            "127.0.0.1",
            "risk service: blocked"
        )]
    );
    assert_eq!(risk.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn validation_closure_and_async_policies_must_all_allow() {
    let h = Harness::new();
    let risk = RiskService::default();
    let r = risk.clone();
    let app = app_from(&h, move |b| {
        b.pin_mode(PinMode::Off)
            .policy(OnRequests(demo_policy()))
            .and_policy(OnRequests(|ctx: &PolicyContext<'_>| risky_header(ctx)))
            .and_policy(OnRequests(r))
    });
    risk.blocked.lock().unwrap().push("mallory".into());

    // All allow.
    let token = login_from(&app, CLIENT, "alice", &["admin"], &[]).await;
    assert_eq!(me_from(&app, &token, CLIENT).await, StatusCode::OK);

    // The validation policy denies (admin off the console host); the others would allow.
    assert_eq!(
        me_from(&app, &token, peer("127.0.0.2")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(denials(&h), [denied(&token, "alice", "127.0.0.2", NO_RULE)]);

    // The closure denies; the validation policy would allow.
    h.events.clear();
    let token = login_from(&app, CLIENT, "alice", &["admin"], &[]).await;
    let res = call_from(
        &app,
        Method::GET,
        "/me",
        Some(&token),
        Some(CLIENT),
        &[("x-risk", "high")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        denials(&h),
        [denied(&token, "alice", "127.0.0.1", "risky request")]
    );

    // The async policy denies; the other two would allow.
    h.events.clear();
    let token = login_from(&app, CLIENT, "mallory", &["admin"], &[]).await;
    assert_eq!(
        me_from(&app, &token, CLIENT).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        denials(&h),
        [denied(
            &token,
            "mallory",
            "127.0.0.1",
            "risk service: blocked"
        )]
    );
}

// ----- what the policy sees -----

/// One policy call, as recorded.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: Method,
    uri: String,
    user_id: String,
    roles: Vec<String>,
    groups: Vec<String>,
    client_ip: IpAddr,
    pinned_ip: Option<IpAddr>,
    session_age: Duration,
    idle_time: Duration,
    since_authentication: Duration,
    trace: Option<String>,
}

type Recorded = Arc<Mutex<Vec<Seen>>>;

/// A closure policy that records every context it sees and allows.
fn recorder() -> (
    Recorded,
    impl Fn(&PolicyContext<'_>) -> Decision + Send + Sync + 'static,
) {
    let seen = Recorded::default();
    let log = seen.clone();
    let policy = move |ctx: &PolicyContext<'_>| {
        log.lock().unwrap().push(Seen {
            method: ctx.method.clone(),
            uri: ctx.uri.to_string(),
            user_id: ctx.identity.user_id.clone(),
            roles: ctx.identity.roles.clone(),
            groups: ctx.identity.groups.clone(),
            client_ip: ctx.client_ip,
            pinned_ip: ctx.pinned_ip,
            session_age: ctx.session_age,
            idle_time: ctx.idle_time,
            since_authentication: ctx.since_authentication,
            trace: ctx
                .headers
                .get("x-trace")
                .map(|v| v.to_str().unwrap().to_owned()),
        });
        Decision::Allow
    };
    (seen, policy)
}

#[tokio::test]
async fn policy_context_carries_request_identity_addresses_and_times() {
    let h = Harness::new();
    let (seen, policy) = recorder();
    let app = policy_app(&h, PinMode::Off, policy);
    let token = login_from(&app, CLIENT, "alice", &["admin"], &["staff"]).await;

    h.clock.advance(Duration::from_secs(5));
    let res = call_from(
        &app,
        Method::GET,
        "/get/k?x=1",
        Some(&token),
        Some(peer("127.0.0.2")),
        &[("x-trace", "abc")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // A write records activity...
    h.clock.advance(Duration::from_secs(100));
    let res = call_from(
        &app,
        Method::POST,
        "/counter",
        Some(&token),
        Some(CLIENT),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // ...so the idle time starts over while the session's age does not.
    h.clock.advance(Duration::from_secs(7));
    assert_eq!(me_from(&app, &token, CLIENT).await, StatusCode::OK);

    let alice = |method: Method, uri: &str, from: &str, age: u64, idle: u64, trace| Seen {
        method,
        uri: uri.to_owned(),
        user_id: "alice".into(),
        roles: vec!["admin".into()],
        groups: vec!["staff".into()],
        client_ip: ip(from),
        pinned_ip: Some(ip("127.0.0.1")),
        session_age: Duration::from_secs(age),
        idle_time: Duration::from_secs(idle),
        since_authentication: Duration::from_secs(age),
        trace,
    };
    assert_eq!(
        *seen.lock().unwrap(),
        [
            alice(
                Method::GET,
                "/get/k?x=1",
                "127.0.0.2",
                5,
                5,
                Some("abc".into())
            ),
            alice(Method::POST, "/counter", "127.0.0.1", 105, 105, None),
            alice(Method::GET, "/me", "127.0.0.1", 112, 7, None),
        ]
    );
}

#[tokio::test]
async fn since_authentication_counts_from_login_not_from_the_guest_session() {
    let h = Harness::new();
    let (seen, policy) = recorder();
    let app = policy_app(&h, PinMode::Exact, policy);
    let guest = guest_token(&app, "k", "v").await;
    h.clock.advance(Duration::from_secs(60));
    let token = login_token(&app, Some(&guest)).await;
    h.clock.advance(Duration::from_secs(3));
    assert_eq!(me_from(&app, &token, CLIENT).await, StatusCode::OK);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].since_authentication, Duration::from_secs(3));
    assert_eq!(seen[0].session_age, Duration::from_secs(3));
    assert_eq!(seen[0].idle_time, Duration::from_secs(3));
}

// ----- when the policy is asked -----

fn counting_policy() -> (
    Arc<AtomicUsize>,
    impl Fn(&PolicyContext<'_>) -> Decision + Send + Sync + 'static,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    (calls, move |_: &PolicyContext<'_>| {
        c.fetch_add(1, Ordering::SeqCst);
        Decision::Allow
    })
}

#[tokio::test]
async fn policy_is_never_evaluated_for_guests() {
    let h = Harness::new();
    let (calls, policy) = counting_policy();
    let app = policy_app(&h, PinMode::Exact, policy);
    assert_eq!(
        call_text(&app, Method::GET, "/counter", None).await,
        (StatusCode::OK, "0".to_owned())
    );
    let res = call(&app, Method::POST, "/counter", None).await;
    let guest = token_of(&res).unwrap();
    for from in [Some(CLIENT), Some(peer("127.0.0.2")), None] {
        let res = call_from(&app, Method::POST, "/counter", Some(&guest), from, &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "{from:?}");
    }
    assert_eq!(
        call_text(&app, Method::GET, "/counter", Some(&guest)).await,
        (StatusCode::OK, "4".to_owned())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn policy_runs_at_login_and_on_every_authenticated_request() {
    let h = Harness::new();
    let (calls, policy) = counting_policy();
    let app = app_from(&h, |b| b.pin_mode(PinMode::Exact).policy(policy));
    let token = login_token(&app, None).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "once, before the login");

    const N: usize = 5;
    for i in 1..=N {
        let uri = if i % 2 == 0 { "/me" } else { "/health" };
        let res = call(&app, Method::GET, uri, Some(&token)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert_eq!(calls.load(Ordering::SeqCst), 1 + i, "{uri}");
    }
}

// ----- the policy at login -----

#[tokio::test]
async fn a_policy_deny_at_login_writes_nothing_and_says_why() {
    let h = Harness::new();
    let risk = RiskService::default();
    risk.blocked.lock().unwrap().push("alice".into());
    let store = MemoryStore::new();
    let app = app(h
        .builder(store.clone())
        .policy(risk.clone())
        .build()
        .expect("valid config"));
    // A guest session first: the refused login must leave it as it was.
    let guest = token_of(&call(&app, Method::POST, "/counter", None).await).unwrap();
    h.events.clear();
    let res = call(&app, Method::POST, "/login", Some(&guest)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(token_of(&res), None);
    assert_eq!(
        h.events.all(),
        [SessionEvent::LoginDenied {
            user_id: "alice".into(),
            client_ip: CLIENT.ip(),
            reason: "risk service: blocked".into(),
        }]
    );
    assert_eq!(store.len(), 1, "only the guest session");
    assert_eq!(
        call_text(&app, Method::GET, "/counter", Some(&guest)).await,
        (StatusCode::OK, "1".to_owned())
    );
}

#[tokio::test]
async fn the_policy_knows_when_it_is_asked_at_login() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let h = Harness::new();
    let app = app_from(&h, |b| {
        b.policy(move |ctx: &PolicyContext<'_>| {
            log.lock().unwrap().push((
                ctx.at_login,
                ctx.pinned_ip,
                ctx.method.clone(),
                ctx.uri.path().to_owned(),
            ));
            Decision::Allow
        })
    });
    let token = login_token(&app, None).await;
    call(&app, Method::GET, "/me", Some(&token)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (true, Some(CLIENT.ip()), Method::POST, "/login".to_owned()),
            (false, Some(CLIENT.ip()), Method::GET, "/me".to_owned()),
        ]
    );
}

#[tokio::test]
async fn role_change_mid_session_rotates_the_token_and_the_policy_sees_the_new_role() {
    let h = Harness::new();
    let (seen, recorder) = recorder();
    let app = app_from(&h, |b| {
        b.policy(OnRequests(recorder))
            .and_policy(OnRequests(demo_policy()))
    });
    let from = peer("127.0.0.2");
    let bob = login_from(&app, from, "bob", &["user"], &[]).await;
    assert_eq!(me_from(&app, &bob, from).await, StatusCode::OK);

    let res = call_from(
        &app,
        Method::POST,
        "/roles/admin",
        Some(&bob),
        Some(from),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let promoted = token_of(&res).expect("a privilege change issues a new token");
    assert_ne!(promoted, bob);
    assert!(h.events.all().contains(&SessionEvent::Rotated {
        from: fp(&bob),
        to: fp(&promoted),
        user_id: Some("bob".into()),
    }));

    h.events.clear();
    assert_eq!(
        me_from(&app, &bob, from).await,
        StatusCode::UNAUTHORIZED,
        "the old token is dead"
    );
    assert_eq!(h.events.kinds(), ["unknown_token"]);

    // An admin only from the console host: the new role is refused from 127.0.0.2.
    assert_eq!(
        me_from(&app, &promoted, from).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        denials(&h),
        [denied(&promoted, "bob", "127.0.0.2", NO_RULE)]
    );
    let roles: Vec<Vec<String>> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.roles.clone())
        .collect();
    assert_eq!(roles, [vec!["user"], vec!["user"], vec!["admin"]]);
}

// ----- gRPC -----

#[tokio::test]
async fn policy_deny_on_grpc_request_is_grpc_permission_denied() {
    let h = Harness::new();
    let app = policy_app(&h, PinMode::Exact, demo_policy());
    let from = peer("127.0.0.2");
    let token = login_from(&app, from, "alice", &["admin"], &[]).await;
    let res = call_from(
        &app,
        Method::POST,
        "/me",
        Some(&token),
        Some(from),
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "7");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/grpc");
    assert!(has_removal_cookie(&res));
    assert_eq!(denials(&h), [denied(&token, "alice", "127.0.0.2", NO_RULE)]);
}

// ----- configuration errors -----

#[test]
fn invalid_cidr_in_a_rule_is_a_build_error() {
    let err = ValidationPolicy::builder()
        .rule(Rule::new("x").ip_ranges(["10.0.0.0/33"]))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::InvalidCidr {
            rule: "x".into(),
            value: "10.0.0.0/33".into()
        }
    );
}

#[test]
fn invalid_trusted_proxy_is_a_config_error() {
    let err = SessionGuardLayer::builder(MemoryStore::new())
        .trusted_proxies(["nope"])
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::InvalidCidr("nope".into()));
}

#[test]
fn invalid_allowed_range_is_a_config_error() {
    let err = SessionGuardLayer::builder(MemoryStore::new())
        .allowed_ranges(["10.0.0.0/40"])
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::InvalidCidr("10.0.0.0/40".into()));
}
