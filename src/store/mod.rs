//! Where sessions live: the [`SessionStore`] trait, the embedded [`MemoryStore`](crate::MemoryStore), and the
//! shared stores for applications that run on several instances: `RedisStore` (feature
//! `redis`) and `PostgresStore` (feature `postgres`).
//!
//! The trait is small (seven operations: five for one session, `login` and `user_sessions`
//! for the per-user index) but every write is conditional, so that the layer's invariants
//! hold for a remote store shared by many instances too:
//!
//! * `create` refuses a key that exists (no collision ever overwrites a live session);
//! * `update` is compare-and-set on [`SessionRecord::version`], so a stale writer can neither
//!   overwrite a newer record nor bring back a deleted one (there is nothing to compare with);
//! * `rotate` makes the new record appear before the old one disappears, and only if the old
//!   one is still at the expected version. Between the two steps the new key is known to no
//!   client, so at no instant can a client use neither or both;
//! * `delete` is final: keys are random, so nothing can recreate a deleted key;
//! * `login` does `rotate` (or `create`) together with the user's index and session limit,
//!   atomically with respect to the user's other logins.
//!
//! Stores see only [`SessionKey`]s (SHA-256 of tokens), never tokens.

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod contract;
// The stores themselves are exported at the crate root (applications name them there);
// `pub(crate)` also for the fuzz targets' entry points (src/fuzz.rs, `--cfg fuzzing` only),
// which reach `memory::compact`.
pub(crate) mod memory;
// The record blob the remote stores write (format byte + MessagePack).
#[cfg(any(feature = "redis", feature = "postgres"))]
mod blob;
// The coherent moka near-cache in front of the remote stores.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) mod near_cache;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use crate::id::{RouteTag, SessionKey};
use crate::record::SessionRecord;
// Shared with the stores; applications name it at the crate root.
pub(crate) use crate::limit::LimitPolicy;
pub use crate::limit::SessionLimit;

/// Whether a conditional write took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum WriteOutcome {
    /// The write took effect.
    Applied,
    /// The condition did not hold: the key exists (create), the record is gone or at another
    /// version (update, rotate), or the new key is taken (rotate). Nothing was changed.
    Conflict,
}

/// The outcome of [`SessionStore::login`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum LoginOutcome {
    /// The session is logged in under the new key; these other sessions of the user were
    /// ended to respect the limit.
    Applied {
        /// Keys of the sessions ended by [`LimitPolicy::EvictOldest`].
        evicted: Vec<SessionKey>,
    },
    /// `old` changed or ended meanwhile, or `new` is taken; nothing changed.
    Conflict,
    /// [`LimitPolicy::RejectNew`] and the user is at the limit; nothing changed.
    LimitReached,
}

/// A store could not be reached or answered nonsense, or (see [`StoreError::full`]) has no
/// room for a new guest session. The layer fails closed on it.
///
/// **A failed write may have been applied.** When a write's request reached the store but
/// its answer did not come back (a command timeout, a connection lost mid-flight), the store
/// cannot know whether it ran: a logout answered 503 under `CLIENT PAUSE WRITE` was applied
/// when the pause ended. Such an error is [`StoreError::outcome_unknown`], and the layer
/// reports it with [`SessionEvent::WriteOutcomeUnknown`](crate::SessionEvent::WriteOutcomeUnknown),
/// not [`StoreFailed`](crate::SessionEvent::StoreFailed). Every write is a compare-and-set or
/// a delete, so a client that retries one after a 503 cannot apply it twice: it gets the
/// state the first attempt left.
#[derive(Debug)]
pub struct StoreError {
    source: Box<dyn StdError + Send + Sync + 'static>,
    full: bool,
    outcome_unknown: bool,
}

impl StoreError {
    /// Wraps the underlying error.
    pub fn new(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        StoreError {
            source: source.into(),
            full: false,
            outcome_unknown: false,
        }
    }

    /// A write was sent but its answer never came (a timeout, a connection lost while it was
    /// in flight): it may or may not have been applied. Stores return it for writes only; a
    /// write refused before it was sent (the connection known down) is [`StoreError::new`].
    pub fn outcome_unknown(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        StoreError {
            source: source.into(),
            full: false,
            outcome_unknown: true,
        }
    }

    /// Whether this is [`StoreError::outcome_unknown`]: a write that may have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// The store refuses a new **guest** session because its guest budget is spent and every
    /// other slot holds an authenticated session, which a guest must never displace. The
    /// layer turns it into [`SessionError::StoreFull`](crate::SessionError::StoreFull)
    /// (503 with `Retry-After`), not into an outage.
    pub fn full(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        StoreError {
            source: source.into(),
            full: true,
            outcome_unknown: false,
        }
    }

