//! The one error the builder returns.

use std::time::Duration;

use crate::net::InvalidCidr;

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
    /// A timeout longer than [`MAX_LIFETIME`](crate::config::MAX_LIFETIME) (400 days).
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
    #[error(transparent)]
    InvalidCidr(#[from] InvalidCidr),
    /// A subnet pin with a prefix longer than the address.
    #[error("subnet pin prefixes must be at most /32 for IPv4 and /128 for IPv6")]
    InvalidPinPrefix,
    /// `max_sessions_per_user(0, ..)` would refuse every login.
    #[error("the per-user session limit must be at least 1")]
    ZeroSessionLimit,
    /// The token header is not a valid header name, or is `cookie` / `set-cookie`.
    #[error("{0:?} cannot carry the session token (need a valid header name other than cookie/set-cookie)")]
    InvalidTokenHeader(String),
    /// A `dbsc::DeviceBinding` option that cannot work (feature
    /// `dbsc`); the message says what to change.
    #[error("device binding: {0}")]
    InvalidDeviceBinding(String),
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
