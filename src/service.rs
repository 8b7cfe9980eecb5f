//! The tower [`Service`]: one request, top to bottom.
//!
//! ```text
//! client IP ─► token from header or Cookie ─► load record ─► expiry ─► [authenticated] pin ─► policy
//!           ─► Session into extensions ─► inner service
//!           ─► commit: Set-Cookie for a new/rotated ID, removal after logout,
//!              or a throttled activity touch
//! ```

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response};
use tower_service::Service;

use crate::client_ip::{self, ClientIp};
use crate::config::Config;
use crate::cookie::{self, Via};
use crate::events::SessionEvent;
use crate::id::SessionKey;
use crate::pin;
use crate::policy::{Decision, PolicyContext, PostAuthPolicy};
use crate::record::Identity;
use crate::rejection::{respond, Rejection};
use crate::session::{Live, Session};
use crate::store::{DynStore, SessionStore, Write};

/// The middleware service built by [`SessionGuardLayer`](crate::SessionGuardLayer).
pub struct SessionGuard<S, St, P> {
    inner: S,
    store: Arc<St>,
    policy: Arc<P>,
    config: Arc<Config>,
}

impl<S, St, P> SessionGuard<S, St, P> {
    pub(crate) fn new(inner: S, store: Arc<St>, policy: Arc<P>, config: Arc<Config>) -> Self {
        SessionGuard {
            inner,
            store,
            policy,
            config,
        }
    }
}

impl<S: Clone, St, P> Clone for SessionGuard<S, St, P> {
    fn clone(&self) -> Self {
        SessionGuard {
            inner: self.inner.clone(),
            store: self.store.clone(),
            policy: self.policy.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: std::fmt::Debug, St, P> std::fmt::Debug for SessionGuard<S, St, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGuard")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The response future of [`SessionGuard`].
pub struct ResponseFuture<B, E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>,
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S, St, P, ReqBody, ResBody> Service<Request<ReqBody>> for SessionGuard<S, St, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: SessionStore,
    P: PostAuthPolicy,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness is the one that must be called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (key, reply) = cookie::read_token(req.headers(), &self.config);
        ResponseFuture {
            inner: Box::pin(handle(
                inner,
                self.store.clone(),
                self.policy.clone(),
                self.config.clone(),
                key,
                reply,
                req,
            )),
        }
    }
}

async fn handle<S, St, P, ReqBody, ResBody>(
    mut inner: S,
    store: Arc<St>,
    policy: Arc<P>,
    config: Arc<Config>,
    key: Option<SessionKey>,
    reply: Via,
    mut req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: SessionStore,
    P: PostAuthPolicy,
    ResBody: Default,
{
    let now = config.clock.now();
    let client_ip = client_ip::resolve(req.headers(), req.extensions(), &config.trusted_proxies);
    let current = match load(&*store, &config, key, now).await {
        Ok(current) => current,
        Err(rejection) => return Ok(respond(&*config.rejections, rejection, req.headers())),
    };
    if let Some(live) = &current {
        let view = RequestView::of(&req);
        let checked = check_authenticated(&*policy, &config, live, client_ip, view, now).await;
        if let Err(rejection) = checked {
            return Ok(terminate(&*store, &config, live, rejection, reply, view.headers).await);
        }
    }
    if let Some(ip) = client_ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let session = Session::new(
        store.clone() as Arc<dyn DynStore>,
        config.clone(),
        current,
        client_ip,
        req.headers().get(http::header::USER_AGENT).cloned(),
    );
    req.extensions_mut().insert(session.clone());
    let mut res = inner.call(req).await?;
    commit(&*store, &config, &session, now, reply, res.headers_mut()).await;
    Ok(res)
}

/// The live session for the presented key. No key: no store access at all. An unknown or
/// expired key is "no session" (never adopted). A store error fails closed.
async fn load<St: SessionStore>(
    store: &St,
    config: &Config,
    key: Option<SessionKey>,
    now: SystemTime,
) -> Result<Option<Live>, Rejection> {
    let Some(key) = key else {
        return Ok(None);
    };
    let session = key.fingerprint();
    let record = match store.load(key).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            config.emit(SessionEvent::UnknownToken { session });
            return Ok(None);
        }
        Err(e) => {
            config.emit(SessionEvent::StoreFailed {
                session: Some(session),
                error: e.to_string(),
            });
            return Err(Rejection::StoreUnavailable);
        }
    };
    if let Some(kind) = record.expiry(now, config.idle_timeout, config.absolute_timeout) {
        // Expired means refused whether or not the delete succeeds; the delete only frees
        // the slot early (the store's own TTL would drop it too).
        if let Err(e) = store.delete(key).await {
            config.emit(SessionEvent::StoreFailed {
                session: Some(session),
                error: e.to_string(),
            });
        }
        config.emit(SessionEvent::Expired {
            session,
            kind,
            user_id: record.identity.as_ref().map(|i| i.user_id.clone()),
        });
        return Ok(None);
    }
    Ok(Some(Live { key, record }))
}

