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

use crate::net::{Cidrs, InvalidCidr};

use crate::record::Identity;

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
}

/// How a [`ValidationPolicy`] reads its rules, in the "allow policy / deny policy" terms of
/// enterprise identity platforms. **Allow mode terminates by default** (a session goes on
/// only if a rule holds); deny mode continues by default (it ends only if a rule matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMode {
    /// Terminate the session unless a rule holds (the default: closed unless allowed).
    #[default]
    Allow,
    /// Keep the session unless a rule matches.
    Deny,
}

/// One rule: a name and the conditions that must all hold. Build it with [`Rule::new`].
#[derive(Debug, Clone, Default)]
pub struct Rule {
    name: String,
    ip_ranges: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    groups: Option<Vec<String>>,
}

impl Rule {
    /// A rule with no conditions yet; give it at least one.
    pub fn new(name: impl Into<String>) -> Self {
        Rule {
            name: name.into(),
            ..Rule::default()
        }
    }

    /// The client address must lie in one of these CIDR ranges (`"10.0.0.0/8"`, `"::1/128"`;
    /// a bare address is that one host).
    #[must_use]
    pub fn ip_ranges<I, S>(mut self, ranges: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ip_ranges = Some(ranges.into_iter().map(Into::into).collect());
        self
    }

    /// The user must have one of these roles.
    #[must_use]
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// The user must be in one of these groups.
    #[must_use]
    pub fn groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups = Some(groups.into_iter().map(Into::into).collect());
        self
    }
}

/// A rule that [`ValidationPolicyBuilder::build`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A range is not valid CIDR notation.
    #[error("rule {rule:?}: {value}")]
    InvalidCidr {
        /// The rule's name.
        rule: String,
        /// The offending text.
        value: InvalidCidr,
    },
    /// A rule without conditions would match every session, which is almost surely a mistake.
    #[error("rule {0:?} has no conditions; give it ip_ranges, roles or groups")]
    EmptyRule(String),
    /// A condition with an empty list can never hold.
    #[error("rule {rule:?}: the {condition} list is empty")]
    EmptyCondition {
        /// The rule's name.
        rule: String,
        /// Which condition.
        condition: &'static str,
    },
}

#[derive(Debug, Clone)]
struct CompiledRule {
    name: String,
    ip_ranges: Option<Cidrs>,
    roles: Option<Vec<String>>,
    groups: Option<Vec<String>>,
}

impl CompiledRule {
    fn matches(&self, ip: IpAddr, identity: &Identity) -> bool {
        self.ip_ranges.as_ref().is_none_or(|r| r.contains(ip))
            && self
                .roles
                .as_ref()
                .is_none_or(|r| identity.roles.iter().any(|x| r.contains(x)))
            && self
                .groups
                .as_ref()
                .is_none_or(|g| identity.groups.iter().any(|x| g.contains(x)))
    }
}

/// The built-in session validation policy, modelled on enterprise identity platforms: in
/// **allow** mode (the default) the session is terminated unless one of its rules holds; in
/// **deny** mode it continues unless one of its rules matches. A rule holds when all its
/// given conditions (IP ranges, roles, groups) hold. It is asked on every request of an
/// authenticated session after the pin check, and never for guests.
///
/// ```
/// use tower_session_guard::{PolicyMode, Rule, ValidationPolicy};
///
/// let policy = ValidationPolicy::builder()
///     .mode(PolicyMode::Allow)
///     .rule(Rule::new("admins from the console host").roles(["admin"]).ip_ranges(["127.0.0.1/32", "::1/128"]))
///     .rule(Rule::new("users on loopback").roles(["user"]).ip_ranges(["127.0.0.0/8", "::1/128"]))
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ValidationPolicy {
    mode: PolicyMode,
    rules: Vec<CompiledRule>,
}

impl ValidationPolicy {
    /// Starts a policy (allow mode, no rules).
    pub fn builder() -> ValidationPolicyBuilder {
        ValidationPolicyBuilder::default()
    }

    /// A policy that lets every session continue (deny mode with no rules). This is what
    /// the layer uses when no policy is configured: pinning still applies.
    pub fn permit_all() -> Self {
        ValidationPolicy {
            mode: PolicyMode::Deny,
            rules: Vec::new(),
        }
    }

    /// The decision, synchronously.
    pub fn decide(&self, ip: IpAddr, identity: &Identity) -> Decision {
        let matched = self.rules.iter().find(|r| r.matches(ip, identity));
        match (self.mode, matched) {
            (PolicyMode::Allow, Some(_)) | (PolicyMode::Deny, None) => Decision::Allow,
            (PolicyMode::Allow, None) => Decision::deny("no rule allows this session (allow mode)"),
            (PolicyMode::Deny, Some(rule)) => {
                Decision::deny(format!("rule {:?} matched (deny mode)", rule.name))
            }
        }
    }
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        Self::permit_all()
    }
}

impl PostAuthPolicy for ValidationPolicy {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> impl Future<Output = Decision> + Send {
        ready(self.decide(ctx.client_ip, ctx.identity))
    }

    fn evaluate_now(&self, ctx: &PolicyContext<'_>) -> Option<Decision> {
        Some(self.decide(ctx.client_ip, ctx.identity))
    }

