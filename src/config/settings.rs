//! The builder's plain data and the hooks, each with its default.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;

use super::{
    DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_COOKIE_NAME, DEFAULT_EVENT_INTERVAL, DEFAULT_GUESSING_LIMIT,
    DEFAULT_GUEST_CREATION_LIMIT, DEFAULT_GUEST_IDLE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_REMEMBER_ME, DEFAULT_MAX_SESSIONS_PER_USER, DEFAULT_REMEMBER_ME_IDLE_TIMEOUT,
    DEFAULT_TOKEN_HEADER,
};
use crate::abuse::{GuessingLimit, RateLimit};
use crate::client_ip::ForwardedHeader;
use crate::clock::{Clock, SystemClock};
use crate::events::EventSink;
use crate::limit::{LimitPolicy, SessionLimit};
use crate::pin::PinMode;
use crate::rejection::{DefaultRejectionResponse, ResponseForRejection};
use crate::transport::{CookieSettings, TokenTransport};

/// Every setting, as the builder's setters leave it: plain data, checked by
/// [`validate`](Settings::validate). The defaults and their reasons are in the
/// [module docs](crate::config).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) cookie: CookieSettings,
    pub(crate) idle_timeout: Duration,
    pub(crate) guest_idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) max_remember_me: Duration,
    pub(crate) remember_me_idle_timeout: Duration,
    pub(crate) pin: PinMode,
    pub(crate) allowed_ranges: Vec<String>,
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) forwarded_header: Option<ForwardedHeader>,
    pub(crate) guest_creation_limit: Option<RateLimit>,
    pub(crate) guessing_limit: Option<GuessingLimit>,
    pub(crate) event_interval: Duration,
    pub(crate) token_transport: TokenTransport,
    pub(crate) token_header: String,
    pub(crate) session_limit: Option<SessionLimit>,
    /// Device Bound Session Credentials: off unless configured.
    #[cfg(feature = "dbsc")]
    pub(crate) device_binding: Option<crate::dbsc::DeviceBinding>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cookie: CookieSettings {
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
            max_remember_me: DEFAULT_MAX_REMEMBER_ME,
            remember_me_idle_timeout: DEFAULT_REMEMBER_ME_IDLE_TIMEOUT,
            pin: PinMode::Exact,
            allowed_ranges: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: None,
            guest_creation_limit: Some(DEFAULT_GUEST_CREATION_LIMIT),
            guessing_limit: Some(DEFAULT_GUESSING_LIMIT),
            event_interval: DEFAULT_EVENT_INTERVAL,
            token_transport: TokenTransport::Both,
            token_header: DEFAULT_TOKEN_HEADER.to_owned(),
            session_limit: Some(SessionLimit {
                max: DEFAULT_MAX_SESSIONS_PER_USER,
                policy: LimitPolicy::EvictOldest,
            }),
            #[cfg(feature = "dbsc")]
            device_binding: None,
        }
    }
}

/// The code the application plugs in: the clock, where events go, and what a refusal
/// answers. Kept apart from [`Settings`], which is data.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Option<Arc<dyn EventSink>>,
    pub(crate) rejections: Arc<dyn ResponseForRejection>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            clock: Arc::new(SystemClock),
            events: None,
            rejections: Arc::new(DefaultRejectionResponse),
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}
