//! Every tunable, its secure default, and the reason for it.
//!
//! | setting | default | reason |
//! | --- | --- | --- |
//! | cookie name | `__Host-session` | the `__Host-` prefix makes browsers refuse the cookie unless it is `Secure`, `Path=/` and has no `Domain`, so a sibling subdomain cannot plant or overwrite it (cookie tossing, a fixation vector); the name reveals nothing about the stack (OWASP Session Management Cheat Sheet, "Session ID Name Fingerprinting") |
//! | `Secure` | on | the ID never travels over plain HTTP (OWASP, "Secure Attribute"; ASVS 3.4.1) |
//! | `HttpOnly` | always on | scripts (and so XSS) cannot read the ID (OWASP, "HttpOnly Attribute"; ASVS 3.4.2) |
//! | `SameSite` | `Lax` | cross-site subrequests and POSTs carry no session (CSRF), top-level navigation still works (ASVS 3.4.3) |
//! | `Path` / `Domain` | `/` / none | required by `__Host-`; the narrowest scope (OWASP, "Domain and Path Attributes") |
//! | persistent | off | a session cookie dies with the browser; no `Max-Age` (OWASP, "Expire and Max-Age Attributes") |
//! | idle timeout | 30 min | OWASP suggests 15–30 min; NIST SP 800-63B-3 §4.2.3 allows at most 30 min of inactivity at AAL2 |
//! | absolute lifetime | 8 h | a working day; OWASP suggests 4–8 h; NIST SP 800-63B-3 §4.2.3 caps AAL2 at 12 h |
//! | pin mode | `Exact` | a session is usable only from the address it logged in from, so a stolen cookie replayed elsewhere is refused and the session destroyed (the session validation context of enterprise identity platforms; OWASP "Binding the Session ID to Other User Properties") |
//! | allowed ranges | none (any address) | opt-in: authenticated sessions only from these networks |
//! | trusted proxies | none | forwarding headers are client-controlled unless a proxy you run wrote them; with none trusted they are ignored (OWASP, "X-Forwarded-For" spoofing) |
//! | forwarding header | none; required with trusted proxies | a proxy writes one header and passes the others through from the client, so the layer reads only the one you name; a chain it cannot read makes the client address unknown, never the proxy's |
//! | guest idle timeout | 15 min | a guest session holds no privilege, only state a visitor wrote; the lower end of OWASP's 15–30 min keeps anonymous state from occupying the store for long |
//! | guest creations per address | 300 per minute | a browser creates one guest session and keeps it, and even a large NAT creates a few per second; one address creating thousands per second is a flood (OWASP Automated Threats, OAT-015) |
//! | ID-guessing detection | 100 distinct unknown tokens per address per minute, event only | a browser with a stale cookie repeats one token; a guesser sends a new one each time (ASVS 5.0 V7; OWASP "Session ID Guessing and Brute Force Detection"); the cool-down is opt-in because the address may be a NAT shared with legitimate users |
//! | event aggregation | 10 s | events anonymous clients can cause at will are counted, one sample and one summary per interval, so floods cannot fill the logs |
//! | longest lifetime | 400 days | no timeout may exceed it: browsers cap cookie lifetimes at 400 days (RFC 6265bis §5.5), and it keeps every time computation far from overflow |
//! | policy | `ValidationPolicy::permit_all()` | nothing to enforce until you write rules; pinning works on its own |
//! | token transport | `Both` | HTTP requests use only the `HttpOnly` cookie (a token header is ignored, so it can neither shadow a valid cookie nor make the layer hand a token to page script); gRPC requests use the header, and the cookie if they send no header |
//! | token header | `x-session-token` | a custom header is never sent by browsers on their own, so it cannot be abused cross-site; `x-` marks it as application-specific |
//! | sessions per user | 20, oldest evicted | one account cannot fill the store or make per-user operations slow; 20 is more browsers and devices than a person uses at once (OWASP, "Simultaneous Session Logons"); users can see and end their other sessions (ASVS 3.3.4) |
//! | touch interval | idle / 20 | activity on reads is written at most this often, so an idle session expires between `idle − idle/20` and `idle` after its last request |

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cookie::SameSite;
use ipnet::IpNet;

