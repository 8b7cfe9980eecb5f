//! The tower [`Service`]: one request, top to bottom.
//!
//! ```text
//! client IP ─► token from header or Cookie ─► load record ─► expiry ─► [authenticated] pin ─► policy
//!           ─► Session into extensions ─► inner service
//!           ─► commit: Set-Cookie for a new/rotated ID, removal after logout,
//!              or a throttled activity touch
//! ```
//!
//! Two paths run these steps. The **synchronous path**, taken when the store answers the load
//! from memory ([`SessionStore::load_now`]) and the policy answers at once
//! ([`PostAuthPolicy::evaluate_now`]), does everything before the handler inside `call` and
//! returns the inner service's own future, unboxed, wrapped in [`ResponseFuture`]: no async
//! step and no allocation for the layer's future. This is every request on
//! [`MemoryStore`](crate::MemoryStore), on a Redis near-cache hit, and with the built-in
//! policies. Everything else (a store round trip, an asynchronous policy, deleting an expired
//! or refused session) continues on the **asynchronous path**, one boxed future that resumes
//! at the step the synchronous path stopped at, so no step runs (or emits its event) twice.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::abuse::Guess;
use crate::client_ip::{self, ClientAddr, ClientIp};
use crate::config::Config;
use crate::cookie::{self, Candidates, Via};
use crate::events::SessionEvent;
use crate::id::SessionKey;
use crate::layer::{Backend, Core};
use crate::pin;
use crate::policy::{Decision, PolicyContext, PostAuthPolicy};
use crate::record::{ExpiryKind, Identity, SessionRecord};
use crate::rejection::{respond, Rejection};
use crate::session::{Live, Session};
use crate::store::{SessionStore, StoreError, WriteOutcome};

/// The middleware service built by [`SessionGuardLayer`](crate::SessionGuardLayer).
pub struct SessionGuard<S, St, P> {
    inner: S,
    core: Arc<Core<St, P>>,
}

impl<S, St, P> SessionGuard<S, St, P> {
    pub(crate) fn new(inner: S, core: Arc<Core<St, P>>) -> Self {
        SessionGuard { inner, core }
    }
}

impl<S: Clone, St, P> Clone for SessionGuard<S, St, P> {
    fn clone(&self) -> Self {
        SessionGuard {
            inner: self.inner.clone(),
            core: self.core.clone(),
        }
    }
}

impl<S: std::fmt::Debug, St, P> std::fmt::Debug for SessionGuard<S, St, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGuard")
            .field("inner", &self.inner)
            .field("config", &self.core.config)
            .finish_non_exhaustive()
    }
}

