//! The post-authentication policy, asked on every request of an authenticated session after
//! the pin check, and never for guests.
//!
//! [`PostAuthPolicy`] is the trait; [`ValidationPolicy`] is the built-in session validation
//! policy, modelled on enterprise identity platforms: in **allow** mode (the default) the
//! session is terminated unless one of its rules holds; in **deny** mode it continues unless
//! one of its rules matches. A rule holds when all its given conditions (IP ranges, roles,
//! groups) hold.

use std::borrow::Cow;
use std::future::{ready, Future};
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use ipnet::IpNet;

use crate::record::Identity;

mod validation;

pub use validation::{PolicyError, PolicyMode, Rule, ValidationPolicy, ValidationPolicyBuilder};

/// What a policy sees about one request of an authenticated session, or about a login that
/// is about to happen (`at_login`).
///
/// Its `Debug` output redacts the session cookie and the token header, and the layer marks
/// those header values sensitive before a policy sees them, so `tracing::debug!(?ctx)` in a
/// policy never prints a live token.
#[non_exhaustive]
pub struct PolicyContext<'a> {
    /// Where this request comes from (after trusted-proxy resolution).
    pub client_ip: IpAddr,
    /// Where the session logged in from.
    pub pinned_ip: Option<IpAddr>,
    /// Who is logged in.
    pub identity: &'a Identity,
    /// Time since the session was created (login starts a new one).
    pub session_age: Duration,
    /// Time since the last recorded activity.
    pub idle_time: Duration,
    /// Time since login.
    pub since_authentication: Duration,
    /// The request method.
    pub method: &'a Method,
    /// The request URI.
    pub uri: &'a Uri,
    /// The request headers. The session cookie and token header are marked sensitive
    /// (their `Debug` is redacted); still, never log their values yourself. Empty at login.
    pub headers: &'a HeaderMap,
    /// `true` when [`Session::login`](crate::Session::login) asks before writing the login
    /// (then `pinned_ip` is the login address, the durations are zero and `headers` is
    /// empty); `false` on every request of an authenticated session.
    pub at_login: bool,
    /// Whether the session is bound to a device key (DBSC, feature `dbsc`) and this request
    /// carried its valid bound cookie. Always `false` at login and without the feature.
    pub device_bound: bool,
}

impl<'a> PolicyContext<'a> {
    /// A context as the layer builds it for a request of a session that logged in from
    /// `client_ip` a moment ago (durations zero, `at_login` false): for unit tests of your
    /// own policy. The fields are public, so a test sets the rest:
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::{HeaderMap, Method, Uri};
    /// use tower_session_guard::{Decision, Identity, PolicyContext, PostAuthPolicy};
    ///
    /// // Your policy: no admin session may sit idle for more than five minutes.
    /// let policy = |ctx: &PolicyContext<'_>| {
    ///     let admin = ctx.identity.roles.iter().any(|r| r == "admin");
    ///     if admin && ctx.idle_time > Duration::from_secs(300) {
    ///         Decision::deny("admin idle")
    ///     } else {
    ///         Decision::Allow
    ///     }
    /// };
    ///
    /// let alice = Identity::new("alice").with_roles(["admin"]);
    /// let (method, uri, headers) = (Method::GET, Uri::from_static("/"), HeaderMap::new());
    /// let mut ctx = PolicyContext::new("192.0.2.1".parse()?, &alice, &method, &uri, &headers);
    /// assert_eq!(policy.evaluate_now(&ctx), Some(Decision::Allow));
    /// ctx.idle_time = Duration::from_secs(600);
    /// assert_eq!(policy.evaluate_now(&ctx), Some(Decision::deny("admin idle")));
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn new(
        client_ip: IpAddr,
        identity: &'a Identity,
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
    ) -> Self {
        PolicyContext {
            client_ip,
            pinned_ip: Some(client_ip),
            identity,
            session_age: Duration::ZERO,
            idle_time: Duration::ZERO,
            since_authentication: Duration::ZERO,
            method,
            uri,
            headers,
            at_login: false,
            device_bound: false,
        }
    }
}

impl std::fmt::Debug for PolicyContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Redacted<'h>(&'h HeaderMap);
        impl std::fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut map = f.debug_map();
                for (name, value) in self.0 {
                    if value.is_sensitive() || name == http::header::COOKIE {
                        map.entry(name, &"[redacted]");
                    } else {
                        map.entry(name, value);
                    }
                }
                map.finish()
            }
        }
        f.debug_struct("PolicyContext")
            .field("client_ip", &self.client_ip)
            .field("pinned_ip", &self.pinned_ip)
            .field("identity", self.identity)
            .field("session_age", &self.session_age)
            .field("idle_time", &self.idle_time)
            .field("since_authentication", &self.since_authentication)
            .field("method", self.method)
            .field("uri", self.uri)
            .field("headers", &Redacted(self.headers))
            .field("at_login", &self.at_login)
            .field("device_bound", &self.device_bound)
            .finish()
    }
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through.
    Allow,
    /// Terminate the session and refuse the request.
    Deny {
        /// Why; goes into the `PolicyDenied` event (not to the client).
        reason: Cow<'static, str>,
    },
}

