//! Shared helpers for the behaviour tests: an axum app behind `SessionGuardLayer`, request
//! and cookie helpers, an event collector, and store wrappers that count calls or fail.
//!
//! Every test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_session_guard::store::{
    LoginOutcome, SessionKey, SessionLimit, SessionStore, StoreError, WriteOutcome,
};
use tower_session_guard::{
    ClientIp, Fingerprint, Identity, ManualClock, MemoryStore, PeerAddr, PostAuthPolicy, Rule,
    Session, SessionError, SessionEvent, SessionGuardBuilder, SessionGuardLayer, SessionRecord,
    ValidationPolicy,
};

/// The default cookie name.
pub const COOKIE: &str = "__Host-session";

// ----- the app -----

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session
        .login(Identity::new("alice").with_roles(["admin"]))
        .await?;
    Ok("welcome")
}

async fn login_as(
    session: Session,
    Path(user): Path<String>,
) -> Result<&'static str, SessionError> {
    session.login(Identity::new(user)).await?;
    Ok("welcome")
}

/// The query of `POST /login-with`: comma-separated roles and groups, either may be absent.
#[derive(serde::Deserialize)]
struct LoginWith {
    user: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    groups: String,
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').filter(|x| !x.is_empty())
}

async fn login_with(
    session: Session,
    Query(q): Query<LoginWith>,
) -> Result<&'static str, SessionError> {
    let identity = Identity::new(q.user)
        .with_roles(list(&q.roles))
        .with_groups(list(&q.groups));
    session.login(identity).await?;
    Ok("welcome")
}

/// Replaces the roles of the logged-in identity (comma-separated; `-` for none).
async fn set_roles(
    session: Session,
    Path(roles): Path<String>,
) -> Result<&'static str, SessionError> {
    let roles: Vec<String> = list(&roles)
        .filter(|r| *r != "-")
        .map(str::to_owned)
        .collect();
    session.update_identity(|id| id.roles = roles).await?;
    Ok("updated")
}

/// What the handler sees of the client address: the session's view and the extractor.
async fn show_ip(session: Session, ext: Option<ClientIp>) -> String {
    let session_ip = session
        .client_ip()
        .map_or_else(|| "none".to_owned(), |ip| ip.to_string());
    let ext_ip = ext.map_or_else(|| "none".to_owned(), |ClientIp(ip)| ip.to_string());
    format!("{session_ip} {ext_ip}")
}

async fn me(session: Session) -> Response<Body> {
    match session.identity() {
        Some(identity) => Json(identity).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.logout().await?;
    Ok("bye")
}

async fn bump(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

async fn count(session: Session) -> Result<String, SessionError> {
    Ok(session.get::<u64>("count")?.unwrap_or(0).to_string())
}

async fn set(
    session: Session,
    Path((k, v)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&k, v).await?;
    Ok("ok")
}

async fn get_value(
    session: Session,
    Path(k): Path<String>,
) -> Result<Response<Body>, SessionError> {
    Ok(match session.get::<String>(&k)? {
        Some(v) => v.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

async fn rotate(session: Session) -> Result<&'static str, SessionError> {
    session.rotate().await?;
    Ok("rotated")
}

/// The routes every test app has (no layer yet), so a test can `merge` its own routes first.
///
/// * `POST /login`: logs in alice (role admin); `POST /login/{user}`: logs in `user`
/// * `GET /me`: the identity as JSON, or 401
/// * `POST /logout`
/// * `POST /counter`: atomic increment of `count`, returns the new count
/// * `GET /counter`: `count`, 0 if absent or no session
/// * `POST /set/{k}/{v}`, `GET /get/{k}` (404 if absent)
/// * `POST /rotate`
/// * `GET /health`: never touches the session
/// * `POST /login-with?user=U&roles=a,b&groups=c`: logs in `U` with those roles and groups
/// * `POST /roles/{roles}`: replaces the logged-in user's roles (comma-separated, `-` for
///   none) through `Session::update_identity`, which rotates the token
/// * `GET /ip`: `"<session.client_ip()> <ClientIp extractor>"`, `none` for an absent one
pub fn routes() -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/login/{user}", post(login_as))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/counter", post(bump).get(count))
        .route("/set/{k}/{v}", post(set))
        .route("/get/{k}", get(get_value))
        .route("/rotate", post(rotate))
        .route("/health", get(|| async { "ok" }))
        .route("/login-with", post(login_with))
        .route("/roles/{roles}", post(set_roles))
        .route("/ip", get(show_ip))
}

/// `routes()` behind `layer`, whatever its policy.
pub fn app<P: PostAuthPolicy>(layer: SessionGuardLayer<P>) -> Router {
    routes().layer(layer)
}

/// What a test keeps while the layer owns the rest: the clock and the events.
#[derive(Clone)]
pub struct Harness {
    pub clock: ManualClock,
    pub events: Events,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            clock: ManualClock::new(),
            events: Events::default(),
        }
    }

    /// A builder for `store` with this harness's clock and event sink.
    /// Every event is emitted one by one (no aggregation): these tests assert exact event
    /// sequences. `tests/abuse.rs` tests the aggregation itself.
    pub fn builder(&self, store: impl SessionStore) -> SessionGuardBuilder {
        SessionGuardLayer::builder(store)
            .clock(self.clock.clone())
            .event_sink(self.events.sink())
            .event_aggregation(Duration::ZERO)
    }

    /// The standard app on `store`, default settings.
    pub fn app<St: SessionStore>(&self, store: St) -> Router {
        app(self.builder(store).build().expect("valid config"))
    }
}

