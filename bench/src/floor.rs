//! The floor under the layer's in-process cost (issue 14): hand-written tower layers that do
//! only the work the design asks of every authenticated request, and less, each measured by
//! `benches/as_users_run.rs` beside the real layer. They answer one question: how low can any
//! layer that works this way go, whatever its code?
//!
//! * [`identity_app`]: a `Router::layer` that does nothing (what axum charges for any layer);
//! * [`one_extension_app`]: a layer that puts one shared value into the request's extensions
//!   and a handler that reads it (what any per-request session handle costs);
//! * [`floor_app`] with a [`Floor`]: find the session cookie, base64url-decode it, optionally
//!   SHA-256 it and read the system clock, look the key up (a single entry, moka as the
//!   design has it, or a sharded `RwLock<HashMap>`), check expiry, the exact pin, one role and
//!   one address range, and hand the handler a shared handle whose commit checks one flag.
//!
//! None of these is a session layer: no token is issued, rotated, touched or ended. They are
//! lower bounds, not alternatives.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::Digest;

/// The cookie the floor layers read (the crate's default name).
const COOKIE: &[u8] = b"__Host-session=";

/// Where a floor layer looks its session up.
#[derive(Clone, Copy, Debug)]
pub enum Lookup {
    /// One entry behind a mutex: next to free.
    One,
    /// A moka cache, as the design puts on the hot path.
    Moka,
    /// 64 `RwLock<HashMap>` shards.
    Map,
}

/// What a floor layer does per request.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// SHA-256 of the decoded token (the design: the server keeps only the hash).
    pub hash: bool,
    /// Read the system clock for expiry.
    pub clock: bool,
    /// The lookup.
    pub lookup: Lookup,
}

/// The key is already uniformly random (a hash or a random token): its first 8 bytes are the
/// hash, as the crate's memory store does.
#[derive(Default)]
struct FirstBytes(u64);

impl Hasher for FirstBytes {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

type Keyed = BuildHasherDefault<FirstBytes>;
type Key = [u8; 32];

struct Record {
    user: String,
    roles: Vec<String>,
    pinned: IpAddr,
    expires: SystemTime,
}

enum Store {
    One(Mutex<Option<(Key, Arc<Record>)>>),
    Moka(moka::sync::Cache<Key, Arc<Record>, Keyed>),
    Map(Vec<RwLock<HashMap<Key, Arc<Record>, Keyed>>>),
}

impl Store {
    fn new(lookup: Lookup) -> Self {
        match lookup {
            Lookup::One => Store::One(Mutex::new(None)),
            Lookup::Moka => Store::Moka(
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .build_with_hasher(Keyed::default()),
            ),
            Lookup::Map => Store::Map((0..64).map(|_| RwLock::default()).collect()),
        }
    }

    fn get(&self, key: &Key) -> Option<Arc<Record>> {
        match self {
            Store::One(one) => one
                .lock()
                .ok()?
                .as_ref()
                .filter(|(k, _)| k == key)
                .map(|(_, r)| r.clone()),
            Store::Moka(cache) => cache.get(key),
            Store::Map(shards) => shards[usize::from(key[0] & 63)]
                .read()
                .ok()?
                .get(key)
                .cloned(),
        }
    }

    fn put(&self, key: Key, record: Arc<Record>) {
        match self {
            Store::One(one) => {
                if let Ok(mut slot) = one.lock() {
                    *slot = Some((key, record));
                }
            }
            Store::Moka(cache) => cache.insert(key, record),
            Store::Map(shards) => {
                if let Ok(mut shard) = shards[usize::from(key[0] & 63)].write() {
                    shard.insert(key, record);
                }
            }
        }
    }
}

struct Shared {
    floor: Floor,
    store: Store,
    range: ipnet::IpNet,
}

impl Shared {
    fn key(&self, secret: Key) -> Key {
        if self.floor.hash {
            sha2::Sha256::digest(secret).into()
        } else {
            secret
        }
    }

    fn now(&self) -> SystemTime {
        if self.floor.clock {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        }
    }
}

/// The per-request handle the floor layer hands the handler.
#[derive(Clone)]
pub struct FloorSession(Arc<Handle>);

struct Handle {
    record: Option<Arc<Record>>,
    changed: AtomicBool,
}

/// What a floor extractor does: clone its value out of the extensions (500 without it).
fn from_extensions<T: Clone + Send + Sync + 'static>(parts: &Parts) -> Result<T, StatusCode> {
    parts
        .extensions
        .get::<T>()
        .cloned()
        .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl<S: Send + Sync> FromRequestParts<S> for FloorSession {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        from_extensions(parts)
    }
}