use crate::abuse::{Budgets, GuessingLimit, RateLimit};
use crate::client_ip::{ForwardedHeader, ProxyConfig};
use crate::clock::{Clock, SystemClock};
use crate::cookie::TokenTransport;
use crate::events::{Emitter, EventSink, SessionEvent};
use crate::pin::PinMode;
use crate::record::{ExpiryKind, SessionRecord};
use crate::rejection::{DefaultRejectionResponse, ResponseForRejection};
use crate::store::{LimitPolicy, SessionLimit};

/// Default header for the token of clients without a cookie jar (gRPC metadata key).
pub const DEFAULT_TOKEN_HEADER: &str = "x-session-token";
/// Default cookie name.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";
/// Default idle timeout: 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default absolute lifetime: 8 hours.
pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(8 * 60 * 60);
/// How long a store keeps a record after it expired. The layer refuses it from the first
/// expired instant either way; keeping it a little longer lets a late request be reported
/// as `Expired` (with its user) instead of as an unknown token.
pub const EXPIRED_RETENTION: Duration = Duration::from_secs(60);
/// Default cap on one user's live sessions (with [`LimitPolicy::EvictOldest`]): a person
/// rarely uses more than a handful of browsers and devices at once, so 20 is never felt,
/// while it bounds what one account can hold in the store and how much work every per-user
/// operation (login, session list, revocation) does. OWASP Session Management Cheat Sheet,
/// "Simultaneous Session Logons"; ASVS 5.0 V7.5.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 20;
/// Default idle timeout of guest (not logged-in) sessions: 15 minutes.
pub const DEFAULT_GUEST_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// No lifetime may be longer: 400 days, the cap browsers put on cookies (RFC 6265bis §5.5).
pub const MAX_LIFETIME: Duration = Duration::from_secs(400 * 24 * 60 * 60);
/// Default budget of guest-session creations per client address.
pub const DEFAULT_GUEST_CREATION_LIMIT: RateLimit = RateLimit {
    max: 300,
    per: Duration::from_secs(60),
};
/// Default ID-guessing detection: event only, no cool-down.
pub const DEFAULT_GUESSING_LIMIT: GuessingLimit = GuessingLimit {
    threshold: 100,
    window: Duration::from_secs(60),
    cooldown: None,
};
/// Default interval over which flood-prone events are aggregated.
pub const DEFAULT_EVENT_INTERVAL: Duration = Duration::from_secs(10);
/// Activity is recorded on reads at most once per `idle_timeout / TOUCH_FRACTION`.
pub const TOUCH_FRACTION: u32 = 20;

/// Cookie settings.
#[derive(Debug, Clone)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) persistent: bool,
}

/// The validated configuration, shared by the layer and every `Session` handle.
pub(crate) struct Config {
    pub(crate) cookie: CookieConfig,
    pub(crate) idle_timeout: Duration,
    pub(crate) guest_idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) pin: PinMode,
    pub(crate) allowed_ranges: Vec<IpNet>,
    pub(crate) proxies: ProxyConfig,
    pub(crate) token_transport: TokenTransport,
    pub(crate) token_header: http::HeaderName,
    pub(crate) session_limit: Option<SessionLimit>,
    pub(crate) rejections: Arc<dyn ResponseForRejection>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Emitter,
    pub(crate) budgets: Budgets,
}

impl Config {
    /// How many sessions a per-user list holds at most: the per-user cap bounds it.
    pub(crate) fn list_limit(&self) -> usize {
        self.session_limit
            .map_or(DEFAULT_MAX_SESSIONS_PER_USER, |l| l.max)
            .max(1)
    }

    /// The idle timeout that applies to `record`: guests have their own, shorter one.
    pub(crate) fn idle_for(&self, record: &SessionRecord) -> Duration {
        if record.identity.is_some() {
            self.idle_timeout
        } else {
            self.guest_idle_timeout
        }
    }

    /// Why `record` is expired at `now`, if it is.
    pub(crate) fn expiry(&self, record: &SessionRecord, now: SystemTime) -> Option<ExpiryKind> {
        record.expiry(now, self.idle_for(record), self.absolute_timeout)
    }

    /// When `record` expires without further activity.
    pub(crate) fn expires_at(&self, record: &SessionRecord) -> SystemTime {
        record.expires_at(self.idle_for(record), self.absolute_timeout)
    }

    /// How often a read of `record` records activity.
    pub(crate) fn touch_interval_for(&self, record: &SessionRecord) -> Duration {
        self.idle_for(record) / TOUCH_FRACTION
    }

