//! What can go wrong with a session operation.

use std::time::Duration;

use crate::store::StoreError;

/// What went wrong with a session operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session was logged out, revoked, rotated away or expired (possibly by a
    /// concurrent request); the write was not applied and the session stays ended.
    #[error("the session has ended")]
    Ended,
    /// The store failed. **A failed write may have been applied**: when the store sent it and
    /// got no answer (see [`StoreError::is_outcome_unknown`]) the layer emits
    /// [`SessionEvent::WriteOutcomeUnknown`](crate::SessionEvent::WriteOutcomeUnknown); a
    /// logout answered 503 may have ended the session. Writes are compare-and-set, so a retry
    /// cannot apply twice.
    #[error(transparent)]
    Store(StoreError),
    /// A value could not be converted to or from JSON.
    #[error("session value {key:?} could not be (de)serialized: {source}")]
    Value {
        /// The value's name.
        key: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The user already holds the most sessions allowed, and the limit policy is
    /// [`LimitPolicy::RejectNew`](crate::LimitPolicy::RejectNew). With feature `axum` this
    /// answers 409 Conflict.
    #[error("too many sessions for this user (limit {limit}); log out elsewhere first")]
    TooManySessions {
        /// The configured limit.
        limit: usize,
    },
    /// Too many concurrent writers kept winning the race for this session (after the bounded
    /// compare-and-set attempts). Answered like [`Rejection::Contention`](crate::Rejection::Contention):
    /// 429 with `Retry-After` (feature `axum`), gRPC `ABORTED` (feature `tonic`); the
    /// layer emits [`SessionEvent::Contention`](crate::SessionEvent::Contention).
    #[error("too many concurrent writes to this session")]
    Contention,
    /// `login` needs the client address to pin the session, and the request has no
    /// connection info. A server wiring problem: see [`PeerAddr`](crate::PeerAddr).
    #[error("{}", crate::client_ip::HOW_TO_PROVIDE_PEER)]
    ClientIpUnknown,
    /// `login` needs the client address, and the request came through a trusted proxy whose
    /// forwarding header does not name one (missing, malformed, or only trusted hops). The
    /// layer never falls back to the proxy's own address. With feature `axum` this answers
    /// 400.
    #[error("the client address cannot be verified: the trusted proxy's forwarding header does not name a client")]
    ClientIpUnverifiable,
    /// The login was refused before anything was written: the address is outside the
    /// allowed ranges, or the post-authentication policy denies this identity from here.
    /// With feature `axum` this answers 403.
    #[error("login refused: {reason}")]
    LoginDenied {
        /// Why (also in the `LoginDenied` event).
        reason: String,
    },
    /// This address has created too many guest sessions recently (or is cooling down after
    /// guessing session IDs). With feature `axum` this answers 429 with `Retry-After`.
    #[error("too many new sessions from this address; retry in {} s", retry_after.as_secs())]
    RateLimited {
        /// When the address may try again.
        retry_after: Duration,
    },
    /// The operation needs a logged-in session.
    #[error("no user is logged in on this session")]
    NotAuthenticated,
    /// The store has no room for a new guest session: its guest budget is spent and every
    /// other slot holds a logged-in user, whom a guest never displaces. With feature `axum`
    /// this answers 503 with `Retry-After`.
    #[error("no room for a new guest session; try again later")]
    StoreFull,
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        if e.is_full() {
            SessionError::StoreFull
        } else {
            SessionError::Store(e)
        }
    }
}
