//! The built-in session validation policy: rules, modes, and their builder.

use std::future::{ready, Future};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::{Decision, PolicyContext, PostAuthPolicy};
use crate::net::{Cidrs, InvalidCidr};
use crate::record::Identity;

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
    /// Sessions matching one of these must be device-bound (DBSC) once their grace period
    /// since login has passed.
    binding: Vec<(CompiledRule, Duration)>,
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
            binding: Vec::new(),
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

impl ValidationPolicy {
    /// The binding requirements first (a session that must be bound and is not, past its
    /// grace period, is denied), then the rules. At login nothing is bound yet: only the
    /// rules apply.
    fn decide_ctx(&self, ctx: &PolicyContext<'_>) -> Decision {
        if !ctx.at_login && !ctx.device_bound {
            let unbound = self.binding.iter().find(|(rule, grace)| {
                ctx.since_authentication >= *grace && rule.matches(ctx.client_ip, ctx.identity)
            });
            if let Some((rule, _)) = unbound {
                return Decision::deny(format!(
                    "rule {:?} requires a device-bound session",
                    rule.name
                ));
            }
        }
        self.decide(ctx.client_ip, ctx.identity)
    }
}

impl PostAuthPolicy for ValidationPolicy {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> impl Future<Output = Decision> + Send {
        ready(self.decide_ctx(ctx))
    }

    fn evaluate_now(&self, ctx: &PolicyContext<'_>) -> Option<Decision> {
        Some(self.decide_ctx(ctx))
    }

    fn ip_ranges(&self) -> Vec<IpNet> {
        self.rules
            .iter()
            .chain(self.binding.iter().map(|(r, _)| r))
            .flat_map(|r| r.ip_ranges.iter().flat_map(Cidrs::as_slice).copied())
            .collect()
    }

    /// Only rules with IP ranges read the address.
    fn needs_client_ip(&self) -> bool {
        self.rules
            .iter()
            .chain(self.binding.iter().map(|(r, _)| r))
            .any(|r| r.ip_ranges.is_some())
    }
}

/// Builds a [`ValidationPolicy`]; rules are tried in order.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ValidationPolicyBuilder {
    mode: PolicyMode,
    rules: Vec<Rule>,
    binding: Vec<(Rule, Duration)>,
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

    /// Sessions that `rule` matches (by roles, groups, IP ranges) must be bound to a device
    /// key (Device Bound Session Credentials, the layer's `device_binding` option) once
    /// `grace` has passed since login; after it an unbound one is denied, which ends it. The
    /// grace period covers the moment between login and the browser's registration (it
    /// registers right after the login response; a few seconds to a minute is plenty) and,
    /// set long, gives users time to move to a supporting browser. "Admins must be on a
    /// bound device":
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_session_guard::{Rule, ValidationPolicy};
    ///
    /// let policy = ValidationPolicy::builder()
    ///     .mode(tower_session_guard::PolicyMode::Deny)
    ///     .require_device_binding(Rule::new("admins").roles(["admin"]), Duration::from_secs(60))
    ///     .build()?;
    /// # Ok::<_, tower_session_guard::PolicyError>(())
    /// ```
    pub fn require_device_binding(mut self, rule: Rule, grace: Duration) -> Self {
        self.binding.push((rule, grace));
        self
    }

    /// Parses the ranges and checks the rules.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] naming the rule: a range that is not CIDR, a rule without conditions,
    /// or an empty condition list.
    pub fn build(self) -> Result<ValidationPolicy, PolicyError> {
        let rules = self
            .rules
            .into_iter()
            .map(compile)
            .collect::<Result<_, _>>()?;
        let binding = self
            .binding
            .into_iter()
            .map(|(rule, grace)| compile(rule).map(|r| (r, grace)))
            .collect::<Result<_, _>>()?;
        Ok(ValidationPolicy {
            mode: self.mode,
            rules,
            binding,
        })
    }
}

fn compile(r: Rule) -> Result<CompiledRule, PolicyError> {
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
    Ok(CompiledRule {
        name: r.name,
        ip_ranges,
        roles: r.roles,
        groups: r.groups,
    })
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
    fn only_rules_with_ranges_need_the_client_address() {
        assert!(!ValidationPolicy::permit_all().needs_client_ip());
        let roles_only = ValidationPolicy::builder()
            .rule(Rule::new("admins").roles(["admin"]))
            .build()
            .unwrap();
        assert!(!roles_only.needs_client_ip());
        let with_range = ValidationPolicy::builder()
            .rule(Rule::new("office").ip_ranges(["10.0.0.0/8"]))
            .build()
            .unwrap();
        assert!(with_range.needs_client_ip());
        assert!((roles_only.clone(), with_range).needs_client_ip());
        assert!(!(roles_only, super::super::AllowAll).needs_client_ip());
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

    #[test]
    fn binding_requirements_deny_unbound_matches_after_the_grace_period() {
        use http::{HeaderMap, Method, Uri};
        let policy = ValidationPolicy::builder()
            .mode(PolicyMode::Deny)
            .require_device_binding(
                Rule::new("admins").roles(["admin"]),
                Duration::from_secs(60),
            )
            .build()
            .unwrap();
        let (alice, bob) = (alice(), Identity::new("bob"));
        let (m, u, h) = (Method::GET, Uri::from_static("/"), HeaderMap::new());
        let mut ctx = PolicyContext::new(ip("192.0.2.1"), &alice, &m, &u, &h);
        assert_eq!(policy.evaluate_now(&ctx), Some(Decision::Allow));
        ctx.since_authentication = Duration::from_secs(60);
        assert!(matches!(
            policy.evaluate_now(&ctx),
            Some(Decision::Deny { .. })
        ));
        ctx.device_bound = true;
        assert_eq!(policy.evaluate_now(&ctx), Some(Decision::Allow));
        ctx.device_bound = false;
        ctx.at_login = true;
        assert_eq!(policy.evaluate_now(&ctx), Some(Decision::Allow));
        let mut other = PolicyContext::new(ip("192.0.2.1"), &bob, &m, &u, &h);
        other.since_authentication = Duration::from_secs(3600);
        assert_eq!(policy.evaluate_now(&other), Some(Decision::Allow));
    }
}
