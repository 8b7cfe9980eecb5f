//! What the two layer targets share: a handler that reports what the layer gave it, a way to
//! drive the public layer synchronously, logins through the layer itself, and the input
//! format (lines of header values).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{HeaderName, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};
use tower_session_guard::{
    Fingerprint, Identity, MemoryStore, PeerAddr, Session, SessionGuardBuilder, SessionGuardLayer,
};

/// The layered service, type-erased so it can live in a `static`.
pub type Svc = BoxCloneSyncService<Request<()>, Response<()>, Infallible>;

/// Long lifetimes, so that the live sessions outlast any fuzz run.
pub const LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The layer's default cookie name and token header.
pub const COOKIE_NAME: &str = "__Host-session";
pub const TOKEN_HEADER: &str = "x-session-token";

/// What the handler saw, put into its response's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub fingerprint: Option<Fingerprint>,
    pub authenticated: bool,
    pub client_ip: Option<IpAddr>,
}

/// `/login` logs in, `/guest` writes guest data (both only while seeding); every other path
/// only looks.
async fn handler(req: Request<()>) -> Result<Response<()>, Infallible> {
    let session = req
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("the layer attaches a Session to every request it passes on");
    match req.uri().path() {
        "/login" => session
            .login(Identity::new("fuzz-user").with_roles(["user"]))
            .await
            .expect("login on the memory store"),
        "/guest" => session
            .insert("visits", 1u32)
            .await
            .expect("guest write on the memory store"),
        _ => {}
    }
    let seen = Seen {
        fingerprint: session.fingerprint(),
        authenticated: session.is_authenticated(),
        client_ip: session.client_ip(),
    };
    let mut res = Response::new(());
    res.extensions_mut().insert(seen);
    Ok(res)
}

/// A layer with the fuzz targets' lifetimes, around the handler.
pub fn service(
    configure: impl FnOnce(SessionGuardBuilder) -> SessionGuardBuilder,
    store: &MemoryStore,
) -> Svc {
    let builder = SessionGuardLayer::builder(store.clone())
        .idle_timeout(LIFETIME)
        .absolute_timeout(LIFETIME);
    let layer = configure(builder)
        .build()
        .expect("valid fuzz configuration");
    BoxCloneSyncService::new(layer.layer(tower::service_fn(handler)))
}

/// Sends one request through the layer. On `MemoryStore` the layer's future is ready without
/// I/O, so a minimal executor is enough.
pub fn call(svc: &Svc, req: Request<()>) -> Response<()> {
    match futures_executor::block_on(svc.clone().oneshot(req)) {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

pub fn request(path: &str, peer: IpAddr) -> Request<()> {
    let mut req = Request::get(path).body(()).expect("a valid request");
    req.extensions_mut()
        .insert(PeerAddr(SocketAddr::new(peer, 40000)));
    req
}

/// Runs `/login` or `/guest` without a token and returns the token the layer issued.
pub fn seed(svc: &Svc, path: &str, peer: IpAddr) -> String {
    seed_with(svc, request(path, peer))
}

/// Runs a `/login` or `/guest` request and returns the token the layer issued.
pub fn seed_with(svc: &Svc, req: Request<()>) -> String {
    let path = req.uri().path().to_owned();
    let res = call(svc, req);
    assert_eq!(res.status(), StatusCode::OK, "seeding {path}");
    if let Some(v) = res.headers().get(TOKEN_HEADER) {
        return v.to_str().expect("a token is ASCII").to_owned();
    }
    let cookie = res
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("the layer issued a token");
    let first = cookie.split(';').next().unwrap_or_default();
    first
        .strip_prefix(COOKIE_NAME)
        .and_then(|v| v.strip_prefix('='))
        .expect("Set-Cookie starts with the session cookie")
        .to_owned()
}

/// The input's lines (`\n` cannot occur in a header value, so it is free as a separator).
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
}

/// `line` with each placeholder byte replaced by its text (the placeholders are control
/// bytes, which cannot occur in a header value either).
pub fn expand(line: &[u8], placeholders: &[(u8, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 64);
    for &b in line {
        match placeholders.iter().find(|(p, _)| *p == b) {
            Some((_, text)) => out.extend_from_slice(text.as_bytes()),
            None => out.push(b),
        }
    }
    out
}

/// Appends a header if the bytes are a valid header value (what a server would accept).
pub fn append(req: &mut Request<()>, name: HeaderName, value: &[u8]) -> bool {
    match HeaderValue::from_bytes(value) {
        Ok(v) => {
            req.headers_mut().append(name, v);
            true
        }
        Err(_) => false,
    }
}

/// What `HeaderValue::to_str` accepts: visible ASCII and tab.
pub fn is_visible_ascii(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}