impl Decision {
    /// A deny with a reason.
    pub fn deny(reason: impl Into<Cow<'static, str>>) -> Self {
        Decision::Deny {
            reason: reason.into(),
        }
    }
}

/// Decides whether an authenticated session may go on, on every one of its requests.
///
/// Synchronous policies return [`std::future::Ready`] (closures do this through the blanket
/// impl) and cost nothing beyond their own logic; asynchronous ones (asking a risk service,
/// say) implement this with an `async fn`:
///
/// ```
/// use tower_session_guard::{Decision, PolicyContext, PostAuthPolicy};
///
/// struct RiskService;
///
/// impl PostAuthPolicy for RiskService {
///     async fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
///         // let score = self.client.score(ctx.client_ip).await;
///         if ctx.identity.roles.iter().any(|r| r == "suspended") {
///             Decision::deny("suspended")
///         } else {
///             Decision::Allow
///         }
///     }
/// }
/// ```
pub trait PostAuthPolicy: Send + Sync + 'static {
    /// The decision for this request.
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> impl Future<Output = Decision> + Send;

    /// The decision, if it can be made without waiting; `None` (the default) means "ask
    /// [`evaluate`](Self::evaluate)".
    ///
    /// The layer asks this first. A policy that answers here keeps the request on the layer's
    /// synchronous path, with no async step and no allocation of a future; closures,
    /// [`ValidationPolicy`] and [`AllowAll`] do. When it answers, `evaluate` is not called for
    /// that request; when it returns `None`, only `evaluate` counts. Keep it free of side
    /// effects: in a pair `(A, B)` whose `B` cannot answer now, `A` is asked here and then
    /// again through `evaluate`.
    fn evaluate_now(&self, ctx: &PolicyContext<'_>) -> Option<Decision> {
        let _ = ctx;
        None
    }

    /// The address ranges this policy's decisions depend on (default none). The builder
    /// warns when a trusted proxy range overlaps one of them, because a client inside a
    /// trusted range can claim any address.
    fn ip_ranges(&self) -> Vec<IpNet> {
        Vec::new()
    }

    /// Whether the policy's decisions read [`PolicyContext::client_ip`] (default `true`: a
    /// policy that does not say is assumed to). When neither the pin, the allowed ranges nor
    /// the policy need the client address, a server without connection info (plain
    /// `axum::serve`) can log users in and serve them; `client_ip` is then `0.0.0.0`.
    fn needs_client_ip(&self) -> bool {
        true
    }
}

impl<F> PostAuthPolicy for F
where
    F: Fn(&PolicyContext<'_>) -> Decision + Send + Sync + 'static,
{
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> impl Future<Output = Decision> + Send {
        ready(self(ctx))
    }

    fn evaluate_now(&self, ctx: &PolicyContext<'_>) -> Option<Decision> {
        Some(self(ctx))
    }
}

/// Both policies must allow; the second is asked only if the first allows.
impl<A: PostAuthPolicy, B: PostAuthPolicy> PostAuthPolicy for (A, B) {
    async fn evaluate(&self, ctx: &PolicyContext<'_>) -> Decision {
        match self.0.evaluate(ctx).await {
            Decision::Allow => self.1.evaluate(ctx).await,
            deny => deny,
        }
    }

    /// Answers now when both can (or when the first denies).
    fn evaluate_now(&self, ctx: &PolicyContext<'_>) -> Option<Decision> {
        match self.0.evaluate_now(ctx)? {
            Decision::Allow => self.1.evaluate_now(ctx),
            deny => Some(deny),
        }
    }

    fn ip_ranges(&self) -> Vec<IpNet> {
        let mut ranges = self.0.ip_ranges();
        ranges.extend(self.1.ip_ranges());
        ranges
    }

    fn needs_client_ip(&self) -> bool {
        self.0.needs_client_ip() || self.1.needs_client_ip()
    }
}

/// A policy that allows everything: for when pinning alone is wanted.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl PostAuthPolicy for AllowAll {
    fn evaluate(&self, _: &PolicyContext<'_>) -> impl Future<Output = Decision> + Send {
        ready(Decision::Allow)
    }

    fn evaluate_now(&self, _: &PolicyContext<'_>) -> Option<Decision> {
        Some(Decision::Allow)
    }

    fn needs_client_ip(&self) -> bool {
        false
    }
}