/// The session cookie's decoded secret, from the first `Cookie` header that has it.
fn secret(req: &Request<Body>) -> Option<Key> {
    for line in req.headers().get_all(header::COOKIE) {
        for pair in line.as_bytes().split(|&b| b == b';') {
            if let Some(value) = pair.trim_ascii_start().strip_prefix(COOKIE) {
                let mut secret = [0u8; 32];
                return match URL_SAFE_NO_PAD.decode_slice(value, &mut secret) {
                    Ok(32) => Some(secret),
                    _ => None,
                };
            }
        }
    }
    None
}

#[derive(Clone)]
struct FloorService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> tower::Service<Request<Body>> for FloorService<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let shared = &*self.shared;
        let now = shared.now();
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let record = secret(&req)
            .and_then(|s| shared.store.get(&shared.key(s)))
            .filter(|r| {
                (r.expires > now || !shared.floor.clock)
                    && Some(r.pinned) == peer
                    && r.roles.iter().any(|role| role == "user")
                    && peer.is_some_and(|ip| shared.range.contains(&ip))
            });
        let handle = FloorSession(Arc::new(Handle {
            record,
            changed: AtomicBool::new(false),
        }));
        req.extensions_mut().insert(handle.clone());
        FloorFuture {
            fut: self.inner.call(req),
            handle: Some(handle),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, then the commit's one check.
    pub struct FloorFuture<F> {
        #[pin]
        fut: F,
        handle: Option<FloorSession>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for FloorFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let res = std::task::ready!(this.fut.poll(cx));
        if let Some(handle) = this.handle.take() {
            std::hint::black_box(handle.0.changed.load(Ordering::Acquire));
        }
        Poll::Ready(res)
    }
}

async fn floor_me(session: FloorSession) -> Response {
    match &session.0.record {
        Some(record) => crate::me_response(&record.user),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The router `GET /me`, `POST /login` behind a floor layer doing `floor`.
pub fn floor_app(floor: Floor) -> Router {
    let shared = Arc::new(Shared {
        floor,
        store: Store::new(floor.lookup),
        range: ipnet::IpNet::from(ipnet::Ipv4Net::new_assert([127, 0, 0, 0].into(), 8)),
    });
    let at_login = shared.clone();
    let login = post(move || {
        let shared = at_login.clone();
        async move {
            let secret: Key = rand::random();
            shared.store.put(
                shared.key(secret),
                Arc::new(Record {
                    user: crate::USER.to_owned(),
                    roles: vec!["user".to_owned()],
                    pinned: IpAddr::from([127, 0, 0, 1]),
                    expires: SystemTime::now() + Duration::from_secs(3600),
                }),
            );
            let cookie = format!(
                "__Host-session={}; Path=/; Secure; HttpOnly",
                URL_SAFE_NO_PAD.encode(secret)
            );
            ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT)
        }
    });
    Router::new()
        .route("/me", get(floor_me))
        .route("/login", login)
        .layer(tower::layer::layer_fn(move |inner| FloorService {
            inner,
            shared: shared.clone(),
        }))
}

fn with_plain_login(me: MethodRouter) -> Router {
    Router::new()
        .route("/me", me)
        .route("/login", post(|| async { StatusCode::NO_CONTENT }))
}

/// The bare router behind a layer that does nothing.
pub fn identity_app() -> Router {
    with_plain_login(get(|| async { crate::me_response(crate::USER) }))
        .layer(tower::layer::layer_fn(|inner| inner))
}

/// A value one layer puts into the extensions.
#[derive(Clone)]
pub struct OneValue(Arc<String>);

impl<S: Send + Sync> FromRequestParts<S> for OneValue {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        from_extensions(parts)
    }
}

#[derive(Clone)]
struct OneValueService<S> {
    inner: S,
    value: Arc<String>,
}

impl<S> tower::Service<Request<Body>> for OneValueService<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        req.extensions_mut().insert(OneValue(self.value.clone()));
        self.inner.call(req)
    }
}

/// A layer that puts one shared value into the extensions; the handler reads it.
pub fn one_extension_app() -> Router {
    let value = Arc::new(crate::USER.to_owned());
    with_plain_login(get(|v: OneValue| async move { crate::me_response(&v.0) })).layer(
        tower::layer::layer_fn(move |inner| OneValueService {
            inner,
            value: value.clone(),
        }),
    )
}