type BoxResponse<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;
type BoxTouch = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project! {
    /// The response future of [`SessionGuard`]: on the synchronous path, the inner service's
    /// own future (not boxed) plus the commit step; otherwise the layer's boxed continuation.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        /// The synchronous path: the handler is running; `after` commits when it returns.
        Inner { #[pin] fut: F, after: Option<After> },
        /// The asynchronous path.
        Boxed { fut: BoxResponse<B, E> },
        /// A throttled activity write, before the finished response is handed on.
        Touch { fut: BoxTouch, res: Option<Response<B>> },
        /// An answer the layer made itself (a store failure, a missing peer address).
        Ready { res: Option<Response<B>> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn inner(fut: F, after: After) -> Self {
        ResponseFuture {
            state: State::Inner {
                fut,
                after: Some(after),
            },
        }
    }

    fn boxed(fut: BoxResponse<B, E>) -> Self {
        ResponseFuture {
            state: State::Boxed { fut },
        }
    }

    fn ready(res: Response<B>) -> Self {
        ResponseFuture {
            state: State::Ready { res: Some(res) },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        // At most two turns: Inner may become Touch, which then returns.
        loop {
            match state.as_mut().project() {
                StateProj::Inner { fut, after } => {
                    let mut res = std::task::ready!(fut.poll(cx))?;
                    let touch = after.take().and_then(|a| a.commit(res.headers_mut()));
                    match touch {
                        None => return Poll::Ready(Ok(res)),
                        Some(fut) => state.set(State::Touch {
                            fut,
                            res: Some(res),
                        }),
                    }
                }
                StateProj::Boxed { fut } => return fut.as_mut().poll(cx),
                StateProj::Touch { fut, res } => {
                    std::task::ready!(fut.as_mut().poll(cx));
                    // `None` only if polled again after completion, which callers must not
                    // do; like `futures::future::Fuse`, such a poll stays pending.
                    return res.take().map_or(Poll::Pending, |r| Poll::Ready(Ok(r)));
                }
                StateProj::Ready { res } => {
                    return res.take().map_or(Poll::Pending, |r| Poll::Ready(Ok(r)));
                }
            }
        }
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
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
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let core = &*self.core;
        let config = &core.config;
        let now = config.clock.now();
        let (candidates, reply) = cookie::read_token(req.headers(), config);
        let client = client_ip::resolve(req.headers(), req.extensions(), &config.proxies);
        let next = match candidates.first() {
            None => Next::Go(None),
            Some(_) => {
                // Before any policy or handler can log the headers.
                cookie::mark_sensitive(req.headers_mut(), config);
                let view = RequestView::of(&req);
                let mut pick = Pick::default();
                let mut next = None;
                for (i, key) in candidates.from(0) {
                    let Some(loaded) = core.store.load_now(key) else {
                        next = Some(Next::Then(Stage::Load {
                            candidates,
                            from: i,
                            pick: std::mem::take(&mut pick),
                        }));
                        break;
                    };
                    next = consider(
                        &core.policy,
                        config,
                        key,
                        loaded,
                        client,
                        view,
                        now,
                        &mut pick,
                    );
                    if next.is_some() {
                        break;
                    }
                }
                next.unwrap_or_else(|| pick.finish())
            }
        };
        match next {
            Next::Go(current) => {
                let after = attach(&mut req, &self.core, current, client, reply, now);
                // Called here, on the service `poll_ready` readied: no clone of the inner
                // service (for an axum route, a boxed clone) on this path.
                ResponseFuture::inner(self.inner.call(req), after)
            }
            Next::Stop(rejection) => {
                ResponseFuture::ready(respond(&*config.rejections, rejection, req.headers()))
            }
            Next::Then(stage) => ResponseFuture::boxed(Box::pin(handle(
                take_readied(&mut self.inner),
                self.core.clone(),
                Resume {
                    stage,
                    reply,
                    client,
                    now,
                },
                req,
            ))),
        }
    }
}

/// The service `poll_ready` readied, for a future that calls it later; a fresh clone stays
/// behind for the next request (the tower pattern for services that are `Clone`).
fn take_readied<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// What the asynchronous path resumes with.
struct Resume {
    stage: Stage,
    reply: Via,
    client: ClientAddr,
    now: SystemTime,
}

/// The step at which the synchronous path had to wait.
enum Stage {
    /// The store cannot answer the load of candidate `from` without a round trip.
    Load {
        candidates: Candidates,
        from: usize,
        pick: Pick,
    },
    /// The record has expired: delete it, then go on without a session.
    Expired(Live, ExpiryKind),
    /// The session passed its pin; the policy must be awaited.
    Policy(Live, IpAddr),
    /// The session was refused: end it on the server, then answer.
    Terminate(Live, Rejection),
}

/// What the synchronous steps decided.
enum Next {
    /// On to the handler, with this session (or none).
    Go(Option<Live>),
    /// Answer now, ending nothing (a store failure, a missing peer address).
    Stop(Rejection),
    /// Continue asynchronously from this stage.
    Then(Stage),
}

/// The asynchronous path: resumes at `resume.stage`, runs the remaining steps, the handler,
/// and the commit.
async fn handle<S, St, P, ReqBody, ResBody>(
    mut inner: S,
    core: Arc<Core<St, P>>,
    resume: Resume,
    mut req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: SessionStore,
    P: PostAuthPolicy,
    ResBody: Default,
{
    let Core {
        store,
        policy,
        config,
    } = &*core;
    let Resume {
        mut stage,
        reply,
        client,
        now,
    } = resume;
    // Each stage moves forward (load → policy → terminate), so this ends within four turns.
    let current = loop {
        let view = RequestView::of(&req);
        let next = match stage {
            Stage::Load {
                candidates,
                from,
                mut pick,
            } => {
                let mut next = None;
                for (_, key) in candidates.from(from) {
                    let loaded = store.load(key).await;
                    next = consider(policy, config, key, loaded, client, view, now, &mut pick);
                    if next.is_some() {
                        break;
                    }
                }
                next.unwrap_or_else(|| pick.finish())
            }
            Stage::Expired(live, kind) => {
                expire(store, config, live, kind).await;
                Next::Go(None)
            }
            Stage::Policy(live, ip) => {
                let decision = {
                    let Some(identity) = &live.record.identity else {
                        break Some(live);
                    };
                    let ctx = policy_context(identity, &live.record, ip, view, now);
                    policy.evaluate(&ctx).await
                };
                decided(config, live, ip, decision)
            }
            Stage::Terminate(live, rejection) => {
                return Ok(terminate(store, config, &live, rejection, reply, view.headers).await);
            }
        };
        match next {
            Next::Go(current) => break current,
            Next::Stop(rejection) => {
                return Ok(respond(&*config.rejections, rejection, req.headers()));
            }
            Next::Then(next) => stage = next,
        }
    };
    let after = attach(&mut req, &core, current, client, reply, now);
    let mut res = inner.call(req).await?;
    if let Some(touch) = after.commit(res.headers_mut()) {
        touch.await;
    }
    Ok(res)
}

/// What the candidates loaded so far left behind: the first expired one (deleted and
/// reported if no candidate is live) and whether an unknown one came from an address that is
/// cooling down after ID guessing.
#[derive(Default)]
struct Pick {
    expired: Option<(Live, ExpiryKind)>,
    blocked: bool,
}

impl Pick {
    /// No candidate was live.
    fn finish(self) -> Next {
        match self.expired {
            Some((live, kind)) => Next::Then(Stage::Expired(live, kind)),
            None if self.blocked => Next::Stop(Rejection::TooManyUnknownTokens),
            None => Next::Go(None),
        }
    }
}

/// One candidate's load, and everything after it that needs no waiting: the outcome of the
/// load, expiry, the pin, and the policy if it can answer now. `None`: try the next candidate.
#[allow(clippy::too_many_arguments)]
fn consider<P: PostAuthPolicy>(
    policy: &P,
    config: &Config,
    key: SessionKey,
    loaded: Result<Option<Arc<SessionRecord>>, StoreError>,
    client: ClientAddr,
    req: RequestView<'_>,
    now: SystemTime,
    pick: &mut Pick,
) -> Option<Next> {
    let record = match loaded {
        Ok(Some(record)) => record,
        // An unknown key is "no session" (never adopted).
        Ok(None) => {
            unknown_token(config, key, client, now, pick);
            return None;
        }
        // A store error fails closed.
        Err(e) => {
            config.emit(SessionEvent::StoreFailed {
                session: Some(key.fingerprint()),
                error: e.to_string(),
            });
            return Some(Next::Stop(Rejection::StoreUnavailable));
        }
    };
    let live = Live { key, record };
    if let Some(kind) = config.expiry(&live.record, now) {
        pick.expired.get_or_insert((live, kind));
        return None;
    }
    Some(check(policy, config, live, client, req, now))
}

/// An unknown token: reported (aggregated), and counted towards ID-guessing detection.
fn unknown_token(
    config: &Config,
    key: SessionKey,
    client: ClientAddr,
    now: SystemTime,
    pick: &mut Pick,
) {
    config.emit(SessionEvent::UnknownToken {
        session: key.fingerprint(),
        client_ip: client.ip(),
    });
    let Some(ip) = client.budget_key() else {
        return;
    };
    match config.budgets.unknown_token(ip, key, now) {
        Guess::Normal => {}
        Guess::Blocked => pick.blocked = true,
        Guess::Detected { count } => {
            let limit = config.budgets.guessing();
            config.emit(SessionEvent::TokenGuessing {
                client_ip: ip,
                unknown_tokens: count,
                window_secs: limit.map_or(0, |l| l.window.as_secs()),
                cooldown_secs: limit.and_then(|l| l.cooldown).map(|c| c.as_secs()),
            });
        }
    }
}

/// The pin, then the policy (if it can answer now), for an authenticated session; guests
/// pass untouched.
fn check<P: PostAuthPolicy>(
    policy: &P,
    config: &Config,
    live: Live,
    client: ClientAddr,
    req: RequestView<'_>,
    now: SystemTime,
) -> Next {
    let record = &live.record;
    let Some(identity) = &record.identity else {
        return Next::Go(Some(live));
    };
    // An unknown address never passes: not the pin, not the ranges, not the policy. The
    // session is kept (a wiring problem or a forged header is no proof of a hijack).
    let Some(ip) = client.ip() else {
        config.emit(SessionEvent::ClientIpUnknown {
            session: Some(live.key.fingerprint()),
            error: client.problem(),
        });
        return Next::Stop(match client {
            ClientAddr::NoPeer => Rejection::ClientIpUnknown,
            _ => Rejection::ClientIpUnverifiable,
        });
    };
    if let Some(reason) = pin_failure(config, record.pinned_ip, ip) {
        config.emit(SessionEvent::PinViolation {
            session: live.key.fingerprint(),
            user_id: identity.user_id.clone(),
            expected: record.pinned_ip,
            actual: ip,
            reason,
        });
        return Next::Then(Stage::Terminate(live, Rejection::PinViolation));
    }
    let ctx = policy_context(identity, record, ip, req, now);
    match policy.evaluate_now(&ctx) {
        Some(decision) => decided(config, live, ip, decision),
        None => Next::Then(Stage::Policy(live, ip)),
    }
}

/// A policy's decision, as the next step.
fn decided(config: &Config, live: Live, client_ip: IpAddr, decision: Decision) -> Next {
    match decision {
        Decision::Allow => Next::Go(Some(live)),
        Decision::Deny { reason } => {
            config.emit(SessionEvent::PolicyDenied {
                session: live.key.fingerprint(),
                user_id: live
                    .record
                    .identity
                    .as_ref()
                    .map(|i| i.user_id.clone())
                    .unwrap_or_default(),
                client_ip,
                reason: reason.into_owned(),
            });
            Next::Then(Stage::Terminate(live, Rejection::PolicyDenied))
        }
    }
}

/// An expired session: refused whether or not the delete succeeds; the delete only frees
/// the slot early (the store's own TTL would drop it too).
async fn expire<St: SessionStore>(store: &St, config: &Config, live: Live, kind: ExpiryKind) {
    let session = live.key.fingerprint();
    if let Err(e) = store.delete(live.key).await {
        config.emit(SessionEvent::StoreFailed {
            session: Some(session),
            error: e.to_string(),
        });
    }
    config.emit(SessionEvent::Expired {
        session,
        kind,
        user_id: live.record.identity.as_ref().map(|i| i.user_id.clone()),
    });
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
    record: &SessionRecord,
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
        at_login: false,
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
    if let Err(e) = store.delete(live.key).await {
        config.emit(SessionEvent::StoreFailed {
            session: Some(live.key.fingerprint()),
            error: e.to_string(),
        });
    }
    cookie::remove_token(res.headers_mut(), config, reply);
    res
}

/// Puts the session handle (and the client address) into the request's extensions; returns
/// the commit step.
fn attach<B, St: SessionStore, P: PostAuthPolicy>(
    req: &mut Request<B>,
    core: &Arc<Core<St, P>>,
    current: Option<Live>,
    client: ClientAddr,
    reply: Via,
    now: SystemTime,
) -> After {
    let touch_due = current
        .as_ref()
        .is_some_and(|live| touch_due(&core.config, &live.record, now));
    let session = Session::new(
        core.clone() as Arc<dyn Backend>,
        current,
        client,
        (
            req.method(),
            req.uri(),
            req.headers().get(http::header::USER_AGENT).cloned(),
        ),
    );
    if let Some(ip) = client.ip() {
        req.extensions_mut().insert(ClientIp(ip));
    }
    req.extensions_mut().insert(session.clone());
    After {
        session,
        reply,
        now,
        touch_due,
    }
}

/// The commit step, run when the handler's response is ready.
struct After {
    session: Session,
    /// Which way a new token goes back.
    reply: Via,
    /// The request's time, from the layer's clock.
    now: SystemTime,
    /// The loaded session's activity touch is due (if the handler does not write).
    touch_due: bool,
}

impl After {
    /// Hands out a new or rotated ID, removes the cookie after logout, or (at most once per
    /// touch interval) returns the activity write to await. Never sends a removal cookie for
    /// a token it did not end itself: that could clobber the cookie a concurrent login just
    /// rotated.
    fn commit(self, headers: &mut HeaderMap) -> Option<BoxTouch> {
        // The common case, a read between touches: nothing to do, and no lock taken.
        if !self.touch_due && !self.session.changed() {
            return None;
        }
        let config = self.session.backend().config();
        let mut st = self.session.state();
        let issued = st.issued.take();
        match (&st.current, issued) {
            (Some(live), Some(token)) => {
                let max_age = config.cookie.persistent.then(|| {
                    let absolute = config.absolute_timeout;
                    live.record
                        .expires_at(absolute, absolute)
                        .duration_since(self.now)
                        .unwrap_or(Duration::ZERO)
                });
                cookie::issue_token(headers, config, self.reply, &token, max_age);
                None
            }
            _ if st.ended => {
                cookie::remove_token(headers, config, self.reply);
                None
            }
            // Without a write, `current` is still the record `touch_due` was computed from.
            (Some(live), None) if !st.wrote && self.touch_due => {
                Some(touch(&self.session, live, self.now))
            }
            _ => None,
        }
    }
}

/// Whether `record`'s last recorded activity is a touch interval old.
fn touch_due(config: &Config, record: &SessionRecord, now: SystemTime) -> bool {
    now.duration_since(record.last_seen)
        .is_ok_and(|since| since >= config.touch_interval_for(record))
}

/// Records activity on a read, at most once per touch interval (idle / 20, see
/// [`touch_due`]), so a busy session costs a store write only now and then.
fn touch(session: &Session, live: &Live, now: SystemTime) -> BoxTouch {
    let config = session.backend().config();
    let mut rec = SessionRecord::clone(&live.record);
    rec.last_seen = now;
    rec.version += 1;
    let ttl = config.store_ttl(&rec, now);
    let (key, expected) = (live.key, live.record.version);
    let core = session.backend().clone();
    Box::pin(async move {
        // A conflict means another request wrote meanwhile, which recorded activity too.
        match core.store().update(key, expected, Arc::new(rec), ttl).await {
            Ok(WriteOutcome::Applied | WriteOutcome::Conflict) => {}
            Err(e) => core.config().emit(SessionEvent::StoreFailed {
                session: Some(key.fingerprint()),
                error: e.to_string(),
            }),
        }
    })
}
