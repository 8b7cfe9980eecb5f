//! The builder option [`DeviceBinding`]: endpoints, the bound cookie and the algorithms, each
//! with its default and the reason for it; checked once at `build()` into [`Binding`].

use std::time::Duration;

use cookie::{Cookie, SameSite};

use super::jws::Algorithm;
use crate::pin::PinMode;

/// Default registration endpoint (answered by the layer).
pub const DEFAULT_REGISTRATION_PATH: &str = "/dbsc/registration";
/// Default refresh endpoint (answered by the layer).
pub const DEFAULT_REFRESH_PATH: &str = "/dbsc/refresh";
/// Default bound cookie name: `__Host-` so that the browser accepts it only `Secure`, on
/// `Path=/`, without `Domain` (a sibling subdomain cannot plant one; OWASP Session
/// Management Cheat Sheet, "Cookies").
pub const DEFAULT_BOUND_COOKIE_NAME: &str = "__Host-bound";
/// Default bound cookie lifetime: 5 minutes. It is the window in which a copied pair of
/// cookies still works without the device key, and the interval at which an active browser
/// signs one refresh (one signature check and one store write per session per interval).
/// The W3C DBSC explainer (github.com/w3c/webappsec-dbsc) describes the bound cookie as
/// short-lived and renewed periodically without fixing a number; 5 minutes keeps a copied
/// cookie useful for a sixth of the 30-minute idle timeout (OWASP Session Management Cheat
/// Sheet, NIST SP 800-63B) while an active browser signs one refresh per 5 minutes, which
/// costs nothing noticeable.
pub const DEFAULT_BOUND_COOKIE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long a challenge is accepted: the browser answers within a second; two minutes
/// allow for a slow device key (TPM signatures take hundreds of milliseconds) and clock-free
/// retries, and keep a leaked challenge useless soon after.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(2 * 60);
/// How long after registration a request of the session may still come without any bound
/// cookie: the browser registers in the background while the page goes on, so the first
/// navigation after a login (a redirect, a reload) can leave before the browser stored the
/// bound cookie, and would otherwise be served logged out (seen with Chromium 156 in
/// e2e/tests/chromium_dbsc.rs). Ten seconds covers that race with a wide margin; a copy made
/// in that window still stops working ten seconds after registration, far within one
/// bound-cookie lifetime. A wrong or expired bound cookie gets no grace.
pub const REGISTRATION_GRACE: Duration = Duration::from_secs(10);
/// The longest bound cookie lifetime `build()` accepts: longer gives a thief as long as the
/// session itself, which is what binding exists to prevent.
pub const MAX_BOUND_COOKIE_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Device Bound Session Credentials for logged-in sessions (W3C webappsec-dbsc), passed to
/// [`SessionGuardBuilder::device_binding`](crate::SessionGuardBuilder::device_binding).
///
/// ```
/// use std::time::Duration;
/// use tower_session_guard::dbsc::DeviceBinding;
/// use tower_session_guard::{MemoryStore, SessionGuardLayer};
///
/// let layer = SessionGuardLayer::builder(MemoryStore::new())
///     .device_binding(DeviceBinding::new().bound_cookie_lifetime(Duration::from_secs(120)))
///     .build()?;
/// # Ok::<_, tower_session_guard::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DeviceBinding {
    registration_path: String,
    refresh_path: String,
    cookie_name: String,
    lifetime: Duration,
    algorithms: Vec<Algorithm>,
    bound_pin_mode: Option<PinMode>,
}

impl Default for DeviceBinding {
    fn default() -> Self {
        DeviceBinding {
            registration_path: DEFAULT_REGISTRATION_PATH.to_owned(),
            refresh_path: DEFAULT_REFRESH_PATH.to_owned(),
            cookie_name: DEFAULT_BOUND_COOKIE_NAME.to_owned(),
            lifetime: DEFAULT_BOUND_COOKIE_LIFETIME,
            algorithms: vec![Algorithm::Es256, Algorithm::Rs256],
            bound_pin_mode: None,
        }
    }
}

impl DeviceBinding {
    /// The defaults: endpoints `/dbsc/registration` and `/dbsc/refresh`, bound cookie
    /// `__Host-bound` for 5 minutes, ES256 and RS256.
    pub fn new() -> Self {
        Self::default()
    }

    /// The path the browser registers its key at (POST, answered by the layer).
    pub fn registration_path(mut self, path: impl Into<String>) -> Self {
        self.registration_path = path.into();
        self
    }

    /// The path the browser refreshes the bound cookie at (POST, answered by the layer).
    pub fn refresh_path(mut self, path: impl Into<String>) -> Self {
        self.refresh_path = path.into();
        self
    }

