//! What can go wrong, and how it reaches the layer (inside a [`StoreError`]).

use std::error::Error as StdError;

use fred::error::Error as FredError;

use crate::store::StoreError;

/// What can go wrong in the [`RedisStore`]. The store returns it inside a [`StoreError`]
/// (see [`StoreError`]'s `source`), and [`RedisStoreBuilder::build`] for configuration and
/// connection problems.
///
/// [`RedisStore`]: super::RedisStore
/// [`RedisStoreBuilder::build`]: super::RedisStoreBuilder::build
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The configuration is not usable (a malformed URL, a prefix without a hash tag on a
    /// cluster, ...).
    #[error("invalid Redis store configuration: {0}")]
    Config(String),
    /// Redis could not be reached, or answered with an error.
    #[error("redis: {0}")]
    Redis(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// A write was sent to Redis and its answer did not come back: the command timed out
    /// ([`command_timeout`](super::RedisStoreBuilder::command_timeout)), or the connection
    /// was lost while it was in flight. **It may have been applied** (a logout sent while
    /// Redis was paused with `CLIENT PAUSE WRITE` is applied when the pause ends). The store
    /// returns it as [`StoreError::outcome_unknown`]: the layer answers 503 like any store
    /// error and emits [`SessionEvent::WriteOutcomeUnknown`](crate::SessionEvent::WriteOutcomeUnknown).
    #[error("redis write, outcome unknown: {0}")]
    OutcomeUnknown(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// A record was written in a format this version does not know (by a newer version,
    /// or not by this crate at all). The session is refused, not guessed at.
    #[error("session record has unknown format {0}")]
    UnknownFormat(u8),
    /// A record is empty or does not decode.
    #[error("session record could not be decoded: {0}")]
    Decode(String),
    /// A record could not be encoded.
    #[error("session record could not be encoded: {0}")]
    Encode(String),
    /// Redis answered something the store did not expect.
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// Redis refused a new guest session for lack of memory (`maxmemory` reached under
    /// `noeviction`). The store returns it as [`StoreError::full`], which the layer answers
    /// with 503 and `Retry-After`.
    #[error("no room in Redis for a new guest session: {0}")]
    Full(#[source] Box<dyn StdError + Send + Sync + 'static>),
}

impl From<FredError> for RedisStoreError {
    fn from(e: FredError) -> Self {
        RedisStoreError::Redis(Box::new(e))
    }
}

impl From<RedisStoreError> for StoreError {
    fn from(e: RedisStoreError) -> Self {
        match e {
            RedisStoreError::Full(_) => StoreError::full(e),
            RedisStoreError::OutcomeUnknown(_) => StoreError::outcome_unknown(e),
            e => StoreError::new(e),
        }
    }
}

impl RedisStoreError {
    /// For a write: whether `e` means the command may have reached Redis without its answer
    /// coming back (a timeout, a connection closed or cancelled while it was pending), so
    /// that it may have been applied. Redis's own error replies (a script error, `OOM`,
    /// `NOSCRIPT`) mean it was not.
    pub(super) fn from_write(e: FredError) -> Self {
        use fred::error::ErrorKind;
        match e.kind() {
            ErrorKind::Timeout | ErrorKind::IO | ErrorKind::Canceled => {
                RedisStoreError::OutcomeUnknown(Box::new(e))
            }
            _ => RedisStoreError::Redis(Box::new(e)),
        }
    }

    /// Whether Redis refused a write for lack of memory (`OOM command not allowed ...`).
    pub(super) fn is_oom(&self) -> bool {
        match self {
            RedisStoreError::Redis(e) => e
                .downcast_ref::<FredError>()
                .is_some_and(|e| e.details().starts_with("OOM")),
            _ => false,
        }
    }
}
