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
//! | remember me: longest lifetime | 30 days | a login the user asked to be remembered on this device ([`LoginOptions::remember_me`](crate::LoginOptions::remember_me)) lives at most this long, however long the application asks for: NIST SP 800-63B-3 §4.1.3 requires reauthentication at least every 30 days even at AAL1 |
//! | remember me: idle timeout | 7 days | a remembered session must survive nights and weekends (otherwise remembering is pointless), but a device left unused for a week logs in again; a remembered session is an AAL1-style session, so keep it out of what needs AAL2 (check [`Session::is_remembered`](crate::Session::is_remembered) or `authenticated_at` before sensitive actions) |
//! | device binding (feature `dbsc`) | off; when on: bound cookie `__Host-bound` for 5 min, challenges 2 min, ES256 and RS256 | a copied cookie pair stops working within one bound-cookie lifetime; see `dbsc::DeviceBinding` for each default's reason (W3C webappsec-dbsc) |
//! | touch interval | idle / 20 | activity on reads is written at most this often, so an idle session expires between `idle − idle/20` and `idle` after its last request |
//!
//! Every setting is set through [`SessionGuardBuilder`](crate::SessionGuardBuilder) and
//! checked once by its `build`, which returns a [`ConfigError`] that says
//! what to change.

// Inside: each setting is one field of the builder's plain `Settings` data with its default
// (settings.rs), checked once by `Settings::validate` (validate.rs) into the `Config` the
// request path reads; the hooks (clock, event sink, rejection responder) are kept apart in
// `Hooks`. Adding a setting is one field, one default, one validation rule, one setter.
pub(crate) mod error;
mod settings;
mod validate;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::abuse::{Budgets, GuessingLimit, RateLimit};
use crate::client_ip::ProxyConfig;
use crate::clock::Clock;
use crate::events::{Emitter, SessionEvent};
use crate::net::Cidrs;
use crate::record::{ExpiryKind, SessionRecord};
use crate::rejection::ResponseForRejection;
use crate::transport::Transport;

pub(crate) use error::ConfigError;
pub(crate) use settings::{Hooks, Settings};

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
/// Default cap on one user's live sessions (with [`LimitPolicy::EvictOldest`](crate::LimitPolicy::EvictOldest)): a person
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
/// Default longest lifetime of a remembered login: 30 days (NIST SP 800-63B-3 §4.1.3).
pub const DEFAULT_MAX_REMEMBER_ME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Default idle timeout of a remembered login: 7 days.
pub const DEFAULT_REMEMBER_ME_IDLE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Activity is recorded on reads at most once per `idle_timeout / TOUCH_FRACTION`.
pub const TOUCH_FRACTION: u32 = 20;

/// The validated configuration: the builder's settings, and what validation derived from
/// them for the request path (parsed networks, the token transport with a checked header
/// name). Plain data, shared by the layer and every `Session` handle.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) settings: Settings,
    /// Whether anything configured reads the client address (the pin, the allowed ranges,
    /// the policy): without it a request with no connection info is served, with it refused.
    pub(crate) needs_client_ip: bool,
    pub(crate) allowed_ranges: Cidrs,
    pub(crate) proxies: ProxyConfig,
    pub(crate) transport: Transport,
    /// The checked DBSC option, if device binding is on.
    #[cfg(feature = "dbsc")]
    pub(crate) device_binding: Option<crate::dbsc::binding::Binding>,
}

impl Config {
    /// How many sessions a per-user list holds at most: the per-user cap bounds it.
    pub(crate) fn list_limit(&self) -> usize {
        self.settings
            .session_limit
            .map_or(DEFAULT_MAX_SESSIONS_PER_USER, |l| l.max)
            .max(1)
    }

    /// The lifetime a remembered login asked for, capped by the current setting (so lowering
    /// it applies to sessions remembered before); `None` for every other session.
    fn remembered_for(&self, record: &SessionRecord) -> Option<Duration> {
        let asked = record.remember_me.filter(|_| record.identity.is_some())?;
        Some(asked.min(self.settings.max_remember_me))
    }

    /// The idle timeout that applies to `record`: guests have their own, shorter one, and a
    /// remembered login a longer one (never longer than its own lifetime).
    pub(crate) fn idle_for(&self, record: &SessionRecord) -> Duration {
        if record.identity.is_none() {
            self.settings.guest_idle_timeout
        } else if let Some(lifetime) = self.remembered_for(record) {
            self.settings.remember_me_idle_timeout.min(lifetime)
        } else {
            self.settings.idle_timeout
        }
    }

    /// The absolute lifetime that applies to `record`: a remembered login has its own.
    fn absolute_for(&self, record: &SessionRecord) -> Duration {
        self.remembered_for(record)
            .unwrap_or(self.settings.absolute_timeout)
    }

    /// Why `record` is expired at `now`, if it is.
    pub(crate) fn expiry(&self, record: &SessionRecord, now: SystemTime) -> Option<ExpiryKind> {
        record.expiry(now, self.idle_for(record), self.absolute_for(record))
    }

    /// When `record` expires without further activity.
    pub(crate) fn expires_at(&self, record: &SessionRecord) -> SystemTime {
        record.expires_at(self.idle_for(record), self.absolute_for(record))
    }

    /// When `record`'s absolute lifetime ends, whatever the activity.
    pub(crate) fn absolute_expiry(&self, record: &SessionRecord) -> SystemTime {
        let absolute = self.absolute_for(record);
        record.expires_at(absolute, absolute)
    }

    /// Whether the cookie that carries `record`'s token outlives the browser: the layer-wide
    /// setting, or a remembered login.
    pub(crate) fn persistent_cookie(&self, record: &SessionRecord) -> bool {
        self.settings.cookie.persistent || self.remembered_for(record).is_some()
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
}

/// What the request path and every `Session` handle share besides the store and the policy:
/// the validated configuration (data), the hooks made ready for use (the clock, the event
/// emitter over the sink, the rejection responder), and the per-address budgets (state).
pub(crate) struct Env {
    pub(crate) config: Config,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Emitter,
    pub(crate) rejections: Arc<dyn ResponseForRejection>,
    pub(crate) budgets: Budgets,
}

impl Env {
    /// The layer's clock.
    #[inline]
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Emits an event (aggregated if it is flood-prone).
    #[inline]
    pub(crate) fn emit(&self, event: SessionEvent) {
        self.events.emit(event, || self.clock.now())
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("config", &self.config)
            .field("events", &self.events)
            .field("budgets", &self.budgets)
            .finish_non_exhaustive()
    }
}
