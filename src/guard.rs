//! Route guards (see [`RouteGuard`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::GuardFuture;
use crate::record::Identity;
use crate::rejection::{respond, DefaultRejectionResponse, Rejection};
use crate::session::Session;

/// What a route requires of the logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Login,
    AnyRole(Vec<String>),
    AnyGroup(Vec<String>),
}

impl Requirement {
    fn check(&self, identity: &Identity) -> bool {
        match self {
            Requirement::Login => true,
            Requirement::AnyRole(roles) => identity.roles.iter().any(|r| roles.contains(r)),
            Requirement::AnyGroup(groups) => identity.groups.iter().any(|g| groups.contains(g)),
        }
    }
}

/// A route guard: authorization, apart from session validation. A tower [`Layer`]; cheap
/// to clone.
///
/// A guard answers 401 when nobody is logged in and 403 when the user lacks the role or group
/// the route requires, and it **keeps the session**: a user who may not see `/admin` is still
/// logged in everywhere else. That is the difference from the post-authentication policy,
/// which validates the session itself (used from the wrong place, outside the allowed
/// ranges) and ends it on a deny.
///
/// A guard is a tower layer, so it reads the same on axum routes (`Router::route_layer`) and
/// on tonic services (`add_service(guard.layer(svc))`, answering `UNAUTHENTICATED` and
/// `PERMISSION_DENIED`). It must sit inside `SessionGuardLayer`, which puts the session into
/// the request; the answers go through the layer's
/// [`rejection_response`](crate::SessionGuardBuilder::rejection_response).
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_session_guard::{require_login, require_role, MemoryStore, SessionGuardLayer};
///
/// let app: Router = Router::new()
///     .route("/admin", get(|| async { "admins only" }))
///     .route_layer(require_role("admin"))
///     .route("/me", get(|| async { "any logged-in user" }))
///     .route_layer(require_login())
///     .route("/", get(|| async { "everyone" }))
///     .layer(SessionGuardLayer::new(MemoryStore::new()));
/// ```
///
/// (`route_layer` guards the routes added before it.) In a handler, the
/// [`Authenticated`](crate::Authenticated) extractor (feature `axum`) does what
/// `require_login` does and hands over the identity.
#[derive(Debug, Clone)]
#[must_use]
pub struct RouteGuard {
    requirement: Arc<Requirement>,
    /// Whether a request without the session layer was already reported at ERROR: a wiring
    /// bug is logged once per guard, not once per request.
    miswired: Arc<AtomicBool>,
}

impl RouteGuard {
    fn new(requirement: Requirement) -> RouteGuard {
        RouteGuard {
            requirement: Arc::new(requirement),
            miswired: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A guard that lets logged-in users through: 401 (gRPC `UNAUTHENTICATED`) for everyone else.
pub fn require_login() -> RouteGuard {
    RouteGuard::new(Requirement::Login)
}

/// A guard that lets users with `role` through: 401 without a login, 403 (gRPC
/// `PERMISSION_DENIED`) without the role. The session is kept either way.
pub fn require_role(role: impl Into<String>) -> RouteGuard {
    require_any_role([role])
}

/// A guard that lets users with at least one of `roles` through (401 / 403 as
/// [`require_role`]).
pub fn require_any_role<I, R>(roles: I) -> RouteGuard
where
    I: IntoIterator<Item = R>,
    R: Into<String>,
{
    RouteGuard::new(Requirement::AnyRole(
        roles.into_iter().map(Into::into).collect(),
    ))
}

/// A guard that lets members of `group` through (401 / 403 as [`require_role`]).
pub fn require_group(group: impl Into<String>) -> RouteGuard {
    RouteGuard::new(Requirement::AnyGroup(vec![group.into()]))
}

impl<S> Layer<S> for RouteGuard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            requirement: self.requirement.clone(),
            miswired: self.miswired.clone(),
        }
    }
}

/// The service a [`RouteGuard`] makes.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    requirement: Arc<Requirement>,
    miswired: Arc<AtomicBool>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Guarded<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(session) = req.extensions().get::<Session>() else {
            if self.miswired.swap(true, Ordering::Relaxed) {
                tracing::debug!("a route guard found no Session (reported at ERROR before)");
            } else {
                tracing::error!(
                    "a route guard found no Session: put SessionGuardLayer in front of the \
                     guarded route or service (`.layer(SessionGuardLayer::..)` outside \
                     `.route_layer(..)`); reported once per guard, every such request answers 500"
                );
            }
            let res = respond(
                &DefaultRejectionResponse,
                Rejection::MissingSessionLayer,
                req.headers(),
            );
            return GuardFuture::refused(res);
        };
        // Checked on the shared record: no copy of the identity per request.
        let allowed = session.record().and_then(|r| {
            let identity = r.identity.as_ref()?;
            Some(self.requirement.check(identity))
        });
        let rejection = match allowed {
            None => Rejection::LoginRequired,
            Some(false) => Rejection::Forbidden,
            Some(true) => return GuardFuture::inner(self.inner.call(req)),
        };
        let res = respond(&*session.core().env().rejections, rejection, req.headers());
        GuardFuture::refused(res)
    }
}

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl<S: tonic::server::NamedService> tonic::server::NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}
