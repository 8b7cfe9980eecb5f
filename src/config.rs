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
//! | policy | `ValidationPolicy::permit_all()` | nothing to enforce until you write rules; pinning works on its own |
//! | token transport | `Both` | browsers keep using the `HttpOnly` cookie; gRPC and native clients, which keep no cookie jar, use the header; each gets its token back the way it sent it |
//! | token header | `x-session-token` | a custom header is never sent by browsers on their own, so it cannot be abused cross-site; `x-` marks it as application-specific |
//! | sessions per user | 20, oldest evicted | one account cannot fill the store or make per-user operations slow; 20 is more browsers and devices than a person uses at once (OWASP, "Simultaneous Session Logons"); users can see and end their other sessions (ASVS 3.3.4) |
//! | touch interval | idle / 20 | activity on reads is written at most this often, so an idle session expires between `idle − idle/20` and `idle` after its last request |

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;
use ipnet::IpNet;

use crate::clock::{Clock, SystemClock};
use crate::cookie::TokenTransport;
use crate::events::EventSink;
use crate::pin::PinMode;
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
    pub(crate) absolute_timeout: Duration,
    pub(crate) touch_interval: Duration,
    pub(crate) pin: PinMode,
    pub(crate) allowed_ranges: Vec<IpNet>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) token_transport: TokenTransport,
    pub(crate) token_header: http::HeaderName,
    pub(crate) session_limit: Option<SessionLimit>,
    pub(crate) rejections: Arc<dyn ResponseForRejection>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Option<Arc<dyn EventSink>>,
}

impl Config {
    /// How many sessions a per-user list holds at most: the per-user cap bounds it.
    pub(crate) fn list_limit(&self) -> usize {
        self.session_limit
            .map_or(DEFAULT_MAX_SESSIONS_PER_USER, |l| l.max)
            .max(1)
    }

    /// How long the store should keep `record`, from `now`.
    pub(crate) fn store_ttl(
        &self,
        record: &crate::record::SessionRecord,
        now: std::time::SystemTime,
    ) -> Duration {
        record
            .expires_at(self.idle_timeout, self.absolute_timeout)
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            + EXPIRED_RETENTION
    }

    pub(crate) fn emit(&self, event: crate::events::SessionEvent) {
        crate::events::emit(self.events.as_deref(), event)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("cookie", &self.cookie)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("touch_interval", &self.touch_interval)
            .field("pin", &self.pin)
            .field("allowed_ranges", &self.allowed_ranges)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("token_transport", &self.token_transport)
            .field("token_header", &self.token_header)
            .field("session_limit", &self.session_limit)
            .field("events", &self.events.is_some())
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
    pub(crate) absolute_timeout: Duration,
    pub(crate) pin: PinMode,
    pub(crate) allowed_ranges: Vec<String>,
    pub(crate) trusted_proxies: Vec<String>,
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
            absolute_timeout: DEFAULT_ABSOLUTE_TIMEOUT,
            pin: PinMode::Exact,
            allowed_ranges: Vec::new(),
            trusted_proxies: Vec::new(),
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
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout("idle"));
        }
        if self.absolute_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout("absolute"));
        }
        if self.idle_timeout > self.absolute_timeout {
            return Err(ConfigError::IdleLongerThanAbsolute {
                idle: self.idle_timeout,
                absolute: self.absolute_timeout,
            });
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
        Ok(Config {
            session_limit: self.session_limit,
            token_transport: self.token_transport,
            token_header,
            rejections: self.rejections,
            touch_interval: self.idle_timeout / TOUCH_FRACTION,
            allowed_ranges: parse_cidrs(&self.allowed_ranges)?,
            trusted_proxies: parse_cidrs(&self.trusted_proxies)?,
            pin: self.pin,
            cookie: self.cookie,
            idle_timeout: self.idle_timeout,
            absolute_timeout: self.absolute_timeout,
            clock: self.clock,
            events: self.events,
        })
    }
}

impl Config {
    /// The defaults, which are valid by construction.
    pub(crate) fn defaults() -> Config {
        let s = Settings::default();
        Config {
            touch_interval: s.idle_timeout / TOUCH_FRACTION,
            cookie: s.cookie,
            idle_timeout: s.idle_timeout,
            absolute_timeout: s.absolute_timeout,
            pin: s.pin,
            allowed_ranges: Vec::new(),
            trusted_proxies: Vec::new(),
            token_transport: s.token_transport,
            token_header: http::HeaderName::from_static(DEFAULT_TOKEN_HEADER),
            session_limit: s.session_limit,
            rejections: s.rejections,
            clock: s.clock,
            events: s.events,
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
            check(
                |s| s.trusted_proxies = vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "::1".into()]
            ),
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
    fn touch_interval_scales_with_idle_timeout() {
        let s = Settings {
            idle_timeout: Duration::from_secs(2),
            ..Settings::default()
        };
        assert_eq!(
            s.validate().unwrap().touch_interval,
            Duration::from_millis(100)
        );
    }
}