/// The pin, then the policy, for an authenticated session; guests pass untouched.
async fn check_authenticated<P: PostAuthPolicy>(
    policy: &P,
    config: &Config,
    live: &Live,
    client_ip: Option<IpAddr>,
    req: RequestView<'_>,
    now: SystemTime,
) -> Result<(), Rejection> {
    let record = &live.record;
    let Some(identity) = &record.identity else {
        return Ok(());
    };
    let session = live.key.fingerprint();
    let Some(ip) = client_ip else {
        config.emit(SessionEvent::ClientIpUnknown {
            session: Some(session),
            error: client_ip::HOW_TO_PROVIDE_PEER,
        });
        return Err(Rejection::ClientIpUnknown);
    };
    if let Some(reason) = pin_failure(config, record.pinned_ip, ip) {
        config.emit(SessionEvent::PinViolation {
            session,
            user_id: identity.user_id.clone(),
            expected: record.pinned_ip,
            actual: ip,
            reason,
        });
        return Err(Rejection::PinViolation);
    }
    let ctx = policy_context(identity, record, ip, req, now);
    match policy.evaluate(&ctx).await {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => {
            config.emit(SessionEvent::PolicyDenied {
                session,
                user_id: identity.user_id.clone(),
                client_ip: ip,
                reason: reason.into_owned(),
            });
            Err(Rejection::PolicyDenied)
        }
    }
}

fn pin_failure(config: &Config, pinned: Option<IpAddr>, actual: IpAddr) -> Option<&'static str> {
    let pin_ok = match pinned {
        Some(pinned) => config.pin.allows(pinned, actual),
        // An authenticated record without a pin cannot be verified: refuse unless pinning is off.
        None => config.pin == pin::PinMode::Off,
    };
    if !pin_ok {
        Some("address_changed")
    } else if !pin::in_ranges(&config.allowed_ranges, actual) {
        Some("outside_allowed_ranges")
    } else {
        None
    }
}

/// The parts of the request a policy sees. Borrowed separately from the body so the future
/// stays `Send` for bodies that are not `Sync`.
#[derive(Clone, Copy)]
struct RequestView<'a> {
    method: &'a http::Method,
    uri: &'a http::Uri,
    headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    fn of<B>(req: &'a Request<B>) -> Self {
        RequestView {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        }
    }
}

fn policy_context<'a>(
    identity: &'a Identity,
    record: &crate::record::SessionRecord,
    client_ip: IpAddr,
    req: RequestView<'a>,
    now: SystemTime,
) -> PolicyContext<'a> {
    let since = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
    PolicyContext {
        client_ip,
        pinned_ip: record.pinned_ip,
        identity,
        session_age: since(record.created_at),
        idle_time: since(record.last_seen),
        since_authentication: record.authenticated_at.map(since).unwrap_or(Duration::ZERO),
        method: req.method,
        uri: req.uri,
        headers: req.headers,
    }
}

/// A pin or policy failure: destroy the session on the server, then refuse with the removal
/// cookie. A refused request never reaches the handler. If the delete fails the request is
/// still refused; the record stays expired-by-TTL at worst, and every later request from the
/// wrong address is refused again.
async fn terminate<St: SessionStore, B: Default>(
    store: &St,
    config: &Config,
    live: &Live,
    rejection: Rejection,
    reply: Via,
    request_headers: &HeaderMap,
) -> Response<B> {
    let mut res = respond(&*config.rejections, rejection, request_headers);
    if rejection == Rejection::ClientIpUnknown {
        return res;
    }
    if let Err(e) = store.delete(live.key).await {
        config.emit(SessionEvent::StoreFailed {
            session: Some(live.key.fingerprint()),
            error: e.to_string(),
        });
    }
    cookie::remove_token(res.headers_mut(), config, reply);
    res
}

/// After the handler: hand out a new or rotated ID, remove the cookie after logout, or
/// record activity. Never sends a removal cookie for a token it did not end itself: that
/// could clobber the cookie a concurrent login just rotated.
async fn commit<St: SessionStore>(
    store: &St,
    config: &Config,
    session: &Session,
    now: SystemTime,
    reply: Via,
    headers: &mut HeaderMap,
) {
    let (live, issued, ended, wrote) = {
        let mut st = session.state();
        (st.current.clone(), st.issued.take(), st.ended, st.wrote)
    };
    match (live, issued) {
        (Some(live), Some(token)) => {
            let max_age = config.cookie.persistent.then(|| {
                (live.record.created_at + config.absolute_timeout)
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO)
            });
            cookie::issue_token(headers, config, reply, &token, max_age);
        }
        _ if ended => cookie::remove_token(headers, config, reply),
        (Some(live), None) if !wrote => touch(store, config, live, now).await,
        _ => {}
    }
}

/// Records activity on a read, at most once per touch interval (idle / 20), so a busy
/// session costs a store write only now and then.
async fn touch<St: SessionStore>(store: &St, config: &Config, live: Live, now: SystemTime) {
    let since = now
        .duration_since(live.record.last_seen)
        .unwrap_or(Duration::ZERO);
    if since < config.touch_interval {
        return;
    }
    let mut rec = crate::record::SessionRecord::clone(&live.record);
    rec.last_seen = now;
    rec.version += 1;
    let ttl = config.store_ttl(&rec, now);
    // A conflict means another request wrote meanwhile, which recorded activity too.
    match store
        .update(live.key, live.record.version, Arc::new(rec), ttl)
        .await
    {
        Ok(Write::Applied | Write::Conflict) => {}
        Err(e) => config.emit(SessionEvent::StoreFailed {
            session: Some(live.key.fingerprint()),
            error: e.to_string(),
        }),
    }
}
