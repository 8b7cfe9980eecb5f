//! The builder: one setter per setting, checked once by [`build`](SessionGuardBuilder::build).

use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;

use crate::abuse::{GuessingLimit, RateLimit};
use crate::client_ip::ForwardedHeader;
use crate::clock::Clock;
use crate::config::{ConfigError, Hooks, Settings};
use crate::core::Core;
use crate::events::EventSink;
use crate::layer::SessionGuardLayer;
use crate::limit::{LimitPolicy, SessionLimit};
use crate::pin::PinMode;
use crate::policy::{PostAuthPolicy, ValidationPolicy};
use crate::rejection::ResponseForRejection;
use crate::store::{DynStore, SessionStore};
use crate::transport::TokenTransport;

/// Configures a [`SessionGuardLayer`]; [`build`](Self::build) checks the result.
#[must_use]
pub struct SessionGuardBuilder<P = ValidationPolicy> {
    store: Box<dyn DynStore>,
    policy: P,
    settings: Settings,
    hooks: Hooks,
}

impl SessionGuardLayer {
    /// Starts a configuration of a layer on `store`.
    pub fn builder(store: impl SessionStore) -> SessionGuardBuilder {
        SessionGuardBuilder {
            store: Box::new(store),
            policy: ValidationPolicy::permit_all(),
            settings: Settings::default(),
            hooks: Hooks::default(),
        }
    }
}

impl<P: PostAuthPolicy> SessionGuardBuilder<P> {
    /// How strictly an authenticated session is bound to its login address (default
    /// [`PinMode::Exact`]). See [`PinMode`] for choosing a mode.
    pub fn pin_mode(mut self, mode: PinMode) -> Self {
        self.settings.pin = mode;
        self
    }

    /// Networks from which authenticated sessions may be used at all (CIDR; a bare address is
    /// one host). Default: any. Parsed by [`build`](Self::build).
    pub fn allowed_ranges<I, S>(mut self, ranges: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.allowed_ranges = ranges.into_iter().map(Into::into).collect();
        self
    }