/// The standard app on a fresh `MemoryStore`, with its harness.
pub fn default_app() -> (Router, Harness) {
    let h = Harness::new();
    (h.app(MemoryStore::new()), h)
}

// ----- requests and responses -----

/// A request with an empty body and, if given, the session cookie.
pub fn request(method: Method, uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::COOKIE, format!("{COOKIE}={t}"));
    }
    b.extension(PeerAddr(CLIENT)).body(Body::empty()).unwrap()
}

/// A request from `from` (`None`: no connection info at all), with the session cookie if
/// given and these extra headers.
pub fn request_from(
    method: Method,
    uri: &str,
    token: Option<&str>,
    from: Option<SocketAddr>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::COOKIE, format!("{COOKIE}={t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if let Some(addr) = from {
        b = b.extension(PeerAddr(addr));
    }
    b.body(Body::empty()).unwrap()
}

/// `send(request_from(..))`.
pub async fn call_from(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    from: Option<SocketAddr>,
    headers: &[(&str, &str)],
) -> Response<Body> {
    send(app, request_from(method, uri, token, from, headers)).await
}

/// `ip` on port 40000, as a connection's peer address.
pub fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("an IP address"), 40000)
}

/// `ip` parsed.
pub fn ip(ip: &str) -> IpAddr {
    ip.parse().expect("an IP address")
}

/// The connection address every test request comes from, unless a test says otherwise.
pub const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

/// A request carrying exactly these `Cookie` header values (one header each).
pub fn request_with_cookie_headers(
    method: Method,
    uri: &str,
    cookies: Vec<HeaderValue>,
) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .extension(PeerAddr(CLIENT))
        .body(Body::empty())
        .unwrap();
    for c in cookies {
        req.headers_mut().append(header::COOKIE, c);
    }
    req
}

/// Sends `req` through a clone of `app`.
pub async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.expect("infallible")
}

/// `send(request(method, uri, token))`.
pub async fn call(app: &Router, method: Method, uri: &str, token: Option<&str>) -> Response<Body> {
    send(app, request(method, uri, token)).await
}

/// Status and body text.
pub async fn call_text(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let res = call(app, method, uri, token).await;
    let status = res.status();
    (status, body_text(res).await)
}

