//! Audit events: what happened to which session, for monitoring.
//!
//! Every event goes to `tracing` (target `tower_session_guard::event`) and, if one is
//! configured, to a user [`EventSink`]. Events name sessions by [`Fingerprint`] only: a raw
//! token never appears in an event or a log line.
//!
//! **Floods stay bounded.** The events anonymous clients can cause at will ([`Created`],
//! [`UnknownToken`], [`GuestRefused`]), and [`ClientIpUnknown`], which a server without
//! connection info would otherwise log at ERROR on every request, are aggregated per kind:
//! the first in each interval
//! (default 10 s) is emitted as a sample, the rest of that interval are counted, and the
//! count comes out as one [`Suppressed`] event (with the last suppressed one's address and
//! fingerprint) when the next event of that kind arrives after the interval. So a million
//! random tokens a second write two lines per interval, not a million.
//!
//! [`Created`]: SessionEvent::Created
//! [`UnknownToken`]: SessionEvent::UnknownToken
//! [`GuestRefused`]: SessionEvent::GuestRefused
//! [`ClientIpUnknown`]: SessionEvent::ClientIpUnknown
//! [`Suppressed`]: SessionEvent::Suppressed

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::id::Fingerprint;
use crate::record::ExpiryKind;
use crate::store::StoreError;

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionEvent {
    /// A guest session was created because the handler wrote to it.
    Created {
        /// The new session.
        session: Fingerprint,
        /// The client that created it.
        client_ip: Option<IpAddr>,
    },
    /// A user logged in. The session got a new ID (`session`); `previous` is the one it
    /// replaced, if the request carried a live session.
    LoggedIn {
        /// The new, authenticated session.
        session: Fingerprint,
        /// The session it replaced.
        previous: Option<Fingerprint>,
        /// Who logged in.
        user_id: String,
        /// Where from: the address the session is pinned to.
        client_ip: Option<IpAddr>,
    },
    /// The session ID was rotated without a login (privilege change).
    Rotated {
        /// The old ID, now dead.
        from: Fingerprint,
        /// The new ID.
        to: Fingerprint,
        /// The logged-in user, if any.
        user_id: Option<String>,
    },
    /// The session was ended on the server by logout.
    LoggedOut {
        /// The ended session.
        session: Fingerprint,
        /// The user who logged out, if any.
        user_id: Option<String>,
    },
    /// A request presented a session whose idle or absolute lifetime had run out; the
    /// session was deleted.
    Expired {
        /// The expired session.
        session: Fingerprint,
        /// Which lifetime ran out.
        kind: ExpiryKind,
        /// The logged-in user, if any.
        user_id: Option<String>,
    },
    /// A request presented a well-formed token that matches no live session (already ended,
    /// evicted, or forged). It was treated as "no session" and not adopted.
    UnknownToken {
        /// Fingerprint of the presented token's key.
        session: Fingerprint,
        /// The client that presented it.
        client_ip: Option<IpAddr>,
    },
    /// A session was ended by revocation: by its user ("log out my other devices"), by an
    /// administrator, or by the per-user session limit at another login.
    Revoked {
        /// The ended session.
        session: Fingerprint,
        /// Its user.
        user_id: String,
        /// `"user"`, `"admin"` or `"session_limit"`.
        reason: &'static str,
    },
    /// An authenticated session was used from an address its pin or the allowed ranges do
    /// not accept. The session was destroyed and the request refused.
    PinViolation {
        /// The destroyed session.
        session: Fingerprint,
        /// Its user.
        user_id: String,
        /// The pinned (login) address.
        expected: Option<IpAddr>,
        /// The address the request came from.
        actual: IpAddr,
        /// `"address_changed"` or `"outside_allowed_ranges"`.
        reason: &'static str,
    },
    /// The post-authentication policy denied a request. The session was destroyed and the
    /// request refused.
    PolicyDenied {
        /// The destroyed session.
        session: Fingerprint,
        /// Its user.
        user_id: String,
        /// The address the request came from.
        client_ip: IpAddr,
        /// The policy's reason.
        reason: String,
    },
    /// An authenticated request arrived without connection info, so the pin and policy could
    /// not run; it was refused (the session is kept: this is a server wiring problem).
    ClientIpUnknown {
        /// The session concerned (none for a login from a guest without a session).
        session: Option<Fingerprint>,
        /// How to provide connection info.
        error: &'static str,
    },
    /// The store failed; the layer answered 503 (or gRPC UNAVAILABLE) or skipped a touch.
    StoreFailed {
        /// The session concerned, if known.
        session: Option<Fingerprint>,
        /// The store's error message.
        error: String,
    },
    /// A write sent to the store got no answer (a command timeout, a connection lost while it
    /// was in flight): it **may have been applied**. The layer answered 503 (gRPC
    /// UNAVAILABLE) to a handler's write, or skipped a touch. A logout reported so may have
    /// ended the session, or not: monitoring should not count it as failed.
    WriteOutcomeUnknown {
        /// The session concerned.
        session: Option<Fingerprint>,
        /// `"write"`, `"create"`, `"login"`, `"rotate"`, `"logout"`, `"touch"` or `"delete"`.
        operation: &'static str,
        /// The store's error message.
        error: String,
    },
    /// Concurrent requests kept winning the compare-and-set race for this session, and a
    /// write gave up after its bounded attempts: the layer answered 429 with `Retry-After`
    /// (gRPC ABORTED). Not an outage: the store answered every attempt.
    Contention {
        /// The session written.
        session: Fingerprint,
        /// `"write"`, `"login"` or `"rotate"`.
        operation: &'static str,
        /// How many attempts were made.
        attempts: usize,
    },
    /// A new guest session was refused: the address is over its creation budget or cooling
    /// down after ID guessing (`"rate_limited"`), or the store has no room left that a guest
    /// may take (`"store_full"`). Aggregated like `Created`.
    GuestRefused {
        /// The client.
        client_ip: Option<IpAddr>,
        /// `"rate_limited"` or `"store_full"`.
        reason: &'static str,
    },
    /// One address presented more distinct unknown tokens within a window than the guessing
    /// threshold allows: someone is guessing session IDs. Emitted once per window and address.
    TokenGuessing {
        /// The address (its /64 for IPv6 is what is counted).
        client_ip: IpAddr,
        /// Distinct unknown tokens in the window so far.
        unknown_tokens: u32,
        /// The window, in seconds.
        window_secs: u64,
        /// How long the address is now refused (none when only detection is configured).
        cooldown_secs: Option<u64>,
    },
    /// A login was refused before any session was written: the address is outside the
    /// allowed ranges, or the post-authentication policy denies it (so the user gets a clear
    /// error instead of a session that is thrown out on its next request).
    LoginDenied {
        /// Who tried to log in.
        user_id: String,
        /// From where.
        client_ip: IpAddr,
        /// Why.
        reason: String,
    },
    /// A configuration that works but weakens a protection, reported once by `build()`.
    ConfigWarning {
        /// What to reconsider.
        message: String,
    },
    /// A browser registered a device key for a logged-in session (DBSC, feature `dbsc`):
    /// from now on every request of the session needs the short-lived bound cookie.
    DeviceRegistered {
        /// The bound session.
        session: Fingerprint,
        /// Its user.
        user_id: Option<String>,
        /// The key's algorithm (`"ES256"` or `"RS256"`).
        alg: &'static str,
    },
    /// The holder of a bound session's key renewed its bound cookie (DBSC).
    DeviceRefreshed {
        /// The session.
        session: Fingerprint,
        /// Its user.
        user_id: Option<String>,
    },
    /// A request of a device-bound session came without a valid, unexpired bound cookie. It
    /// was served as not authenticated; the session is kept (the real browser refreshes
    /// before it sends requests, so a bare session cookie is the sign of a copy).
    BoundCookieRefused {
        /// The session whose cookie was presented.
        session: Fingerprint,
        /// Its user.
        user_id: Option<String>,
        /// `"absent"`, `"invalid"` or `"expired"`.
        reason: &'static str,
    },
    /// A DBSC registration or refresh proof was refused. An invalid proof at refresh (a
    /// signature that does not verify with the registered key, a forbidden algorithm, a
    /// refresh carrying its own key) ends the session (`ended`); a stale or foreign
    /// challenge only gets a fresh one.
    DeviceProofRefused {
        /// The session concerned, if the request named a live one.
        session: Option<Fingerprint>,
        /// Its user.
        user_id: Option<String>,
        /// `"registration"` or `"refresh"`.
        endpoint: &'static str,
        /// Why (see `dbsc::jws::ProofError::reason` and
        /// `"already_bound"`, `"not_offered"`, `"no_session"`, `"challenge_expired"`).
        reason: &'static str,
        /// Whether the session was ended.
        ended: bool,
    },
    /// Events of one kind that were counted instead of emitted (see the module docs).
    Suppressed {
        /// Which kind (`"created"`, `"unknown_token"`, `"guest_refused"`, `"client_ip_unknown"`).
        kind: &'static str,
        /// How many were not emitted one by one.
        count: u64,
        /// The aggregation interval, in seconds.
        interval_secs: u64,
        /// The address of the last one counted.
        sample_client_ip: Option<IpAddr>,
        /// The session (or presented token) fingerprint of the last one counted.
        sample_session: Option<Fingerprint>,
    },
}