    fn ip_ranges(&self) -> Vec<IpNet> {
        self.rules
            .iter()
            .flat_map(|r| r.ip_ranges.iter().flat_map(Cidrs::as_slice).copied())
            .collect()
    }
}

/// Builds a [`ValidationPolicy`]; rules are tried in order.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ValidationPolicyBuilder {
    mode: PolicyMode,
    rules: Vec<Rule>,
}

impl ValidationPolicyBuilder {
    /// Allow mode (default) or deny mode.
    pub fn mode(mut self, mode: PolicyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Appends a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Parses the ranges and checks the rules.
    pub fn build(self) -> Result<ValidationPolicy, PolicyError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for r in self.rules {
            if r.ip_ranges.is_none() && r.roles.is_none() && r.groups.is_none() {
                return Err(PolicyError::EmptyRule(r.name));
            }
            for (condition, list) in [
                ("ip_ranges", &r.ip_ranges),
                ("roles", &r.roles),
                ("groups", &r.groups),
            ] {
                if list.as_ref().is_some_and(Vec::is_empty) {
                    return Err(PolicyError::EmptyCondition {
                        rule: r.name,
                        condition,
                    });
                }
            }
            let ip_ranges = r
                .ip_ranges
                .map(|list| Cidrs::parse(&list))
                .transpose()
                .map_err(|value| PolicyError::InvalidCidr {
                    rule: r.name.clone(),
                    value,
                })?;
            rules.push(CompiledRule {
                name: r.name,
                ip_ranges,
                roles: r.roles,
                groups: r.groups,
            });
        }
        Ok(ValidationPolicy {
            mode: self.mode,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alice() -> Identity {
        Identity::new("alice")
            .with_roles(["admin"])
            .with_groups(["staff"])
    }

    fn bob() -> Identity {
        Identity::new("bob")
            .with_roles(["user"])
            .with_groups(["contractors"])
    }

    fn demo() -> ValidationPolicy {
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
            .unwrap()
    }

    #[test]
    fn allow_mode_needs_a_holding_rule() {
        let p = demo();
        assert_eq!(p.decide(ip("127.0.0.1"), &alice()), Decision::Allow);
        assert_eq!(p.decide(ip("::1"), &alice()), Decision::Allow);
        assert!(matches!(
            p.decide(ip("127.0.0.2"), &alice()),
            Decision::Deny { .. }
        ));
        assert_eq!(p.decide(ip("127.0.0.2"), &bob()), Decision::Allow);
        assert!(matches!(
            p.decide(ip("192.0.2.1"), &bob()),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            p.decide(ip("127.0.0.1"), &Identity::new("carol")),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn deny_mode_denies_on_match_with_rule_name() {
        let p = ValidationPolicy::builder()
            .mode(PolicyMode::Deny)
            .rule(
                Rule::new("contractors off-site")
                    .groups(["contractors"])
                    .ip_ranges(["192.0.2.0/24"]),
            )
            .build()
            .unwrap();
        assert_eq!(p.decide(ip("127.0.0.1"), &bob()), Decision::Allow);
        assert_eq!(p.decide(ip("192.0.2.9"), &alice()), Decision::Allow);
        assert_eq!(
            p.decide(ip("192.0.2.9"), &bob()),
            Decision::deny("rule \"contractors off-site\" matched (deny mode)")
        );
    }

    #[test]
    fn conditions_combine_with_and_lists_with_or() {
        let p = ValidationPolicy::builder()
            .rule(
                Rule::new("staff admins")
                    .roles(["admin", "owner"])
                    .groups(["staff"]),
            )
            .build()
            .unwrap();
        assert_eq!(p.decide(ip("192.0.2.1"), &alice()), Decision::Allow);
        let admin_not_staff = Identity::new("x")
            .with_roles(["owner"])
            .with_groups(["other"]);
        assert!(matches!(
            p.decide(ip("192.0.2.1"), &admin_not_staff),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn build_errors() {
        let bad = ValidationPolicy::builder()
            .rule(Rule::new("r").ip_ranges(["10.0.0.0/33"]))
            .build();
        assert_eq!(
            bad.unwrap_err(),
            PolicyError::InvalidCidr {
                rule: "r".into(),
                value: "10.0.0.0/33".into()
            }
        );
        assert!(ValidationPolicy::builder()
            .rule(Rule::new("r").ip_ranges(["nope"]))
            .build()
            .is_err());
        let bare = ValidationPolicy::builder()
            .rule(Rule::new("host").ip_ranges(["192.0.2.7"]))
            .build()
            .unwrap();
        assert_eq!(bare.decide(ip("192.0.2.7"), &bob()), Decision::Allow);
        assert!(matches!(
            bare.decide(ip("192.0.2.8"), &bob()),
            Decision::Deny { .. }
        ));
        assert_eq!(
            ValidationPolicy::builder()
                .rule(Rule::new("r"))
                .build()
                .unwrap_err(),
            PolicyError::EmptyRule("r".into())
        );
        assert!(matches!(
            ValidationPolicy::builder()
                .rule(Rule::new("r").roles(Vec::<String>::new()))
                .build(),
            Err(PolicyError::EmptyCondition { .. })
        ));
    }

    #[test]
    fn permit_all_allows() {
        assert_eq!(
            ValidationPolicy::permit_all().decide(ip("192.0.2.1"), &bob()),
            Decision::Allow
        );
    }
}