    /// The bound cookie's name (default `__Host-bound`).
    pub fn bound_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// How long a bound cookie is accepted (default 5 minutes, at most 1 hour): a copied
    /// session cookie stops working at most this long after the theft.
    pub fn bound_cookie_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The algorithms the browser may sign with (default ES256 and RS256), in order of
    /// preference.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self.algorithms.dedup();
        self
    }

    /// The IP pin for sessions bound to a device key (default: the layer's
    /// [`pin_mode`](crate::SessionGuardBuilder::pin_mode), unchanged). A bound session is
    /// served as itself only with a bound cookie that only the device key renews, so a copied
    /// cookie already stops working within one bound-cookie lifetime wherever it is replayed
    /// from; relaxing the pin (to [`PinMode::subnet`] or [`PinMode::Off`]) for bound
    /// sessions keeps users whose address changes (mobile, roaming) logged in without giving
    /// up theft protection. Unbound sessions keep the strict pin.
    pub fn bound_session_pin_mode(mut self, mode: PinMode) -> Self {
        self.bound_pin_mode = Some(mode);
        self
    }

    /// Checks the option; `session_cookie` is the session cookie's name, which the bound
    /// cookie must not share. The error says what to change.
    pub(crate) fn validate(self, session_cookie: &str) -> Result<Binding, String> {
        for (what, path) in [
            ("registration", &self.registration_path),
            ("refresh", &self.refresh_path),
        ] {
            let ok = path.starts_with('/')
                && path.len() <= 256
                && path
                    .parse::<http::uri::PathAndQuery>()
                    .is_ok_and(|p| p.query().is_none())
                && path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if !ok {
                return Err(format!(
                    "the DBSC {what} path {path:?} must be an absolute path without query or quotes"
                ));
            }
        }
        if self.registration_path == self.refresh_path {
            return Err("the DBSC registration and refresh paths must differ".to_owned());
        }
        let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
        if self.cookie_name.is_empty() || !self.cookie_name.bytes().all(token) {
            return Err(format!(
                "bound cookie name {:?} is not a cookie name (RFC 6265 token)",
                self.cookie_name
            ));
        }
        if self.cookie_name == session_cookie {
            return Err("the bound cookie needs a name other than the session cookie's".into());
        }
        if self.lifetime < Duration::from_secs(1) || self.lifetime > MAX_BOUND_COOKIE_LIFETIME {
            return Err(format!(
                "the bound cookie lifetime ({:?}) must be between 1 s and 1 h",
                self.lifetime
            ));
        }
        if self.bound_pin_mode.is_some_and(|m| !m.is_valid()) {
            return Err("the bound-session pin prefixes must be at most /32 and /128".to_owned());
        }
        if self.algorithms.is_empty() {
            return Err("DBSC needs at least one algorithm".to_owned());
        }
        let attributes = bound_cookie(&self.cookie_name, "x", None)
            .split_once("; ")
            .map(|(_, attrs)| attrs.to_owned())
            .unwrap_or_default();
        Ok(Binding {
            registration_path: self.registration_path,
            refresh_path: self.refresh_path,
            cookie_name: self.cookie_name,
            lifetime: self.lifetime,
            algorithms: self.algorithms,
            bound_pin_mode: self.bound_pin_mode,
            attributes,
        })
    }
}

/// The bound cookie's `Set-Cookie`: always `Secure` (DBSC runs only on secure origins),
/// `HttpOnly`, `SameSite=Lax`, `Path=/` (the whole origin is in scope), and `Max-Age` the
/// lifetime when given. Without a lifetime it is what the registration JSON names as the
/// cookie's `attributes`: the attributes that identify the cookie, which the browser compares
/// with the real one (name, domain, path, Secure, HttpOnly, SameSite), and not its expiry,
/// which it ignores there. Chromium 156 refuses a registration whose `attributes` carry a
/// `Max-Age` (`registration_failed` in its net log; found by e2e/tests/chromium_dbsc.rs).
pub(crate) fn bound_cookie(name: &str, value: &str, lifetime: Option<Duration>) -> String {
    let mut cookie = Cookie::build((name.to_owned(), value.to_owned()))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax);
    if let Some(lifetime) = lifetime {
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(0);
        cookie = cookie.max_age(cookie::time::Duration::seconds(secs));
    }
    cookie.build().to_string()
}

/// A checked [`DeviceBinding`], what the request path reads.
#[derive(Debug)]
pub(crate) struct Binding {
    pub(crate) registration_path: String,
    pub(crate) refresh_path: String,
    pub(crate) cookie_name: String,
    pub(crate) lifetime: Duration,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) bound_pin_mode: Option<PinMode>,
    /// The attributes of the bound cookie's `Set-Cookie` (after `name=value; `) up to its
    /// `Max-Age`, byte for byte, for the JSON's `credentials[].attributes` (see
    /// [`bound_cookie`]).
    pub(crate) attributes: String,
}