impl SessionEvent {
    /// A short, stable name for the event (`"logged_in"`, `"expired"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            SessionEvent::Created { .. } => "created",
            SessionEvent::LoggedIn { .. } => "logged_in",
            SessionEvent::Rotated { .. } => "rotated",
            SessionEvent::LoggedOut { .. } => "logged_out",
            SessionEvent::Expired { .. } => "expired",
            SessionEvent::UnknownToken { .. } => "unknown_token",
            SessionEvent::Revoked { .. } => "revoked",
            SessionEvent::PinViolation { .. } => "pin_violation",
            SessionEvent::PolicyDenied { .. } => "policy_denied",
            SessionEvent::ClientIpUnknown { .. } => "client_ip_unknown",
            SessionEvent::StoreFailed { .. } => "store_failed",
            SessionEvent::WriteOutcomeUnknown { .. } => "write_outcome_unknown",
            SessionEvent::Contention { .. } => "contention",
            SessionEvent::GuestRefused { .. } => "guest_refused",
            SessionEvent::TokenGuessing { .. } => "token_guessing",
            SessionEvent::LoginDenied { .. } => "login_denied",
            SessionEvent::ConfigWarning { .. } => "config_warning",
            SessionEvent::DeviceRegistered { .. } => "device_registered",
            SessionEvent::DeviceRefreshed { .. } => "device_refreshed",
            SessionEvent::BoundCookieRefused { .. } => "bound_cookie_refused",
            SessionEvent::DeviceProofRefused { .. } => "device_proof_refused",
            SessionEvent::Suppressed { .. } => "suppressed",
        }
    }
}