    /// Whether this is [`StoreError::full`].
    pub fn is_full(&self) -> bool {
        self.full
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session store error: {}", self.source)
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// How long a rotated-away key keeps forwarding to its successor (see [`SessionStore`]):
/// long enough to cover every request that was in flight when the rotation happened.
pub const FORWARD_TTL: Duration = Duration::from_secs(60);
/// How many forwarding hops `delete` follows at most (rotations within [`FORWARD_TTL`]).
pub const MAX_FORWARD_HOPS: usize = 8;

/// Storage for session records, keyed by [`SessionKey`].
///
/// `ttl` on writes is how long the record stays valid from now (the earlier of its idle and
/// absolute deadlines, computed by the layer from its clock); a store should drop the record
/// after it, but the layer checks expiry itself on every load, so a late drop is harmless.
///
/// **Per-user index.** A store keeps, per user id, the keys of that user's sessions:
/// `create`, `rotate` and `login` of a record with an identity add the new key; `rotate`,
/// `login` and `delete` (and expiry) remove the old one. `update` never changes a record's
/// identity: the layer changes identities only through `rotate` and `login`.
///
/// **Routing.** A store that places sessions by a [`RouteTag`] carried in the token (a Redis
/// Cluster: one hash slot per tag) answers [`guest_route`](Self::guest_route) and
/// [`user_route`](Self::user_route); the layer then puts that tag in front of the tokens it
/// issues, and hands it back in [`SessionKey::route`]. `rotate` keeps the key's tag (the
/// new key has the old one's), `login` gives the user's. The defaults answer `None`: tokens
/// without tags, as before.
pub trait SessionStore: Send + Sync + 'static {
    /// The tag for a new guest session's token, or `None` (the default) for no tag.
    fn guest_route(&self) -> Option<RouteTag> {
        None
    }

    /// The tag for a new token of `user_id`'s session (login), or `None` (the default). A
    /// store that keeps a user's sessions together (its index, its session limit) answers the
    /// same tag for every login of a user.
    fn user_route(&self, user_id: &str) -> Option<RouteTag> {
        let _ = user_id;
        None
    }

    /// Answers a read without waiting, if the store can: from memory, or from a near-cache.
    /// `None` means "ask [`load`](Self::load)"; that is the default.
    ///
    /// The layer asks this first on every request with a token. When it answers, the request
    /// takes the layer's synchronous path: no async step and no allocation of a future, which
    /// is most of the layer's own cost. It must never block (no locks held across I/O, no
    /// network), and what it returns must be what `load` would return at the same instant.
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>> {
        let _ = key;
        None
    }

    /// Reads a record.
    fn load(
        &self,
        key: SessionKey,
    ) -> impl Future<Output = Result<Option<Arc<SessionRecord>>, StoreError>> + Send;

    /// Inserts a record under a key that must not exist yet.
    fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Replaces the record only if the stored one exists and has version `expected`.
    fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Moves a session to a new key: `record` appears under `new` and `old` disappears, only
    /// if `old` exists at version `expected` and `new` does not exist.
    fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Removes a record, and what it forwards to if it was rotated away within
    /// [`FORWARD_TTL`]. Returns whether a live record was removed.
    fn delete(&self, key: SessionKey) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Logs a session in, atomically with respect to other logins of the same user:
    /// `record` (which has an identity) appears under `new`; `old`, if given, disappears if it
    /// is still at the expected version; `new` joins the user's index; and the user's live
    /// sessions are held to `limit`.
    fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> impl Future<Output = Result<LoginOutcome, StoreError>> + Send;

    /// At most `limit` live sessions of a user (oldest first), from the per-user index. Index
    /// entries of sessions that ended or expired are dropped, so the index does not grow
    /// without bound. The work is bounded by the index's size, which the per-user session
    /// limit bounds.
    fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError>> + Send;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe view of [`SessionStore`], implemented for every store: the layer holds
/// its store as `Box<dyn DynStore>` (so the layer's type does not name the store) and the
/// `Session` handle reaches it through the core. `load_now` stays synchronous; the other
/// operations box the store's futures, which only the asynchronous path awaits.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn guest_route(&self) -> Option<RouteTag>;
    fn user_route(&self, user_id: &str) -> Option<RouteTag>;
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>>;
    fn load(
        &self,
        key: SessionKey,
    ) -> BoxFuture<'_, Result<Option<Arc<SessionRecord>>, StoreError>>;
    fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<WriteOutcome, StoreError>>;
    fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<WriteOutcome, StoreError>>;
    fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<WriteOutcome, StoreError>>;
    fn delete(&self, key: SessionKey) -> BoxFuture<'_, Result<bool, StoreError>>;
    fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> BoxFuture<'_, Result<LoginOutcome, StoreError>>;
    #[allow(clippy::type_complexity)]
    fn user_sessions<'a>(
        &'a self,
        user_id: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError>>;
}

impl<T: SessionStore> DynStore for T {
    fn guest_route(&self) -> Option<RouteTag> {
        SessionStore::guest_route(self)
    }
    fn user_route(&self, user_id: &str) -> Option<RouteTag> {
        SessionStore::user_route(self, user_id)
    }
    #[inline]
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>> {
        SessionStore::load_now(self, key)
    }
    fn load(
        &self,
        key: SessionKey,
    ) -> BoxFuture<'_, Result<Option<Arc<SessionRecord>>, StoreError>> {
        Box::pin(SessionStore::load(self, key))
    }
    fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(SessionStore::create(self, key, record, ttl))
    }
    fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(SessionStore::update(self, key, expected, record, ttl))
    }
    fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(SessionStore::rotate(self, old, expected, new, record, ttl))
    }
    fn delete(&self, key: SessionKey) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(SessionStore::delete(self, key))
    }
    fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> BoxFuture<'_, Result<LoginOutcome, StoreError>> {
        Box::pin(SessionStore::login(self, old, new, record, ttl, limit))
    }
    fn user_sessions<'a>(
        &'a self,
        user_id: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError>> {
        Box::pin(SessionStore::user_sessions(self, user_id, limit))
    }
}