pub async fn body_text(res: Response<Body>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Every `Set-Cookie` value of the response.
pub fn set_cookies<B>(res: &Response<B>) -> Vec<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The token from `Set-Cookie: __Host-session=<token>; ...`, if the response issued one
/// (a removal cookie, with its empty value, is not a token).
pub fn token_of<B>(res: &Response<B>) -> Option<String> {
    set_cookies(res).into_iter().find_map(|c| {
        let value = c.strip_prefix(&format!("{COOKIE}="))?;
        let token = value.split(';').next().unwrap_or("");
        (!token.is_empty()).then(|| token.to_owned())
    })
}

/// Whether the response carries the removal cookie (empty value, `Max-Age=0`).
pub fn has_removal_cookie<B>(res: &Response<B>) -> bool {
    set_cookies(res)
        .iter()
        .any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Max-Age=0"))
}

/// Logs in `user` with `roles` and `groups` from `from` and returns the new token.
pub async fn login_from(
    app: &Router,
    from: SocketAddr,
    user: &str,
    roles: &[&str],
    groups: &[&str],
) -> String {
    let uri = format!(
        "/login-with?user={user}&roles={}&groups={}",
        roles.join(","),
        groups.join(",")
    );
    let res = call_from(app, Method::POST, &uri, None, Some(from), &[]).await;
    assert_eq!(res.status(), StatusCode::OK, "login of {user} from {from}");
    token_of(&res).expect("login issues a token")
}

/// The demo's validation policy (allow mode): "admins from the console host" (role admin,
/// 127.0.0.1/32 and ::1/128) and "users on loopback" (role user, 127.0.0.0/8 and ::1/128).
pub fn demo_policy() -> ValidationPolicy {
    ValidationPolicy::builder()
        .rule(
            Rule::new("admins from the console host")
                .roles(["admin"])
                .ip_ranges(["127.0.0.1/32", "::1/128"]),
        )
        .rule(
            Rule::new("users on loopback")
                .roles(["user"])
                .ip_ranges(["127.0.0.0/8", "::1/128"]),
        )
        .build()
        .expect("valid demo policy")
}

/// Logs in (carrying `token` if given) and returns the new token.
pub async fn login_token(app: &Router, token: Option<&str>) -> String {
    let res = call(app, Method::POST, "/login", token).await;
    assert_eq!(res.status(), StatusCode::OK);
    token_of(&res).expect("login issues a token")
}

/// Creates a guest session by writing `k=v` and returns its token.
pub async fn guest_token(app: &Router, k: &str, v: &str) -> String {
    let res = call(app, Method::POST, &format!("/set/{k}/{v}"), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    token_of(&res).expect("a guest write issues a token")
}

/// The fingerprint events show for a token.
pub fn fp(token: &str) -> Fingerprint {
    SessionKey::from_token_str(token)
        .expect("well-formed token")
        .fingerprint()
}

/// A well-formed token that no session has: 32 fixed bytes, base64url.
pub const PLANTED: &str = "QXR0YWNrZXJDaG9zZW5TZXNzaW9uSWQtMzItYnl0ZXM";

// ----- events -----

/// Collects every event the layer emits.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<SessionEvent>>>);

impl Events {
    pub fn sink(&self) -> impl Fn(&SessionEvent) + Send + Sync + 'static {
        let events = self.0.clone();
        move |e: &SessionEvent| events.lock().unwrap().push(e.clone())
    }

    pub fn all(&self) -> Vec<SessionEvent> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear()
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.all().iter().map(SessionEvent::kind).collect()
    }
}

// ----- stores -----

/// Counts every call to the wrapped store.
#[derive(Clone)]
pub struct CountingStore<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            calls: Arc::default(),
        }
    }

    /// A handle on the count that stays valid after the store moves into the layer.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.calls.clone()
    }

    fn hit(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl<S: SessionStore> SessionStore for CountingStore<S> {
    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        self.hit();
        self.inner.load(key).await
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.hit();
        self.inner.create(key, record, ttl).await
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.hit();
        self.inner.update(key, expected, record, ttl).await
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.hit();
        self.inner.rotate(old, expected, new, record, ttl).await
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, StoreError> {
        self.hit();
        self.inner.delete(key).await
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        self.hit();
        self.inner.login(old, new, record, ttl, limit).await
    }

    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError> {
        self.hit();
        self.inner.user_sessions(user_id, limit).await
    }
}

/// A store that fails every operation while its switch is on.
#[derive(Clone)]
pub struct FlakyStore<S> {
    inner: S,
    down: Arc<AtomicBool>,
}

impl<S> FlakyStore<S> {
    pub fn new(inner: S) -> Self {
        FlakyStore {
            inner,
            down: Arc::default(),
        }
    }

    /// The switch, which stays valid after the store moves into the layer.
    pub fn switch(&self) -> Arc<AtomicBool> {
        self.down.clone()
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::new("down"))
        } else {
            Ok(())
        }
    }
}

impl<S: SessionStore> SessionStore for FlakyStore<S> {
    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        self.check()?;
        self.inner.load(key).await
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.check()?;
        self.inner.create(key, record, ttl).await
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.check()?;
        self.inner.update(key, expected, record, ttl).await
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.check()?;
        self.inner.rotate(old, expected, new, record, ttl).await
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        self.check()?;
        self.inner.login(old, new, record, ttl, limit).await
    }

    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError> {
        self.check()?;
        self.inner.user_sessions(user_id, limit).await
    }
}

/// The inner policy on requests only: a login is let through without asking it. Logins now
/// consult the policy before writing (tested in `tests/policy.rs`); these tests are about
/// the request path's decisions, so their logins must succeed for the scenario to reach the
/// requests the policy then refuses.
pub struct OnRequests<P>(pub P);

impl<P: PostAuthPolicy> PostAuthPolicy for OnRequests<P> {
    async fn evaluate(
        &self,
        ctx: &tower_session_guard::PolicyContext<'_>,
    ) -> tower_session_guard::Decision {
        if ctx.at_login {
            return tower_session_guard::Decision::Allow;
        }
        self.0.evaluate(ctx).await
    }

    fn evaluate_now(
        &self,
        ctx: &tower_session_guard::PolicyContext<'_>,
    ) -> Option<tower_session_guard::Decision> {
        if ctx.at_login {
            return Some(tower_session_guard::Decision::Allow);
        }
        self.0.evaluate_now(ctx)
    }
}