    /// How long the store should keep `record`, from `now`.
    pub(crate) fn store_ttl(&self, record: &SessionRecord, now: SystemTime) -> Duration {
        self.expires_at(record)
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            + EXPIRED_RETENTION
    }

    pub(crate) fn emit(&self, event: SessionEvent) {
        self.events.emit(event, || self.clock.now())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("cookie", &self.cookie)
            .field("idle_timeout", &self.idle_timeout)
            .field("guest_idle_timeout", &self.guest_idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("pin", &self.pin)
            .field("allowed_ranges", &self.allowed_ranges)
            .field("proxies", &self.proxies)
            .field("token_transport", &self.token_transport)
            .field("token_header", &self.token_header)
            .field("session_limit", &self.session_limit)
            .field("events", &self.events)
            .field("budgets", &self.budgets)
            .finish()
    }
}

/// A configuration that [`SessionGuardBuilder::build`](crate::SessionGuardBuilder::build)
/// refuses, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty or not an RFC 6265 token.
    #[error("cookie name {0:?} is not a valid cookie name (RFC 6265 token characters only)")]
    InvalidCookieName(String),
    /// A `__Host-` cookie without `Secure`.
    #[error("a `__Host-` cookie must be Secure; enable `secure` or drop the prefix")]
    HostPrefixNeedsSecure,
    /// A `__Host-` cookie with a path other than `/`.
    #[error("a `__Host-` cookie must have `Path=/` (got {0:?})")]
    HostPrefixNeedsRootPath(String),
    /// A `__Host-` cookie with a `Domain`.
    #[error("a `__Host-` cookie must not have a `Domain` (got {0:?})")]
    HostPrefixForbidsDomain(String),
    /// A `__Secure-` cookie without `Secure`.
    #[error("a `__Secure-` cookie must be Secure")]
    SecurePrefixNeedsSecure,
    /// `SameSite=None` without `Secure`: browsers reject such cookies.
    #[error("`SameSite=None` requires `Secure`")]
    SameSiteNoneNeedsSecure,
    /// A cookie path or domain with characters that would break the `Set-Cookie` header.
    #[error("cookie attribute {0:?} contains characters not allowed in Set-Cookie")]
    InvalidCookieAttribute(String),
    /// A zero timeout.
    #[error("the {0} timeout must be greater than zero")]
    ZeroTimeout(&'static str),
    /// A timeout longer than [`MAX_LIFETIME`] (400 days).
    #[error("the {0} timeout ({1:?}) is longer than the 400 days browsers allow a cookie")]
    TimeoutTooLong(&'static str, Duration),
    /// Trusted proxies without saying which forwarding header they write.
    #[error(
        "trusted proxies need the forwarding header they write: call \
`forwarded_header(ForwardedHeader::XForwardedFor)` (nginx, HAProxy, most load balancers), \
`ForwardedHeader::Forwarded` (RFC 7239) or `ForwardedHeader::XRealIp`; every other \
forwarding header is then ignored"
    )]
    ForwardedHeaderRequired,
    /// A rate limit or guessing threshold of zero, or with a zero window.
    #[error("the {0} limit needs a count and a window greater than zero")]
    InvalidLimit(&'static str),
    /// A trusted proxy or allowed range is not CIDR notation.
    #[error("{0:?} is not a CIDR range (expected e.g. 10.0.0.0/8 or ::1/128)")]
    InvalidCidr(String),
    /// A subnet pin with a prefix longer than the address.
    #[error("subnet pin prefixes must be at most /32 for IPv4 and /128 for IPv6")]
    InvalidPinPrefix,
    /// `max_sessions_per_user(0, ..)` would refuse every login.
    #[error("the per-user session limit must be at least 1")]
    ZeroSessionLimit,
    /// The token header is not a valid header name, or is `cookie` / `set-cookie`.
    #[error("{0:?} cannot carry the session token (need a valid header name other than cookie/set-cookie)")]
    InvalidTokenHeader(String),
    /// The idle timeout is longer than the absolute lifetime.
    #[error(
        "the idle timeout ({idle:?}) must not be longer than the absolute lifetime ({absolute:?})"
    )]
    IdleLongerThanAbsolute {
        /// The configured idle timeout.
        idle: Duration,
        /// The configured absolute lifetime.
        absolute: Duration,
    },
}

