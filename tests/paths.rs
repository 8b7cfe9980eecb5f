//! The synchronous and asynchronous paths behave the same.
//!
//! The layer does everything before the handler inside `call` when the store answers
//! `load_now` and the policy answers `evaluate_now`, and otherwise continues on a boxed future
//! that resumes at the step where it had to wait (load, expired delete, async policy,
//! terminate). One scripted scenario runs here under every combination of a store that answers
//! now or only asynchronously and a policy that answers now or only asynchronously, and every
//! step's observable outcome (status, rejection, issued token, removal cookie, body, events)
//! must be the same in all four. A probe on the store and the policy checks that each
//! configuration really took the path it claims.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::Router;
use common::*;
use tower_session_guard::store::{
    LoginOutcome, SessionKey, SessionLimit, SessionStore, StoreError, WriteOutcome,
};
use tower_session_guard::{
    Decision, MemoryStore, PinMode, PolicyContext, PostAuthPolicy, Rejection, SessionEvent,
    SessionRecord,
};

/// The default idle timeout (the scenario keeps the default timeouts).
const IDLE: Duration = Duration::from_secs(30 * 60);
/// The default absolute timeout.
const ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);
/// The touch interval: idle / 20.
const TOUCH: Duration = Duration::from_secs(30 * 60 / 20);
const SECOND: Duration = Duration::from_secs(1);

/// Allow mode's reason when no rule holds.
const NO_RULE: &str = "no rule allows this session (allow mode)";

// ----- wrappers that force the asynchronous path -----

/// Delegates the store methods other than `load_now` and `load` to `self.0`.
macro_rules! delegate_writes {
    () => {
        fn create(
            &self,
            key: SessionKey,
            record: Arc<SessionRecord>,
            ttl: Duration,
        ) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> + Send {
            self.0.create(key, record, ttl)
        }

        fn update(
            &self,
            key: SessionKey,
            expected: u64,
            record: Arc<SessionRecord>,
            ttl: Duration,
        ) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> + Send {
            self.0.update(key, expected, record, ttl)
        }

        fn rotate(
            &self,
            old: SessionKey,
            expected: u64,
            new: SessionKey,
            record: Arc<SessionRecord>,
            ttl: Duration,
        ) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> + Send {
            self.0.rotate(old, expected, new, record, ttl)
        }

        fn delete(
            &self,
            key: SessionKey,
        ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send {
            self.0.delete(key)
        }

        fn login(
            &self,
            old: Option<(SessionKey, u64)>,
            new: SessionKey,
            record: Arc<SessionRecord>,
            ttl: Duration,
            limit: Option<SessionLimit>,
        ) -> impl std::future::Future<Output = Result<LoginOutcome, StoreError>> + Send {
            self.0.login(old, new, record, ttl, limit)
        }

        fn user_sessions(
            &self,
            user_id: &str,
            limit: usize,
        ) -> impl std::future::Future<
            Output = Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError>,
        > + Send {
            self.0.user_sessions(user_id, limit)
        }
    };
}

/// The inner store, except that it never answers `load_now` (the default `None`): every
/// request with a token takes the asynchronous path at the load. Its `load` yields once
/// before delegating, so the boxed future really is suspended there, as on a remote store.
struct AsyncOnly<S>(S);

impl<S: SessionStore> SessionStore for AsyncOnly<S> {
    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        tokio::task::yield_now().await;
        self.0.load(key).await
    }

    delegate_writes!();
}

/// The inner policy, answering only through `evaluate` (yielding once first), so the policy
/// step always continues on the asynchronous path.
struct AsyncPolicy<P>(P);

impl<P: PostAuthPolicy> PostAuthPolicy for AsyncPolicy<P> {
    async fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        tokio::task::yield_now().await;
        self.0.evaluate(ctx).await
    }
}

/// Counts, through [`Counted`], how the layer asked the store and the policy.
#[derive(Clone, Default)]
struct Probe(Arc<[AtomicUsize; 4]>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    load_now: usize,
    load: usize,
    evaluate_now: usize,
    evaluate: usize,
}

impl Probe {
    fn hit(&self, i: usize) {
        self.0[i].fetch_add(1, Ordering::SeqCst);
    }

    fn counts(&self) -> Counts {
        let n = |i: usize| self.0[i].load(Ordering::SeqCst);
        Counts {
            load_now: n(0),
            load: n(1),
            evaluate_now: n(2),
            evaluate: n(3),
        }
    }
}