impl SessionEvent {
    /// The event for a failed store **write**: [`WriteOutcomeUnknown`] when the write may have
    /// been applied ([`StoreError::is_outcome_unknown`]), else [`StoreFailed`].
    ///
    /// [`WriteOutcomeUnknown`]: SessionEvent::WriteOutcomeUnknown
    /// [`StoreFailed`]: SessionEvent::StoreFailed
    pub(crate) fn store_error(
        session: Option<Fingerprint>,
        operation: &'static str,
        e: &StoreError,
    ) -> SessionEvent {
        if e.is_outcome_unknown() {
            SessionEvent::WriteOutcomeUnknown {
                session,
                operation,
                error: e.to_string(),
            }
        } else {
            SessionEvent::StoreFailed {
                session,
                error: e.to_string(),
            }
        }
    }
}

impl fmt::Display for SessionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // JSON keeps every field, with fingerprints only; serialising this enum cannot fail.
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => f.write_str(self.kind()),
        }
    }
}

/// Receives every [`SessionEvent`]. Implemented for any `Fn(&SessionEvent)`.
///
/// It is called inline on the request path, so it should be quick (push to a channel, bump a
/// counter).
pub trait EventSink: Send + Sync + 'static {
    /// Called once per event.
    fn on_event(&self, event: &SessionEvent);
}