/// The builder's working copy, validated by [`Settings::validate`].
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) cookie: CookieConfig,
    pub(crate) idle_timeout: Duration,
    pub(crate) guest_idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) pin: PinMode,
    pub(crate) allowed_ranges: Vec<String>,
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) forwarded_header: Option<ForwardedHeader>,
    pub(crate) guest_creation_limit: Option<RateLimit>,
    pub(crate) guessing_limit: Option<GuessingLimit>,
    pub(crate) event_interval: Duration,
    /// Ranges the policy's decisions depend on, for the overlap warning.
    pub(crate) policy_ranges: Vec<IpNet>,
    pub(crate) token_transport: TokenTransport,
    pub(crate) token_header: String,
    pub(crate) session_limit: Option<SessionLimit>,
    pub(crate) rejections: Arc<dyn ResponseForRejection>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Option<Arc<dyn EventSink>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cookie: CookieConfig {
                name: DEFAULT_COOKIE_NAME.to_owned(),
                secure: true,
                same_site: SameSite::Lax,
                path: "/".to_owned(),
                domain: None,
                persistent: false,
            },
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            guest_idle_timeout: DEFAULT_GUEST_IDLE_TIMEOUT,
            absolute_timeout: DEFAULT_ABSOLUTE_TIMEOUT,
            pin: PinMode::Exact,
            allowed_ranges: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: None,
            guest_creation_limit: Some(DEFAULT_GUEST_CREATION_LIMIT),
            guessing_limit: Some(DEFAULT_GUESSING_LIMIT),
            event_interval: DEFAULT_EVENT_INTERVAL,
            policy_ranges: Vec::new(),
            token_transport: TokenTransport::Both,
            token_header: DEFAULT_TOKEN_HEADER.to_owned(),
            session_limit: Some(SessionLimit {
                max: DEFAULT_MAX_SESSIONS_PER_USER,
                policy: LimitPolicy::EvictOldest,
            }),
            rejections: Arc::new(DefaultRejectionResponse),
            clock: Arc::new(SystemClock),
            events: None,
        }
    }
}

fn is_token_char(b: u8) -> bool {
    // RFC 7230 tchar, which RFC 6265 uses for cookie names.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_attr_char(b: u8) -> bool {
    // Anything visible except ';' (which would start a new attribute).
    (0x21..0x7f).contains(&b) && b != b';'
}

impl Settings {
    pub(crate) fn validate(self) -> Result<Config, ConfigError> {
        let c = &self.cookie;
        if c.name.is_empty() || !c.name.bytes().all(is_token_char) {
            return Err(ConfigError::InvalidCookieName(c.name.clone()));
        }
        for attr in std::iter::once(&c.path).chain(c.domain.as_ref()) {
            if attr.is_empty() || !attr.bytes().all(is_attr_char) {
                return Err(ConfigError::InvalidCookieAttribute(attr.clone()));
            }
        }
        if c.name.starts_with("__Host-") {
            if !c.secure {
                return Err(ConfigError::HostPrefixNeedsSecure);
            }
            if c.path != "/" {
                return Err(ConfigError::HostPrefixNeedsRootPath(c.path.clone()));
            }
            if let Some(domain) = &c.domain {
                return Err(ConfigError::HostPrefixForbidsDomain(domain.clone()));
            }
        }
        if c.name.starts_with("__Secure-") && !c.secure {
            return Err(ConfigError::SecurePrefixNeedsSecure);
        }
        if c.same_site == SameSite::None && !c.secure {
            return Err(ConfigError::SameSiteNoneNeedsSecure);
        }
        for (name, timeout) in [
            ("idle", self.idle_timeout),
            ("guest idle", self.guest_idle_timeout),
            ("absolute", self.absolute_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ConfigError::ZeroTimeout(name));
            }
            if timeout > MAX_LIFETIME {
                return Err(ConfigError::TimeoutTooLong(name, timeout));
            }
        }
        for idle in [self.idle_timeout, self.guest_idle_timeout] {
            if idle > self.absolute_timeout {
                return Err(ConfigError::IdleLongerThanAbsolute {
                    idle,
                    absolute: self.absolute_timeout,
                });
            }
        }
        if self
            .guest_creation_limit
            .is_some_and(|l| l.max == 0 || l.per.is_zero())
        {
            return Err(ConfigError::InvalidLimit("guest creation"));
        }
        if self.guessing_limit.is_some_and(|l| {
            l.threshold == 0 || l.window.is_zero() || l.cooldown.is_some_and(|c| c.is_zero())
        }) {
            return Err(ConfigError::InvalidLimit("token guessing"));
        }
        if !self.pin.is_valid() {
            return Err(ConfigError::InvalidPinPrefix);
        }
        let token_header = http::HeaderName::from_bytes(self.token_header.as_bytes())
            .ok()
            .filter(|h| h != http::header::COOKIE && h != http::header::SET_COOKIE)
            .ok_or_else(|| ConfigError::InvalidTokenHeader(self.token_header.clone()))?;
        if self.session_limit.is_some_and(|l| l.max == 0) {
            return Err(ConfigError::ZeroSessionLimit);
        }
        let allowed_ranges = parse_cidrs(&self.allowed_ranges)?;
        let trusted = parse_cidrs(&self.trusted_proxies)?;
        if !trusted.is_empty() && self.forwarded_header.is_none() {
            return Err(ConfigError::ForwardedHeaderRequired);
        }
        let events = Emitter::new(self.events, self.event_interval);
        for message in overlaps(&trusted, &allowed_ranges, &self.policy_ranges) {
            events.emit(SessionEvent::ConfigWarning { message }, || self.clock.now());
        }
        Ok(Config {
            session_limit: self.session_limit,
            token_transport: self.token_transport,
            token_header,
            rejections: self.rejections,
            allowed_ranges,
            proxies: ProxyConfig {
                trusted,
                header: self.forwarded_header,
            },
            pin: self.pin,
            cookie: self.cookie,
            idle_timeout: self.idle_timeout,
            guest_idle_timeout: self.guest_idle_timeout,
            absolute_timeout: self.absolute_timeout,
            clock: self.clock,
            events,
            budgets: Budgets::new(self.guest_creation_limit, self.guessing_limit),
        })
    }
}

