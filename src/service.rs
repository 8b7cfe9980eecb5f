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
//! from memory ([`SessionStore::load_now`](crate::store::SessionStore::load_now)) and the policy answers at once
//! ([`PostAuthPolicy::evaluate_now`]), does everything before the handler inside `call` and
//! returns the inner service's own future, unboxed, wrapped in [`ResponseFuture`]: no async
//! step and no allocation for the layer's future. This is every request on
//! [`MemoryStore`](crate::MemoryStore), on a Redis near-cache hit, and with the built-in
//! policies. Everything else (a store round trip, an asynchronous policy, deleting an expired
//! or refused session) continues on the **asynchronous path**, one boxed future that resumes
//! at the step the synchronous path stopped at, so no step runs (or emits its event) twice.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{Request, Response};
use tower_service::Service;

use crate::client_ip::{self, ClientAddr};
use crate::commit::Commit;
use crate::core::Core;
use crate::future::ResponseFuture;
use crate::policy::PostAuthPolicy;
use crate::rejection::respond;
#[cfg(feature = "dbsc")]
use crate::steps::unknown_token;
use crate::steps::{
    consider, decided, expire, policy_context, terminate, Next, PendingLoad, Pick, RequestView,
    Stage,
};
use crate::transport::{self, Via};

/// The middleware service built by [`SessionGuardLayer`](crate::SessionGuardLayer).
pub struct SessionGuard<S, P> {
    inner: S,
    core: Arc<Core<P>>,
}

impl<S, P> SessionGuard<S, P> {
    pub(crate) fn new(inner: S, core: Arc<Core<P>>) -> Self {
        SessionGuard { inner, core }
    }
}

impl<S: Clone, P> Clone for SessionGuard<S, P> {
    fn clone(&self) -> Self {
        SessionGuard {
            inner: self.inner.clone(),
            core: self.core.clone(),
        }
    }
}

impl<S: std::fmt::Debug, P> std::fmt::Debug for SessionGuard<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGuard")
            .field("inner", &self.inner)
            .field("env", &self.core.env)
            .finish_non_exhaustive()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for SessionGuard<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
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
        let env = &core.env;
        let now = env.now();
        // Device binding off (or compiled out): one branch on the request path.
        #[cfg(feature = "dbsc")]
        if let Some(binding) = &env.config.device_binding {
            if let Some(endpoint) = crate::device::endpoint_for(binding, &req) {
                let client =
                    client_ip::resolve(req.headers(), req.extensions(), &env.config.proxies);
                let core = self.core.clone();
                let headers = std::mem::take(req.headers_mut());
                return ResponseFuture::boxed(Box::pin(async move {
                    // Unknown tokens at the endpoints count towards ID-guessing detection
                    // (and its cool-down) as on any other request.
                    let unknown = |key| {
                        let mut pick = Pick::default();
                        unknown_token(&core.env, key, client, now, &mut pick);
                        matches!(pick.finish(), Next::Stop(_))
                    };
                    let dyn_core = core.clone() as Arc<dyn crate::core::DynCore>;
                    Ok(crate::device::answer(dyn_core, endpoint, headers, now, &unknown).await)
                }));
            }
        }
        let (candidates, reply) = transport::read_token(req.headers(), &env.config.transport);
        let client = client_ip::resolve(req.headers(), req.extensions(), &env.config.proxies);
        let next = match candidates.first() {
            None => Next::Go(None),
            Some(_) => {
                // Before any policy or handler can log the headers.
                transport::mark_sensitive(req.headers_mut(), &env.config.transport);
                let view = RequestView::of(&req);
                let mut pick = Pick::default();
                let mut next = None;
                let mut i = 0;
                while let Some(key) = candidates.get(i) {
                    let Some(loaded) = core.store.load_now(key) else {
                        next = Some(Next::Then(Stage::Load(Box::new(PendingLoad {
                            candidates,
                            from: i,
                            pick: std::mem::take(&mut pick),
                        }))));
                        break;
                    };
                    next = consider(&core.policy, env, key, loaded, client, view, now, &mut pick);
                    if next.is_some() {
                        break;
                    }
                    i += 1;
                }
                next.unwrap_or_else(|| pick.finish())
            }
        };
        match next {
            Next::Go(current) => {
                let commit =
                    Commit::attach(&mut req, self.core.clone(), current, client, reply, now);
                // Called here, on the service `poll_ready` readied: no clone of the inner
                // service (for an axum route, a boxed clone) on this path.
                ResponseFuture::handler(self.inner.call(req), commit)
            }
            Next::Stop(rejection) => {
                ResponseFuture::ready(respond(&*env.rejections, rejection, req.headers()))
            }
            Next::Then(stage) => ResponseFuture::boxed(Box::pin(resume(
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

/// The asynchronous path: resumes at `resume.stage`, runs the remaining steps, the handler,
/// and the commit.
async fn resume<S, P, ReqBody, ResBody>(
    mut inner: S,
    core: Arc<Core<P>>,
    resume: Resume,
    mut req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: PostAuthPolicy,
    ResBody: Default,
{
    let Core { store, policy, env } = &*core;
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
            Stage::Load(pending) => {
                let PendingLoad {
                    candidates,
                    from,
                    mut pick,
                } = *pending;
                let mut next = None;
                for (_, key) in candidates.from(from) {
                    let loaded = store.load(key).await;
                    next = consider(policy, env, key, loaded, client, view, now, &mut pick);
                    if next.is_some() {
                        break;
                    }
                }
                next.unwrap_or_else(|| pick.finish())
            }
            Stage::Expired(live, kind) => {
                expire(&**store, env, live, kind).await;
                Next::Go(None)
            }
            Stage::Policy(live, ip) => {
                let decision = {
                    let Some(identity) = &live.record.identity else {
                        break Some(live);
                    };
                    // A bound session got past `check` only with its bound cookie.
                    let bound = live.record.device.as_ref().is_some_and(|d| d.is_bound());
                    let ctx = policy_context(identity, &live.record, ip, view, now, bound);
                    policy.evaluate(&ctx).await
                };
                decided(env, live, ip, decision)
            }
            Stage::Terminate(live, rejection) => {
                return Ok(terminate(&**store, env, &live, rejection, reply, view.headers).await);
            }
        };
        match next {
            Next::Go(current) => break current,
            Next::Stop(rejection) => {
                return Ok(respond(&*env.rejections, rejection, req.headers()));
            }
            Next::Then(next) => stage = next,
        }
    };
    let commit = Commit::attach(&mut req, core, current, client, reply, now);
    let mut res = inner.call(req).await?;
    if let Some(touch) = commit.apply(res.headers_mut()) {
        touch.await;
    }
    Ok(res)
}