impl<F> EventSink for F
where
    F: Fn(&SessionEvent) + Send + Sync + 'static,
{
    fn on_event(&self, event: &SessionEvent) {
        self(event)
    }
}

/// The kinds an anonymous client can cause at will, and the wiring error that would repeat on
/// every request, aggregated per interval.
const NOISY: [&str; 4] = [
    "created",
    "unknown_token",
    "guest_refused",
    "client_ip_unknown",
];

#[derive(Default)]
struct Slot {
    since: Option<SystemTime>,
    count: u64,
    sample: (Option<IpAddr>, Option<Fingerprint>),
}

/// Sends events to `tracing` and the sink, aggregating the noisy kinds.
pub(crate) struct Emitter {
    sink: Option<Arc<dyn EventSink>>,
    interval: Duration,
    slots: [Mutex<Slot>; NOISY.len()],
}

impl fmt::Debug for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("sink", &self.sink.is_some())
            .field("interval", &self.interval)
            .finish()
    }
}

impl Emitter {
    pub(crate) fn new(sink: Option<Arc<dyn EventSink>>, interval: Duration) -> Self {
        Emitter {
            sink,
            interval,
            slots: Default::default(),
        }
    }

    /// Emits `event`, or counts it if its kind already had a sample this interval. `now`
    /// is asked only for the noisy kinds.
    pub(crate) fn emit(&self, event: SessionEvent, now: impl FnOnce() -> SystemTime) {
        let kind = event.kind();
        let Some(i) = NOISY.iter().position(|k| *k == kind) else {
            return emit(self.sink.as_deref(), event);
        };
        if self.interval.is_zero() {
            return emit(self.sink.as_deref(), event);
        }
        let now = now();
        let mut slot = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        let fresh = slot.since.is_none_or(|since| {
            now.duration_since(since)
                .map_or(true, |d| d >= self.interval)
        });
        if !fresh {
            slot.count += 1;
            slot.sample = event.sample();
            return;
        }
        let summary = (slot.count > 0).then(|| SessionEvent::Suppressed {
            kind,
            count: slot.count,
            interval_secs: self.interval.as_secs(),
            sample_client_ip: slot.sample.0,
            sample_session: slot.sample.1,
        });
        *slot = Slot {
            since: Some(now),
            ..Slot::default()
        };
        drop(slot);
        if let Some(summary) = summary {
            emit(self.sink.as_deref(), summary);
        }
        emit(self.sink.as_deref(), event);
    }
}

impl SessionEvent {
    /// The address and fingerprint a `Suppressed` summary keeps as its sample.
    fn sample(&self) -> (Option<IpAddr>, Option<Fingerprint>) {
        match self {
            SessionEvent::Created { session, client_ip }
            | SessionEvent::UnknownToken { session, client_ip } => (*client_ip, Some(*session)),
            SessionEvent::GuestRefused { client_ip, .. } => (*client_ip, None),
            SessionEvent::ClientIpUnknown { session, .. } => (None, *session),
            _ => (None, None),
        }
    }
}

fn emit(sink: Option<&dyn EventSink>, event: SessionEvent) {
    match &event {
        SessionEvent::PinViolation { .. }
        | SessionEvent::PolicyDenied { .. }
        | SessionEvent::TokenGuessing { .. }
        | SessionEvent::LoginDenied { .. }
        | SessionEvent::BoundCookieRefused { .. }
        | SessionEvent::DeviceProofRefused { .. }
        | SessionEvent::ConfigWarning { .. }
        | SessionEvent::Contention { .. } => {
            tracing::warn!(target: "tower_session_guard::event", "{event}")
        }
        SessionEvent::StoreFailed { .. }
        | SessionEvent::WriteOutcomeUnknown { .. }
        | SessionEvent::ClientIpUnknown { .. } => {
            tracing::error!(target: "tower_session_guard::event", "{event}")
        }
        _ => tracing::info!(target: "tower_session_guard::event", "{event}"),
    }
    if let Some(sink) = sink {
        sink.on_event(&event);
    }
}
