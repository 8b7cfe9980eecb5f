//! The tower [`Service`]: one request, top to bottom.
//!
//! ```text
//! token from Cookie ─► load record ─► expiry ─► Session into extensions ─► inner service
//!                   ─► commit: Set-Cookie for a new/rotated ID, removal after logout,
//!                      or a throttled activity touch
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response};
use tower_service::Service;

use crate::config::Config;
use crate::cookie;
use crate::events::SessionEvent;
use crate::id::SessionKey;
use crate::rejection::Rejection;
use crate::session::{Live, Session};
use crate::store::{DynStore, SessionStore, Write};

/// The middleware service built by [`SessionGuardLayer`](crate::SessionGuardLayer).
pub struct SessionGuard<S, St> {
    inner: S,
    store: Arc<St>,
    config: Arc<Config>,
}

impl<S, St> SessionGuard<S, St> {
    pub(crate) fn new(inner: S, store: Arc<St>, config: Arc<Config>) -> Self {
        SessionGuard {
            inner,
            store,
            config,
        }
    }
}

impl<S: Clone, St> Clone for SessionGuard<S, St> {
    fn clone(&self) -> Self {
        SessionGuard {
            inner: self.inner.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for SessionGuard<S, St> {
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

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for SessionGuard<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: SessionStore,
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
        let key = cookie::key_from_headers(req.headers(), &self.config.cookie.name);
        ResponseFuture {
            inner: Box::pin(handle(
                inner,
                self.store.clone(),
                self.config.clone(),
                key,
                req,
            )),
        }
    }
}

async fn handle<S, St, ReqBody, ResBody>(
    mut inner: S,
    store: Arc<St>,
    config: Arc<Config>,
    key: Option<SessionKey>,
    mut req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: SessionStore,
    ResBody: Default,
{
    let now = config.clock.now();
    let current = match load(&*store, &config, key, now).await {
        Ok(current) => current,
        Err(rejection) => return Ok(rejection.into_response(req.headers())),
    };
    let session = Session::new(store.clone() as Arc<dyn DynStore>, config.clone(), current);
    req.extensions_mut().insert(session.clone());
    let mut res = inner.call(req).await?;
    commit(&*store, &config, &session, now, res.headers_mut()).await;
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

/// After the handler: hand out a new or rotated ID, remove the cookie after logout, or
/// record activity. Never sends a removal cookie for a token it did not end itself: that
/// could clobber the cookie a concurrent login just rotated.
async fn commit<St: SessionStore>(
    store: &St,
    config: &Config,
    session: &Session,
    now: SystemTime,
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
            cookie::append(headers, cookie::issue(&config.cookie, &token, max_age));
        }
        _ if ended => cookie::append(headers, cookie::removal(&config.cookie)),
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