/// A store or a policy that counts the calls that choose the layer's path (`load_now` and
/// `load`, `evaluate_now` and `evaluate`) and otherwise just delegates.
struct Counted<T>(T, Probe);

impl<S: SessionStore> SessionStore for Counted<S> {
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>> {
        self.1.hit(0);
        self.0.load_now(key)
    }

    fn load(
        &self,
        key: SessionKey,
    ) -> impl std::future::Future<Output = Result<Option<Arc<SessionRecord>>, StoreError>> + Send
    {
        self.1.hit(1);
        self.0.load(key)
    }

    delegate_writes!();
}

impl<P: PostAuthPolicy> PostAuthPolicy for Counted<P> {
    fn evaluate_now(&self, ctx: &PolicyContext<'_>) -> Option<Decision> {
        self.1.hit(2);
        self.0.evaluate_now(ctx)
    }

    fn evaluate(
        &self,
        ctx: &PolicyContext<'_>,
    ) -> impl std::future::Future<Output = Decision> + Send {
        self.1.hit(3);
        self.0.evaluate(ctx)
    }
}

// ----- the scenario -----

/// What one step of the scenario showed, with nothing that differs between runs by chance:
/// tokens and fingerprints are replaced by labels (`#0`, `#1`, ...) given in order of first
/// appearance in the run.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    name: String,
    status: StatusCode,
    /// The layer's own answer, if it refused the request.
    rejection: Option<Rejection>,
    /// The label of the token a `Set-Cookie` issued.
    issued: Option<String>,
    removal: bool,
    body: String,
    /// `h.events.kinds()` for this step.
    kinds: Vec<&'static str>,
    /// The same events in full, as JSON with fingerprints labelled.
    events: Vec<String>,
}

/// One configuration's run of the scenario.
struct Run {
    config: &'static str,
    app: Router,
    h: Harness,
    labels: HashMap<String, String>,
    steps: Vec<Step>,
}

impl Run {
    fn label(&mut self, fingerprint: String) -> String {
        let next = format!("#{}", self.labels.len());
        self.labels.entry(fingerprint).or_insert(next).clone()
    }

    /// An event as JSON, its fingerprints replaced by labels.
    fn describe(&mut self, event: &SessionEvent) -> String {
        let mut value = serde_json::to_value(event).expect("events serialise");
        if let Some(fields) = value.as_object_mut() {
            for field in ["session", "previous", "from", "to"] {
                if let Some(serde_json::Value::String(f)) = fields.get(field) {
                    let label = self.label(f.clone());
                    fields.insert(field.to_owned(), serde_json::Value::String(label));
                }
            }
        }
        value.to_string()
    }

    /// Sends one request, records what it showed, and returns the token it issued, if any.
    /// `request` is `"METHOD /uri"`.
    async fn step(
        &mut self,
        name: impl Into<String>,
        request: &str,
        token: Option<&str>,
        from: Option<SocketAddr>,
    ) -> Option<String> {
        let name = name.into();
        let (method, uri) = request.split_once(' ').expect("\"METHOD /uri\"");
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let res = call_from(&self.app, method, uri, token, from, &[]).await;
        let status = res.status();
        let rejection = res.extensions().get::<Rejection>().copied();
        let token = token_of(&res);
        let removal = has_removal_cookie(&res);
        let body = body_text(res).await;
        let kinds = self.h.events.kinds();
        let all = self.h.events.all();
        self.h.events.clear();
        let events = all.iter().map(|e| self.describe(e)).collect();
        let issued = token.as_deref().map(|t| self.label(fp(t).to_string()));
        self.steps.push(Step {
            name,
            status,
            rejection,
            issued,
            removal,
            body,
            kinds,
            events,
        });
        token
    }

    /// A step that must issue a token (a login or a first write), which the scenario goes on
    /// with.
    async fn step_issuing(
        &mut self,
        name: &str,
        request: &str,
        token: Option<&str>,
        from: Option<SocketAddr>,
    ) -> String {
        let config = self.config;
        self.step(name, request, token, from)
            .await
            .unwrap_or_else(|| panic!("{config}: step {name:?} issued no token"))
    }
}