/// A trusted proxy range that overlaps a range the pin or the policy trusts: a client inside
/// it connects as a "proxy" and may claim any address in a forwarding header, including one
/// the allowed ranges or a policy rule accept. A warning, not an error: a proxy that runs
/// inside an allowed network (a load balancer at 10.0.0.5 serving a 10.0.0.0/8 intranet) is
/// a legitimate setup, and refusing to start would push operators to weaken the ranges.
fn overlaps(trusted: &[IpNet], allowed: &[IpNet], policy: &[IpNet]) -> Vec<String> {
    let touches = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    let mut out = Vec::new();
    for proxy in trusted {
        for (what, ranges) in [("allowed range", allowed), ("policy range", policy)] {
            for range in ranges.iter().filter(|r| touches(proxy, r)) {
                out.push(format!(
                    "trusted proxy range {proxy} overlaps the {what} {range}: a client inside \
{proxy} can claim any address in a forwarding header; trust only your proxies' own addresses"
                ));
            }
        }
    }
    out
}

impl Config {
    /// The defaults, which are valid by construction.
    pub(crate) fn defaults() -> Config {
        let s = Settings::default();
        Config {
            cookie: s.cookie,
            idle_timeout: s.idle_timeout,
            guest_idle_timeout: s.guest_idle_timeout,
            absolute_timeout: s.absolute_timeout,
            pin: s.pin,
            allowed_ranges: Vec::new(),
            proxies: ProxyConfig::default(),
            token_transport: s.token_transport,
            token_header: http::HeaderName::from_static(DEFAULT_TOKEN_HEADER),
            session_limit: s.session_limit,
            rejections: s.rejections,
            clock: s.clock,
            events: Emitter::new(s.events, s.event_interval),
            budgets: Budgets::new(s.guest_creation_limit, s.guessing_limit),
        }
    }
}

