//! Audit events: what happened to which session, for monitoring.
//!
//! Every event goes to `tracing` (target `tower_session_guard::event`) and, if one is
//! configured, to a user [`EventSink`]. Events name sessions by [`Fingerprint`] only: a raw
//! token never appears in an event or a log line.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::id::Fingerprint;
use crate::record::ExpiryKind;

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionEvent {
    /// A guest session was created because the handler wrote to it.
    Created {
        /// The new session.
        session: Fingerprint,
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

pub(crate) fn emit(sink: Option<&dyn EventSink>, event: SessionEvent) {
    match &event {
        SessionEvent::PinViolation { .. } | SessionEvent::PolicyDenied { .. } => {
            tracing::warn!(target: "tower_session_guard::event", "{event}")
        }
        SessionEvent::StoreFailed { .. } | SessionEvent::ClientIpUnknown { .. } => {
            tracing::error!(target: "tower_session_guard::event", "{event}")
        }
        _ => tracing::info!(target: "tower_session_guard::event", "{event}"),
    }
    if let Some(sink) = sink {
        sink.on_event(&event);
    }
}
