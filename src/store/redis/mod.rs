//! The Redis store (feature `redis`): the design is documented on [`RedisStore`], which
//! applications name at the crate root.

mod builder; // RedisStoreBuilder: configuration, fred's settings, connecting
mod codec; // the record blob (format byte + MessagePack)
mod error; // RedisStoreError
mod names; // key names, the channel, the instance id
mod ops; // the operations: load and the scripted writes
mod scripts; // the Lua scripts, their typed arguments, loading
mod session_store; // impl SessionStore for RedisStore
mod shared; // StoreShared: what every clone of a RedisStore shares
#[cfg(test)]
mod tests; // unit tests of the pure parts
mod watch; // connection events and invalidation messages

use std::fmt;
use std::sync::Arc;

pub use builder::RedisStoreBuilder;
// The fuzz targets' entry points (src/fuzz.rs, `--cfg fuzzing` only) call these.
pub use crate::store::near_cache::NearCacheStats;
#[cfg(fuzzing)]
pub(crate) use codec::{decode, encode, parse_hex_key};
pub use error::RedisStoreError;

use super::StoreError;
use builder::Target;
use shared::StoreShared;

/// Sessions in Redis (single node or Redis Cluster, through [fred](https://docs.rs/fred)),
/// behind a bounded moka near-cache that invalidation messages keep coherent across
/// instances. Feature `redis`.
///
/// # Layout in Redis
///
/// With the default prefix `{tsg}:`:
///
/// | key | type | what |
/// | --- | --- | --- |
/// | `{tsg}:s:<key hex>` | hash | one session: `v` (version, decimal), `d` (the record blob), `c` (creation, ms since the epoch), `u` (user id, authenticated sessions only) |
/// | `{tsg}:s:<key hex>` (rotated away) | hash | a forwarding entry: only `f`, the name of the key the session moved to, for [`FORWARD_TTL`] |
/// | `{tsg}:u:<user id>` | sorted set | the user's sessions: members are full record key names, scores are each record's expiry deadline (Redis time, ms) |
/// | `{tsg}:guests` | sorted set | the guest sessions (no `u`), scored like an index: the guest budget |
/// | `{tsg}:inval` | pub/sub channel | invalidation messages `"<instance id>:<key hex>"` |
///
/// Keys are SHA-256 hashes of the tokens, so a dump of Redis holds no usable token. Every
/// record expires with Redis's own TTL (`PEXPIRE` of the layer's `ttl` on every write: the
/// earlier of its idle and absolute deadlines, plus a short retention).
///
/// **The blob** is one format byte (`1`) followed by the [`SessionRecord`] as MessagePack with
/// named fields. Fields can be added without a format change (records carry their names, and
/// new fields have serde defaults); a change that old code could not read gets a new format
/// byte. A record with an unknown format byte or one that does not decode is a
/// [`StoreError`] (the layer answers 503): the store fails closed, it never guesses.
///
/// **Redis Cluster.** The braces in the prefix are a hash tag: every key of the store hashes
/// to the same slot, which is what makes the multi-key Lua scripts legal on a cluster (the
/// scripts also derive index key names from the prefix, which is allowed because they share
/// that slot). The trade-off: a cluster gives this store failover (a replica takes over the
/// slot), not sharding: all sessions live on one primary. Size that primary for the peak of
/// live sessions; one Redis primary holds millions of them. A prefix without a non-empty
/// `{...}` tag is refused for a cluster.
///
/// Needs Redis 6.2 or later (`ZADD GT`); tested with Redis 7.0.
///
/// # Atomicity and round trips
///
/// Every write is one Lua script, so one round trip and atomic: `create` refuses an existing
/// key; `update` is compare-and-set on `v`; `rotate` checks the old version and the absence
/// of the new key, writes the new record and leaves the old key forwarding to it (see below);
/// `login` does all of that plus the per-user index and the session limit. Scripts are loaded
/// once (`SCRIPT LOAD`) and called with `EVALSHA`; after a Redis restart (`NOSCRIPT`) the
/// store falls back to `EVAL`, which costs that one call a second round trip and caches the
/// script again.
///
/// | operation | round trips |
/// | --- | --- |
/// | `load`, near-cache hit | 0 |
/// | `load`, near-cache miss | 1 (`HGET`) |
/// | `create`, `update`, `rotate`, `delete`, `login` | 1 (`EVALSHA`) |
/// | `user_sessions` | 1 (`EVALSHA`) |
///
/// So a login costs at most two round trips: the load of the guest session it replaces (0
/// on a near-cache hit) and the login script.
///
/// # The per-user index, and why its scores are expiry deadlines
///
/// A user's sorted set holds the full key names of their sessions. The scripts maintain it:
/// `create`, `rotate` and `login` of a record with an identity add the new key; `rotate`,
/// `login`, `delete` and evictions remove the old one (the record's `u` field tells a script
/// which index to edit, so `delete` needs no user id). Each member's score is **its record's
/// expiry deadline in Redis's own clock** (`TIME` + `ttl`), raised with `ZADD GT` by every
/// write of the record, touches included.
///
/// A fixed score (the absolute deadline, `created_at` + absolute lifetime) would be tempting
/// because it never changes, but the store only gets `ttl`: at login `now + ttl` is the *idle*
/// deadline, and every touch then extends the record beyond it, so pruning by that score
/// would drop live sessions from the index and an administrator's "revoke all" would miss
/// them. Configuring the absolute lifetime on the store too would duplicate the layer's
/// setting (a mismatch again drops live sessions silently) and would mix the application's
/// clock with Redis's. A deadline in Redis time that follows the record's own `PEXPIRE`
/// needs no extra setting, is never earlier than the record's expiry (no live session is
/// ever pruned) and never much later (the entry is bounded by the record). Scripts that touch
/// an index drop entries whose deadline has passed (`ZREMRANGEBYSCORE -inf now`) and, among
/// the 64 entries with the earliest deadlines, entries whose record no longer exists, and set
/// the index key's expiry to its highest score, so the index never outlives its last session.
///
/// **Bounded work.** A script blocks every client of Redis while it runs, so no script reads
/// a whole index: `login` counts the user's sessions with `ZCARD` (exact, because the scripts
/// remove the entries of the records they end and expired entries go by score; only records
/// deleted behind the store's back, by an eviction policy or by hand, leave stale entries,
/// and every script that reads an index drops those it meets), checks the 64 entries with the
/// earliest deadlines, and picks the victims of `EvictOldest` among them, by creation time
/// (`c`), like the [`MemoryStore`](crate::MemoryStore). Under the per-user limit the window
/// holds the whole index, so the oldest sessions go; an index far over the limit (a limit
/// lowered since its sessions logged in) shrinks by up to 64 per login. `user_sessions(user,
/// limit)` examines at most `limit` + 64 entries and returns at most `limit` sessions (all of
/// them under the per-user limit). Measured in `tests/redis.rs` with 5 000 live sessions of
/// one user: a login examined 65 entries in 0.6 ms instead of 10 003 in 39 ms, a list of 20
/// examined 20 in 0.13 ms instead of 10 002 in 21 ms.
///
/// # Guests and memory
///
/// Guest sessions (no user) are the only ones anybody can create without credentials, so the
/// store bounds them: `{tsg}:guests` lists them, scored by their records' deadlines (raised
/// by every write, like index entries), and a guest `create` first drops the entries whose
/// deadline has passed, then, when the set holds
/// [`guest_capacity`](RedisStoreBuilder::guest_capacity) guests (default
/// [`RedisStoreBuilder::DEFAULT_GUEST_CAPACITY`]), evicts the guests with the earliest deadlines (the least
/// recently active): record, entry and invalidation message, at most 8 per call, so the
/// script's work stays O(log n). A guest that logs in, rotates or is deleted leaves the set
/// (a rotated one is replaced by its new key). A logged-in session is never evicted to make
/// room for a guest. A guest's record, and its entry, expire with the ttl the layer gives it,
/// that is its guest idle lifetime: the store has no setting of its own for it.
///
/// Redis checks `maxmemory` (under `noeviction`) only at the first write of a script, and
/// only for commands that may grow memory; the first write of most scripts here is a `DEL`
/// or a `ZREM`, which it does not check, and once a script has written, its later writes go
/// through. So the scripts that add a session (`create`, `login`) first send a `ZADD XX`
/// that changes nothing but is checked: on a full Redis a new guest is then refused with
/// [`StoreError::full`] (the layer answers 503 with `Retry-After`) and a login with a plain
/// [`StoreError`], instead of growing Redis past its limit, while writes to existing
/// sessions (touches, rotations) and deletes (logouts, revocations) keep working. See the
/// README for `maxmemory` and `maxmemory-policy`.
///
/// # Forwarding after rotation
///
/// `rotate` and `login` leave the old key as a forwarding entry to the new one for
/// [`FORWARD_TTL`] (60 s): a hash with only `f`, the new key's name. Loading it finds no
/// record (`Ok(None)`, never cached), and `create`, `update`, `rotate` and `login` on it
/// conflict. `delete` of it removes it and follows `f` (at most [`MAX_FORWARD_HOPS`] hops),
/// removing every key on the way and the live record it reaches, with its index entry and an
/// invalidation message for each, and answers whether a live record was removed. So a logout
/// or a revocation that read the session just before a rotation on another instance still
/// ends it, instead of answering success while the rotated session lives on.
///
/// # The near-cache and its coherence
///
/// Loads are served from a bounded moka cache (default 100 000 entries, 5 s TTL). Every write
/// by this instance updates or invalidates its own entries, and every script that changes or
/// removes an existing record publishes `"<instance id>:<key hex>"` on `{prefix}inval` in the
/// same script (so it costs no round trip). Each store runs a subscriber connection that
/// drops the entries named by other instances' messages (and ignores its own), so a logout,
/// revocation, eviction or rotation on one instance is refused on the others as soon as the
/// message arrives: one pub/sub hop. Measured in `tests/redis.rs` on loopback, from the
/// logout response on one instance to the refusal on the other: about 0.3 ms median and at
/// most about 10 ms; most of the time the very next request is already refused.
///
/// Reads on another instance are therefore coherent within that delay; writes do not depend
/// on it at all: they are compare-and-set in Redis, and a conflict drops the local entry, so
/// the layer's retry reads the fresh record.
///
/// The near-cache is used only while both connections are up and the subscription is in
/// place. When either connection drops, the whole near-cache is cleared and bypassed (from
/// the moment fred reports the drop, normally within a millisecond), so nothing revoked
/// during an outage is served from memory; it is cleared again once the subscription is
/// re-established (messages may have been lost meanwhile), and whenever the subscriber falls
/// behind. A fill from Redis that races with an invalidation of the same key is discarded.
/// If a message is lost some other way (a network partition that neither side notices), a
/// stale entry lives at most the near-cache TTL.
///
/// # Outages
///
/// fred reconnects by itself (exponential backoff, at most
/// [`reconnect_max_delay`](RedisStoreBuilder::reconnect_max_delay) between attempts, forever).
/// Commands are sent fail-fast: from the moment fred reports the connection lost until it is
/// back they fail at once (the store checks its own flag, set by fred's connection events,
/// because fred alone would queue commands during its first backoff delay), and against a
/// server that does not answer they time out after
/// [`command_timeout`](RedisStoreBuilder::command_timeout) (default 300 ms); a connection
/// that stops answering is dropped and re-established. Either way the layer gets a
/// [`StoreError`] and answers 503 (gRPC 14) to requests that carry a session, while requests
/// without a session never reach the store. Writes are never retried by the client (a
/// retried compare-and-set could apply twice); the layer decides. Sessions revoked before
/// an outage stay revoked after it: revocation deletes the record in Redis, and the
/// near-cache starts empty after every reconnection.
///
/// # What is tested
///
/// `tests/redis.rs` runs against a real Redis (`REDIS_URL`): the store contract, two layers
/// with their own stores sharing one Redis (cross-instance logout, revocation and session
/// limits, with the invalidation delay measured), round trips counted with `MONITOR` on a
/// private server (the commands clients send, not those the scripts run), and an outage (a
/// private `redis-server` killed and restarted); the guest budget (eviction order, both
/// instances' near-caches, never a user, bytes per guest measured), the work of `login` and
/// `user_sessions` on an index of 5 000 entries (reads counted with `INFO commandstats` on a
/// private server), forwarding across instances, and a private server at `maxmemory`. With
/// `REDIS_CLUSTER_TEST=1` it also builds a three-node cluster on loopback ports (`redis-cli
/// --cluster create`) and runs the contract and a cross-instance logout against it through a
/// `redis-cluster://` URL.
///
/// [`FORWARD_TTL`]: super::FORWARD_TTL
/// [`MAX_FORWARD_HOPS`]: super::MAX_FORWARD_HOPS
/// [`SessionRecord`]: crate::SessionRecord
///
/// Cheap to clone; clones share connections and near-cache.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_session_guard::{RedisStore, SessionGuardLayer};
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .prefix("{myapp}:")
///     .build()
///     .await?;
/// let layer = SessionGuardLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<StoreShared>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.shared.names.prefix())
            .field("instance", &self.shared.names.instance())
            .field("near_cache", &self.near_cache_stats())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects with every default: `redis://host:port[/db]` for one node,
    /// `redis-cluster://host:port,host:port` for a cluster (credentials as usual in the URL).
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::build`].
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        Self::builder(url).build().await
    }

    /// Starts a configuration for `url` (see [`connect`](Self::connect) for the forms).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Url(url.into()))
    }

    /// The near-cache counters since the store was built.
    pub fn near_cache_stats(&self) -> NearCacheStats {
        self.shared.near.stats()
    }

    /// Whether loads may be served from the near-cache right now: both connections are up
    /// and the invalidation channel is subscribed.
    pub fn near_cache_active(&self) -> bool {
        self.shared.near.enabled() && self.shared.coherent()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.shared.names.prefix()
    }

    /// This store's instance id, as its invalidation messages carry it.
    pub fn instance_id(&self) -> &str {
        self.shared.names.instance()
    }
}