    /// Proxies whose forwarding header is believed (CIDR; a bare address is one host).
    /// Default: none, so the client address is the connection's peer. List only proxies you
    /// run, and name the header they write with [`forwarded_header`](Self::forwarded_header)
    /// ([`build`](Self::build) refuses trusted proxies without one).
    ///
    /// ```
    /// use tower_session_guard::{ForwardedHeader, MemoryStore, SessionGuardLayer};
    ///
    /// let layer = SessionGuardLayer::builder(MemoryStore::new())
    ///     .trusted_proxies(["10.0.0.5"])
    ///     .forwarded_header(ForwardedHeader::XForwardedFor)
    ///     .build()?;
    /// # Ok::<_, tower_session_guard::ConfigError>(())
    /// ```
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.trusted_proxies = proxies.into_iter().map(Into::into).collect();
        self
    }

    /// The one forwarding header your trusted proxies write; every other forwarding header is
    /// ignored, because proxies pass the others through from the client untouched. When a
    /// request from a trusted proxy has no usable chain in this header, its client address is
    /// unknown: an authenticated request is then refused with 401 (the session is kept) and
    /// a login fails with [`SessionError::ClientIpUnverifiable`](crate::SessionError::ClientIpUnverifiable).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.settings.forwarded_header = Some(header);
        self
    }

    /// The idle timeout of guest sessions, which hold no login (default 15 minutes, at most
    /// the absolute lifetime). Shorter than a logged-in user's, so anonymous state leaves the
    /// store soon; the stores also keep guests within a budget of their own.
    pub fn guest_idle_timeout(mut self, idle: Duration) -> Self {
        self.settings.guest_idle_timeout = idle;
        self
    }

    /// How many guest sessions one client address may create per window (default 300 per
    /// minute; IPv6 addresses count by their /64). Beyond it, the handler's write fails with
    /// [`SessionError::RateLimited`](crate::SessionError::RateLimited) (429). `None` turns
    /// the limit off. Logins and requests with a live session are never charged.
    pub fn guest_creation_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.settings.guest_creation_limit = limit;
        self
    }

    /// ID-guessing detection (default: more than 100 distinct unknown tokens from one address
    /// per minute emit [`SessionEvent::TokenGuessing`](crate::SessionEvent::TokenGuessing),
    /// no cool-down). With a cool-down, the address's unknown tokens are then answered 429
    /// and it creates no guest session until the cool-down ends; its live sessions keep
    /// working, so a guesser behind a shared NAT cannot lock out logged-in neighbours.
    /// `None` turns detection off.
    pub fn token_guessing(mut self, limit: Option<GuessingLimit>) -> Self {
        self.settings.guessing_limit = limit;
        self
    }

    /// The interval over which flood-prone events (guest creations, unknown tokens, refused
    /// guests) are aggregated (default 10 s; zero emits every event). See
    /// [`SessionEvent::Suppressed`](crate::SessionEvent::Suppressed).
    pub fn event_aggregation(mut self, interval: Duration) -> Self {
        self.settings.event_interval = interval;
        self
    }

    /// Caps each user's live authenticated sessions at `max` (default 20 with
    /// [`LimitPolicy::EvictOldest`]; see [`config`](crate::config) for why). At a login
    /// beyond it, [`LimitPolicy::EvictOldest`] ends the user's oldest sessions and
    /// [`LimitPolicy::RejectNew`] refuses the login with
    /// [`SessionError::TooManySessions`](crate::SessionError::TooManySessions). The check is
    /// atomic in the store, so it holds across instances sharing one.
    pub fn max_sessions_per_user(mut self, max: usize, policy: LimitPolicy) -> Self {
        self.settings.session_limit = Some(SessionLimit { max, policy });
        self
    }

    /// How the token travels (default [`TokenTransport::Both`]): see its docs.
    pub fn token_transport(mut self, transport: TokenTransport) -> Self {
        self.settings.token_transport = transport;
        self
    }

    /// The header that carries the token for clients without a cookie jar (default
    /// `x-session-token`; in gRPC it is a metadata key).
    pub fn token_header(mut self, name: impl Into<String>) -> Self {
        self.settings.token_header = name.into();
        self
    }

    /// What the layer answers when it refuses a request (default
    /// [`DefaultRejectionResponse`](crate::DefaultRejectionResponse)).
    pub fn rejection_response(mut self, responder: impl ResponseForRejection) -> Self {
        self.hooks.rejections = Arc::new(responder);
        self
    }

    /// Replaces the post-authentication policy (default: [`ValidationPolicy::permit_all`]).
    pub fn policy<Q: PostAuthPolicy>(self, policy: Q) -> SessionGuardBuilder<Q> {
        SessionGuardBuilder {
            store: self.store,
            policy,
            settings: self.settings,
            hooks: self.hooks,
        }
    }

    /// Adds a second policy after the current one: both must allow. For example the built-in
    /// validation policy and then a closure of your own.
    pub fn and_policy<Q: PostAuthPolicy>(self, policy: Q) -> SessionGuardBuilder<(P, Q)> {
        SessionGuardBuilder {
            store: self.store,
            policy: (self.policy, policy),
            settings: self.settings,
            hooks: self.hooks,
        }
    }

    /// The cookie name (default `__Host-session`). A `__Host-` name requires `Secure`,
    /// `Path=/` and no `Domain`; a `__Secure-` name requires `Secure`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.settings.cookie.name = name.into();
        self
    }

    /// The `SameSite` attribute (default `Lax`). `None` requires `Secure`.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.settings.cookie.same_site = same_site;
        self
    }

    /// The `Secure` attribute (default on). Turning it off also needs a cookie name without
    /// the `__Host-`/`__Secure-` prefix, and is only for plain-HTTP development.
    pub fn secure(mut self, secure: bool) -> Self {
        self.settings.cookie.secure = secure;
        self
    }

    /// The cookie `Path` (default `/`; a `__Host-` cookie requires `/`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.settings.cookie.path = path.into();
        self
    }

    /// The cookie `Domain` (default none, which keeps the cookie on this host only; a
    /// `__Host-` cookie forbids it).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.settings.cookie.domain = Some(domain.into());
        self
    }

    /// Makes the cookie persistent, with `Max-Age` set to the session's remaining absolute
    /// lifetime (default off: a session cookie that dies with the browser).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.settings.cookie.persistent = persistent;
        self
    }

    /// The idle timeout (default 30 minutes).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.settings.idle_timeout = idle;
        self
    }

    /// The absolute lifetime (default 8 hours).
    pub fn absolute_timeout(mut self, absolute: Duration) -> Self {
        self.settings.absolute_timeout = absolute;
        self
    }

    /// Turns on Device Bound Session Credentials (feature `dbsc`; off by default): logins
    /// offer the browser to bind the session to a device key, the layer answers the
    /// registration and refresh endpoints itself, and every request of a bound session then
    /// needs the short-lived bound cookie. Sessions that never register work as before.
    /// Checked by [`build`](Self::build). See [`DeviceBinding`](crate::dbsc::DeviceBinding).
    #[cfg(feature = "dbsc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dbsc")))]
    pub fn device_binding(mut self, binding: crate::dbsc::DeviceBinding) -> Self {
        self.settings.device_binding = Some(binding);
        self
    }

    /// The longest lifetime of a remembered login (default 30 days, NIST SP 800-63B-3
    /// §4.1.3): a [`LoginOptions::remember_me`](crate::LoginOptions::remember_me) asking
    /// for longer gets this. Lowering it shortens sessions remembered before.
    pub fn max_remember_me(mut self, lifetime: Duration) -> Self {
        self.settings.max_remember_me = lifetime;
        self
    }

    /// The idle timeout of a remembered login (default 7 days; never longer than
    /// [`max_remember_me`](Self::max_remember_me)).
    pub fn remember_me_idle_timeout(mut self, idle: Duration) -> Self {
        self.settings.remember_me_idle_timeout = idle;
        self
    }

    /// The clock (default the system clock); tests inject a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.hooks.clock = Arc::new(clock);
        self
    }

    /// Receives every [`SessionEvent`](crate::SessionEvent), in addition to `tracing`.
    pub fn event_sink(mut self, sink: impl EventSink) -> Self {
        self.hooks.events = Some(Arc::new(sink));
        self
    }

    /// Checks the configuration and builds the layer. A trusted proxy range that overlaps an
    /// allowed range or a range of the policy is reported as a
    /// [`SessionEvent::ConfigWarning`](crate::SessionEvent::ConfigWarning).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] that says what to change.
    pub fn build(self) -> Result<SessionGuardLayer<P>, ConfigError> {
        let (ranges, needs_ip) = (self.policy.ip_ranges(), self.policy.needs_client_ip());
        let env = self.settings.validate(self.hooks, ranges, needs_ip)?;
        Ok(SessionGuardLayer::from_core(Core {
            store: self.store,
            policy: self.policy,
            env,
        }))
    }
}