fn parse_cidrs(list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            // A bare address means that one host.
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| ConfigError::InvalidCidr(s.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut Settings)) -> Result<(), ConfigError> {
        let mut s = Settings::default();
        f(&mut s);
        s.validate().map(|_| ())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(check(|_| {}), Ok(()));
    }

    #[test]
    fn host_prefix_rules() {
        assert_eq!(
            check(|s| s.cookie.secure = false),
            Err(ConfigError::HostPrefixNeedsSecure)
        );
        assert!(matches!(
            check(|s| s.cookie.path = "/app".into()),
            Err(ConfigError::HostPrefixNeedsRootPath(_))
        ));
        assert!(matches!(
            check(|s| s.cookie.domain = Some("example.com".into())),
            Err(ConfigError::HostPrefixForbidsDomain(_))
        ));
        assert_eq!(
            check(|s| {
                s.cookie.name = "__Secure-id".into();
                s.cookie.secure = false;
            }),
            Err(ConfigError::SecurePrefixNeedsSecure)
        );
    }

    #[test]
    fn samesite_none_needs_secure() {
        assert_eq!(
            check(|s| {
                s.cookie.name = "sid".into();
                s.cookie.secure = false;
                s.cookie.same_site = SameSite::None;
            }),
            Err(ConfigError::SameSiteNoneNeedsSecure)
        );
    }

    #[test]
    fn timeouts_are_checked() {
        assert!(matches!(
            check(|s| s.idle_timeout = Duration::from_secs(9 * 3600)),
            Err(ConfigError::IdleLongerThanAbsolute { .. })
        ));
        assert_eq!(
            check(|s| s.idle_timeout = Duration::ZERO),
            Err(ConfigError::ZeroTimeout("idle"))
        );
    }

    #[test]
    fn bad_names_and_attributes() {
        for name in ["", "a b", "a;b", "sé"] {
            assert!(
                matches!(
                    check(|s| s.cookie.name = name.into()),
                    Err(ConfigError::InvalidCookieName(_))
                ),
                "{name}"
            );
        }
        assert!(matches!(
            check(|s| {
                s.cookie.name = "sid".into();
                s.cookie.path = "/; Domain=evil".into();
            }),
            Err(ConfigError::InvalidCookieAttribute(_))
        ));
    }

    #[test]
    fn cidrs_and_pins_are_checked() {
        assert_eq!(
            check(|s| {
                s.trusted_proxies = vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "::1".into()];
                s.forwarded_header = Some(ForwardedHeader::XForwardedFor);
            }),
            Ok(())
        );
        assert_eq!(
            check(|s| s.allowed_ranges = vec!["10.0.0.0/40".into()]),
            Err(ConfigError::InvalidCidr("10.0.0.0/40".into()))
        );
        assert_eq!(
            check(|s| s.pin = PinMode::Subnet {
                v4_prefix: 33,
                v6_prefix: 64
            }),
            Err(ConfigError::InvalidPinPrefix)
        );
    }

    #[test]
    fn absurd_timeouts_are_refused() {
        for (name, f) in [
            (
                "idle",
                (|s: &mut Settings| s.idle_timeout = Duration::MAX) as fn(&mut Settings),
            ),
            ("absolute", |s| s.absolute_timeout = Duration::MAX),
            ("guest idle", |s| s.guest_idle_timeout = Duration::MAX),
        ] {
            assert!(
                matches!(check(f), Err(ConfigError::TimeoutTooLong(n, _)) if n == name),
                "{name}"
            );
        }
        assert_eq!(
            check(|s| {
                s.absolute_timeout = MAX_LIFETIME;
                s.idle_timeout = MAX_LIFETIME;
            }),
            Ok(())
        );
    }

    #[test]
    fn trusted_proxies_need_a_forwarding_header() {
        assert_eq!(
            check(|s| s.trusted_proxies = vec!["10.0.0.0/8".into()]),
            Err(ConfigError::ForwardedHeaderRequired)
        );
        assert_eq!(
            check(|s| {
                s.trusted_proxies = vec!["10.0.0.0/8".into()];
                s.forwarded_header = Some(ForwardedHeader::XForwardedFor);
            }),
            Ok(())
        );
    }

    #[test]
    fn overlapping_trusted_and_allowed_ranges_are_reported() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let found = overlaps(
            &[net("127.0.0.1/32")],
            &[net("127.0.0.0/8")],
            &[net("10.0.0.0/8"), net("127.0.0.1/32")],
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(overlaps(&[net("10.1.0.0/16")], &[net("192.0.2.0/24")], &[]).is_empty());
    }

    #[test]
    fn touch_interval_scales_with_idle_timeout() {
        let s = Settings {
            idle_timeout: Duration::from_secs(2),
            guest_idle_timeout: Duration::from_secs(1),
            ..Settings::default()
        };
        let config = s.validate().unwrap();
        let mut record = SessionRecord::new(SystemTime::now());
        assert_eq!(
            config.touch_interval_for(&record),
            Duration::from_millis(50),
            "guest"
        );
        record.identity = Some(crate::record::Identity::new("u"));
        assert_eq!(
            config.touch_interval_for(&record),
            Duration::from_millis(100)
        );
    }
}