/// The scenario, on `store` with `policy` (the demo policy or a wrapper of it), exact pinning
/// and the default timeouts. Returns every step's record.
async fn scenario<St: SessionStore, P: PostAuthPolicy>(
    config: &'static str,
    store: St,
    policy: P,
) -> Vec<Step> {
    let h = Harness::new();
    let layer = h
        .builder(store)
        .pin_mode(PinMode::Exact)
        .policy(OnRequests(policy))
        .build()
        .expect("valid config");
    let mut r = Run {
        config,
        app: app(layer),
        h: h.clone(),
        labels: HashMap::new(),
        steps: Vec::new(),
    };
    let here = Some(CLIENT);
    let other = Some(peer("127.0.0.2"));

    // No session at all, then a planted token that matches none.
    r.step("no cookie: read", "GET /counter", None, here).await;
    r.step("no cookie, no peer: guest read", "GET /counter", None, None)
        .await;
    r.step("planted token: read", "GET /counter", Some(PLANTED), here)
        .await;

    // A guest session.
    let guest = r
        .step_issuing("guest: first write", "POST /set/cart/book", None, here)
        .await;
    r.step("guest: read", "GET /get/cart", Some(&guest), here)
        .await;
    r.step("guest: second write", "POST /counter", Some(&guest), here)
        .await;

    // Login rotates the token; the guest's data moves along, its token dies.
    let alice = r
        .step_issuing(
            "alice (admin): login over the guest session",
            "POST /login-with?user=alice&roles=admin",
            Some(&guest),
            here,
        )
        .await;
    assert_ne!(alice, guest, "{config}: login rotates the token");
    r.step(
        "old guest token after login",
        "GET /get/cart",
        Some(&guest),
        here,
    )
    .await;
    r.step(
        "alice: read passes pin and policy",
        "GET /me",
        Some(&alice),
        here,
    )
    .await;
    r.step(
        "alice: guest data kept",
        "GET /get/cart",
        Some(&alice),
        here,
    )
    .await;
    r.step("alice: write", "POST /counter", Some(&alice), here)
        .await;

    // An activity touch keeps the session alive past its original idle deadline.
    h.clock.advance(TOUCH + SECOND);
    r.step(
        "alice: read after the touch interval",
        "GET /me",
        Some(&alice),
        here,
    )
    .await;
    h.clock.advance(IDLE - TOUCH);
    r.step(
        "alice: read past the original idle deadline",
        "GET /counter",
        Some(&alice),
        here,
    )
    .await;

    // An explicit rotation.
    let rotated = r
        .step_issuing("alice: rotate", "POST /rotate", Some(&alice), here)
        .await;
    r.step(
        "alice: old token after rotate",
        "GET /me",
        Some(&alice),
        here,
    )
    .await;
    r.step("alice: rotated token", "GET /me", Some(&rotated), here)
        .await;

    // Pin violation: refused, and the session is gone even from the right address.
    r.step(
        "alice from another address",
        "GET /me",
        Some(&rotated),
        other,
    )
    .await;
    r.step(
        "alice from her address after the pin violation",
        "GET /me",
        Some(&rotated),
        here,
    )
    .await;

    // Policy deny: a user the demo policy allows nowhere.
    let carol = r
        .step_issuing(
            "carol (auditor): login",
            "POST /login-with?user=carol&roles=auditor&groups=staff",
            None,
            here,
        )
        .await;
    r.step(
        "carol: read denied by policy",
        "GET /me",
        Some(&carol),
        here,
    )
    .await;
    r.step("carol: read after the deny", "GET /me", Some(&carol), here)
        .await;

    // Idle expiry, of an authenticated session (pinned to another loopback address, which
    // the policy allows for role user) and of a guest session.
    let bob = r
        .step_issuing(
            "bob (user): login from 127.0.0.2",
            "POST /login-with?user=bob&roles=user",
            None,
            other,
        )
        .await;
    r.step("bob: read", "GET /me", Some(&bob), other).await;
    let guest2 = r
        .step_issuing("guest 2: first write", "POST /counter", None, here)
        .await;
    h.clock.advance(IDLE + SECOND);
    r.step(
        "bob: read after the idle timeout",
        "GET /me",
        Some(&bob),
        other,
    )
    .await;
    r.step("bob: read after expiry", "GET /me", Some(&bob), other)
        .await;
    r.step(
        "guest 2: read after the idle timeout",
        "GET /counter",
        Some(&guest2),
        here,
    )
    .await;

    // Absolute expiry: active every 25 minutes (so never idle) until the absolute timeout.
    let frank = r
        .step_issuing(
            "frank (user): login",
            "POST /login-with?user=frank&roles=user",
            None,
            here,
        )
        .await;
    let every = Duration::from_secs(25 * 60);
    let reads = ABSOLUTE.as_secs() / every.as_secs();
    for i in 1..=reads {
        h.clock.advance(every);
        r.step(
            format!("frank: read {i} of {reads}"),
            "GET /me",
            Some(&frank),
            here,
        )
        .await;
    }
    h.clock.advance(every);
    r.step(
        "frank: read past the absolute timeout",
        "GET /me",
        Some(&frank),
        here,
    )
    .await;

    // Logout.
    let dave = r
        .step_issuing(
            "dave (user): login",
            "POST /login-with?user=dave&roles=user",
            None,
            here,
        )
        .await;
    r.step("dave: read", "GET /me", Some(&dave), here).await;
    r.step("dave: logout", "POST /logout", Some(&dave), here)
        .await;
    r.step("dave: read after logout", "GET /me", Some(&dave), here)
        .await;

    // No peer address on an authenticated session: a wiring error, the session is kept.
    let erin = r
        .step_issuing(
            "erin (user): login",
            "POST /login-with?user=erin&roles=user",
            None,
            here,
        )
        .await;
    r.step(
        "erin: read without a peer address",
        "GET /me",
        Some(&erin),
        None,
    )
    .await;
    r.step(
        "erin: read from her address afterwards",
        "GET /me",
        Some(&erin),
        here,
    )
    .await;

    r.steps
}

fn find<'a>(steps: &'a [Step], name: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name:?}"))
}

/// What the reference run must show, so that agreement between the runs means something.
fn check_expectations(steps: &[Step]) {
    let ok = |name: &str, body: &str, kinds: &[&str]| {
        let s = find(steps, name);
        assert_eq!(s.status, StatusCode::OK, "{name}: {s:?}");
        assert_eq!(s.rejection, None, "{name}: {s:?}");
        assert!(!s.removal, "{name}: {s:?}");
        if !body.is_empty() {
            assert_eq!(s.body, body, "{name}: {s:?}");
        }
        assert_eq!(s.kinds, kinds, "{name}: {s:?}");
    };
    ok("no cookie: read", "0", &[]);
    ok("no cookie, no peer: guest read", "0", &[]);
    ok("planted token: read", "0", &["unknown_token"]);
    ok("guest: first write", "ok", &["created"]);
    ok("guest: read", "book", &[]);
    ok("guest: second write", "1", &[]);
    ok(
        "alice (admin): login over the guest session",
        "welcome",
        &["logged_in"],
    );
    assert_eq!(
        find(steps, "old guest token after login").status,
        StatusCode::NOT_FOUND
    );
    ok("alice: guest data kept", "book", &[]);
    ok("alice: write", "2", &[]);
    ok("alice: read after the touch interval", "", &[]);
    ok("alice: read past the original idle deadline", "2", &[]);
    ok("alice: rotate", "rotated", &["rotated"]);
    ok("alice: rotated token", "", &[]);

    let me = find(steps, "alice: read passes pin and policy");
    assert_eq!(me.status, StatusCode::OK);
    let identity: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(identity["user_id"], "alice");

    // A removal cookie goes only with an ending (logout, pin violation, policy deny), never
    // for an unknown token or an uneventful request.
    for s in steps {
        if s.kinds.is_empty() || s.kinds == ["unknown_token"] {
            assert!(!s.removal, "{}: {s:?}", s.name);
        }
    }

    let refused = |name: &str, rejection: Rejection, kinds: &[&str]| {
        let s = find(steps, name);
        assert_eq!(s.status, rejection.http_status(), "{name}: {s:?}");
        assert_eq!(s.rejection, Some(rejection), "{name}: {s:?}");
        assert_eq!(s.issued, None, "{name}: {s:?}");
        assert_eq!(s.kinds, kinds, "{name}: {s:?}");
    };
    refused(
        "alice from another address",
        Rejection::PinViolation,
        &["pin_violation"],
    );
    assert!(find(steps, "alice from another address").removal);
    refused(
        "carol: read denied by policy",
        Rejection::PolicyDenied,
        &["policy_denied"],
    );
    let deny = find(steps, "carol: read denied by policy");
    assert!(deny.removal);
    assert!(deny.events[0].contains(NO_RULE), "{deny:?}");
    refused(
        "erin: read without a peer address",
        Rejection::ClientIpUnknown,
        &["client_ip_unknown"],
    );
    assert!(!find(steps, "erin: read without a peer address").removal);
    ok("erin: read from her address afterwards", "", &[]);

    // Sessions that were ended are unknown afterwards: the handler's own 401 for no identity.
    let dead = |name: &str, kinds: &[&str]| {
        let s = find(steps, name);
        assert_eq!(s.status, StatusCode::UNAUTHORIZED, "{name}: {s:?}");
        assert_eq!(s.rejection, None, "{name}: the handler answered: {s:?}");
        assert!(!s.removal, "{name}: {s:?}");
        assert_eq!(s.kinds, kinds, "{name}: {s:?}");
    };
    dead("alice: old token after rotate", &["unknown_token"]);
    dead(
        "alice from her address after the pin violation",
        &["unknown_token"],
    );
    dead("carol: read after the deny", &["unknown_token"]);
    dead("bob: read after the idle timeout", &["expired"]);
    dead("bob: read after expiry", &["unknown_token"]);
    dead("frank: read past the absolute timeout", &["expired"]);
    dead("dave: read after logout", &["unknown_token"]);
    ok("guest 2: read after the idle timeout", "0", &["expired"]);

    assert!(find(steps, "bob: read after the idle timeout").events[0].contains(r#""kind":"idle""#));
    assert!(
        find(steps, "frank: read past the absolute timeout").events[0]
            .contains(r#""kind":"absolute""#)
    );
    assert!(
        find(steps, "guest 2: read after the idle timeout").events[0].contains(r#""kind":"idle""#)
    );

    let logout = find(steps, "dave: logout");
    assert_eq!(
        (logout.status, logout.removal, logout.kinds.as_slice()),
        (StatusCode::OK, true, &["logged_out"][..])
    );
    assert!(steps
        .iter()
        .filter(|s| s.name.starts_with("frank: read ") && s.name.contains(" of "))
        .all(|s| s.status == StatusCode::OK && s.kinds.is_empty()));
}

/// How one configuration answers: whether the store answers `load_now`, whether the policy
/// answers `evaluate_now`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answers {
    Now,
    Later,
}

/// Runs the scenario with the store and policy answering as told, probed.
async fn configuration(store: Answers, policy: Answers) -> (&'static str, Vec<Step>, Counts) {
    let probe = Probe::default();
    let memory = Counted(MemoryStore::new(), probe.clone());
    let demo = Counted(demo_policy(), probe.clone());
    let (config, steps) = match (store, policy) {
        (Answers::Now, Answers::Now) => {
            let config = "(MemoryStore, sync policy)";
            (config, scenario(config, memory, demo).await)
        }
        (Answers::Later, Answers::Now) => {
            let config = "(AsyncOnly<MemoryStore>, sync policy)";
            (config, scenario(config, AsyncOnly(memory), demo).await)
        }
        (Answers::Now, Answers::Later) => {
            let config = "(MemoryStore, AsyncPolicy)";
            (config, scenario(config, memory, AsyncPolicy(demo)).await)
        }
        (Answers::Later, Answers::Later) => {
            let config = "(AsyncOnly<MemoryStore>, AsyncPolicy)";
            (
                config,
                scenario(config, AsyncOnly(memory), AsyncPolicy(demo)).await,
            )
        }
    };
    (config, steps, probe.counts())
}

#[tokio::test]
async fn the_four_configurations_agree_step_by_step() {
    let (_, reference, reference_counts) = configuration(Answers::Now, Answers::Now).await;
    check_expectations(&reference);
    // Every load and every policy decision of the reference was answered now.
    let loads = reference_counts.load_now;
    let decisions = reference_counts.evaluate_now;
    assert!(loads > 0 && decisions > 0, "{reference_counts:?}");
    assert_eq!(
        (reference_counts.load, reference_counts.evaluate),
        (0, 0),
        "{reference_counts:?}"
    );

    let mut differences = Vec::new();
    for (store, policy) in [
        (Answers::Later, Answers::Now),
        (Answers::Now, Answers::Later),
        (Answers::Later, Answers::Later),
    ] {
        let (config, steps, counts) = configuration(store, policy).await;
        // The configuration took the path it claims: the same number of loads and decisions
        // as the reference, each answered now or later as told, never both.
        let expected = Counts {
            load_now: if store == Answers::Now { loads } else { 0 },
            load: if store == Answers::Later { loads } else { 0 },
            evaluate_now: if policy == Answers::Now { decisions } else { 0 },
            evaluate: if policy == Answers::Later {
                decisions
            } else {
                0
            },
        };
        if counts != expected {
            differences.push(format!(
                "{config}: store and policy calls {counts:?}, expected {expected:?}"
            ));
        }
        if steps.len() != reference.len() {
            differences.push(format!(
                "{config}: {} steps, the reference has {}",
                steps.len(),
                reference.len()
            ));
        }
        for (i, (want, got)) in reference.iter().zip(&steps).enumerate() {
            if want != got {
                differences.push(format!(
                    "{config}: step {i} {:?} differs from (MemoryStore, sync policy)\n  \
                     reference: {want:?}\n  this run:  {got:?}",
                    want.name
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

// ----- a pair of a synchronous and an asynchronous policy -----

/// Denies user `mallory`; counts its calls.
fn blocklist(
    calls: Arc<AtomicUsize>,
) -> impl Fn(&PolicyContext<'_>) -> Decision + Send + Sync + 'static {
    move |ctx: &PolicyContext<'_>| {
        calls.fetch_add(1, Ordering::SeqCst);
        if ctx.identity.user_id == "mallory" {
            Decision::deny("blocklisted")
        } else {
            Decision::Allow
        }
    }
}

fn denied(token: &str, user: &str, reason: &str) -> SessionEvent {
    SessionEvent::PolicyDenied {
        session: fp(token),
        user_id: user.into(),
        client_ip: CLIENT.ip(),
        reason: reason.into(),
    }
}

/// The pair (demo policy, async blocklist) behind `app`: the first decides when it denies,
/// the second (asked once, only after the first allows) when it denies.
async fn check_pair(config: &str, app: &Router, h: &Harness, calls: &AtomicUsize) {
    let me = |token: String| async move {
        call_from(app, Method::GET, "/me", Some(&token), Some(CLIENT), &[]).await
    };

    let alice = login_from(app, CLIENT, "alice", &["admin"], &[]).await;
    h.events.clear();
    for i in 1..=2 {
        let res = me(alice.clone()).await;
        assert_eq!(res.status(), StatusCode::OK, "{config}: alice read {i}");
        assert_eq!(calls.load(Ordering::SeqCst), i, "{config}: alice read {i}");
    }
    assert!(h.events.all().is_empty(), "{config}: {:?}", h.events.all());

    // The first policy denies: the second is not asked.
    let carol = login_from(app, CLIENT, "carol", &["auditor"], &[]).await;
    h.events.clear();
    let res = me(carol.clone()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{config}: carol");
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::PolicyDenied),
        "{config}: carol"
    );
    assert!(has_removal_cookie(&res), "{config}: carol");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "{config}: carol");
    assert_eq!(
        h.events.all(),
        [denied(&carol, "carol", NO_RULE)],
        "{config}: carol"
    );

    // The first allows, the asynchronous second denies.
    let mallory = login_from(app, CLIENT, "mallory", &["user"], &[]).await;
    h.events.clear();
    let res = me(mallory.clone()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{config}: mallory");
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::PolicyDenied),
        "{config}: mallory"
    );
    assert!(has_removal_cookie(&res), "{config}: mallory");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "{config}: mallory");
    assert_eq!(
        h.events.all(),
        [denied(&mallory, "mallory", "blocklisted")],
        "{config}: mallory"
    );

    // Both denied sessions are gone; alice's is not.
    h.events.clear();
    for (user, token) in [("carol", carol), ("mallory", mallory)] {
        let res = me(token).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{config}: {user}");
        assert_eq!(
            res.extensions().get::<Rejection>(),
            None,
            "{config}: {user}"
        );
    }
    assert_eq!(
        h.events.kinds(),
        ["unknown_token", "unknown_token"],
        "{config}"
    );
    assert_eq!(me(alice).await.status(), StatusCode::OK, "{config}: alice");
}

#[tokio::test]
async fn a_pair_of_a_sync_and_an_async_policy_decides_in_order() {
    {
        let h = Harness::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = h
            .builder(MemoryStore::new())
            .policy(OnRequests((
                demo_policy(),
                AsyncPolicy(blocklist(calls.clone())),
            )))
            .build()
            .unwrap();
        check_pair(".policy((sync, async))", &app(layer), &h, &calls).await;
    }
    {
        let h = Harness::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = h
            .builder(MemoryStore::new())
            .policy(OnRequests(demo_policy()))
            .and_policy(OnRequests(AsyncPolicy(blocklist(calls.clone()))))
            .build()
            .unwrap();
        check_pair(".policy(sync).and_policy(async)", &app(layer), &h, &calls).await;
    }
    {
        let h = Harness::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = h
            .builder(AsyncOnly(MemoryStore::new()))
            .policy(OnRequests(demo_policy()))
            .and_policy(OnRequests(AsyncPolicy(blocklist(calls.clone()))))
            .build()
            .unwrap();
        check_pair(
            "AsyncOnly store, .policy(sync).and_policy(async)",
            &app(layer),
            &h,
            &calls,
        )
        .await;
    }
}

// ----- a store error from `load_now` -----

/// The inner store, but while `down` is on, `load_now` answers with an error (and `load`,
/// which the layer must then not ask, still works).
struct LoadNowFails<S>(S, Arc<AtomicBool>);

impl<S: SessionStore> SessionStore for LoadNowFails<S> {
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>> {
        if self.1.load(Ordering::SeqCst) {
            Some(Err(StoreError::new("down")))
        } else {
            self.0.load_now(key)
        }
    }

    fn load(
        &self,
        key: SessionKey,
    ) -> impl std::future::Future<Output = Result<Option<Arc<SessionRecord>>, StoreError>> + Send
    {
        self.0.load(key)
    }

    delegate_writes!();
}

/// `routes()` plus `GET /hit`, which counts its calls, behind a default layer on `store`.
fn counting_app<St: SessionStore>(h: &Harness, store: St, hits: Arc<AtomicUsize>) -> Router {
    let layer = h.builder(store).build().unwrap();
    Router::new()
        .route(
            "/hit",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "hit" }
            }),
        )
        .merge(routes())
        .layer(layer)
}

/// While the store is down: 503 with `store_failed` for a request with a session, and the
/// handler never runs; a request without a token is unaffected; the sessions survive.
async fn check_store_down(config: &str, app: &Router, h: &Harness, down: &AtomicBool) {
    let alice = login_from(app, CLIENT, "alice", &["admin"], &[]).await;
    let guest = guest_token(app, "k", "v").await;
    down.store(true, Ordering::SeqCst);
    h.events.clear();

    for (who, token) in [("alice", &*alice), ("guest", &*guest), ("planted", PLANTED)] {
        let res = call_from(app, Method::GET, "/hit", Some(token), Some(CLIENT), &[]).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{config}: {who}"
        );
        assert_eq!(
            res.extensions().get::<Rejection>(),
            Some(&Rejection::StoreUnavailable),
            "{config}: {who}"
        );
        assert!(set_cookies(&res).is_empty(), "{config}: {who}");
        let events = h.events.all();
        h.events.clear();
        assert_eq!(
            events,
            [SessionEvent::StoreFailed {
                session: Some(fp(token)),
                error: "session store error: down".into(),
            }],
            "{config}: {who}"
        );
    }

    let res = call_from(app, Method::GET, "/hit", None, Some(CLIENT), &[]).await;
    assert_eq!(res.status(), StatusCode::OK, "{config}: no token");
    assert!(h.events.all().is_empty(), "{config}: {:?}", h.events.all());

    down.store(false, Ordering::SeqCst);
    assert_eq!(
        call_text(app, Method::GET, "/me", Some(&alice)).await.0,
        StatusCode::OK,
        "{config}: alice's session survived"
    );
    assert_eq!(
        call_text(app, Method::GET, "/get/k", Some(&guest)).await,
        (StatusCode::OK, "v".to_owned()),
        "{config}: the guest session survived"
    );
}

#[tokio::test]
async fn a_store_error_fails_closed_on_both_paths_without_running_the_handler() {
    // Synchronous path: `load_now` answers with the error.
    let h = Harness::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let app = counting_app(
        &h,
        LoadNowFails(MemoryStore::new(), down.clone()),
        hits.clone(),
    );
    check_store_down("load_now error", &app, &h, &down).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the request without a token"
    );

    // Asynchronous path: `load` fails (FlakyStore never answers `load_now`).
    let h = Harness::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let store = FlakyStore::new(MemoryStore::new());
    let down = store.switch();
    let app = counting_app(&h, store, hits.clone());
    check_store_down("load error", &app, &h, &down).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the request without a token"
    );
}
