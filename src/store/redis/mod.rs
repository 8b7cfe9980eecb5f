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
/// With the default prefix `{tsg}:`, every name is a *base* and a suffix. The base is
/// `{tsg.<tag>}:` for a token that carries a [`RouteTag`](crate::store::RouteTag) `<tag>`
/// (every token the layer issues on this store), and `{tsg}:` for a token without one (those
/// issued before tags; see "Redis Cluster" below):
///
/// | key | type | what |
/// | --- | --- | --- |
/// | `<base>s:<key hex>` | hash | one session: `v` (version, decimal), `d` (the record blob), `c` (creation, ms since the epoch), `u` (user id, authenticated sessions only) |
/// | `<base>s:<key hex>` (rotated away) | hash | a forwarding entry: only `f`, the name of the key the session moved to, for [`FORWARD_TTL`] |
/// | `<base>u:<user id>` | sorted set | the user's sessions under this base: members are full record key names, scores are each record's expiry deadline (Redis time, ms) |
/// | `<base>guests` | sorted set | the guest sessions (no `u`) under this base (a guest bucket), scored like an index: the guest budget |
/// | `{tsg}:route-key` | string | the routing secret (32 random bytes in hex, no expiry), unless [`routing_secret`](RedisStoreBuilder::routing_secret) sets one |
/// | `{tsg}:inval` | pub/sub channel | invalidation messages `"<instance id>:<record key name>"` (the name carries the routing tag) |
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
/// **Redis Cluster: sessions spread over every slot.** A cluster runs a script only on keys
/// of one slot, and the slot of a name is that of its hash tag (`{...}`). So the tag a token
/// carries goes inside the hash tag: `{tsg.AbC}:` names one slot, and different tags spread
/// sessions over the slots, hence over the primaries (measured on three primaries: 30 000
/// sessions put 32.5 / 32.7 / 34.8 % of the keys and 32.2 / 32.7 / 35.1 % of the commands on
/// each, `tests/redis_cluster.rs`). Each script derives the names it needs (index, guest
/// set) from the record key's own base, so it stays in that slot:
///
/// * **A logged-in session** gets its user's tag: the first 18 bits of
///   HMAC-SHA-256(routing secret, user id). All of a user's sessions, their index and so the
///   session limit share one slot, and `login` (with the limit), the user's list and
///   revoke-others stay single atomic scripts. `rotate` keeps the tag.
/// * **A guest** gets one of up to 1 024 guest-bucket tags at random (a bucket per 64 guests
///   of [`guest_capacity`](RedisStoreBuilder::guest_capacity)); each bucket's guest set holds
///   its share of the budget, so eviction is "least recently active" within a bucket.
/// * **A guest that logs in** moves to the user's slot (login always issues a new token). On
///   one node that is one script, as before; on a cluster, two: the login script in the
///   user's slot, then `retire` in the guest's slot, which leaves the guest key forwarding
///   to the new session if it is still at the version the login read, else the new session
///   is deleted again and the login answers `Conflict` (the layer retries). Sessions the
///   limit evicted in the first step stay ended in that case. `delete` follows a forwarding
///   entry into another slot with one more script.
///
/// *What a tag reveals.* It is 18 bits chosen by the store, not part of the secret: the token's
/// 256 random bits and the SHA-256 key are as before. Without the routing secret a tag cannot
/// be computed from a user id, so it does not name the user or let anyone test "is this
/// Alice's cookie". What it does allow: whoever sees several cookies can tell that they
/// probably belong to one user (with 2^18 tags, two users share one with probability
/// 1 / 262 144), and that a guest cookie is a guest's. Cookies are `HttpOnly`, `Secure`
/// secrets: anyone who sees them can already use them, which is far worse than linking them,
/// so this is accepted. The secret lives in Redis by default, where the user ids are anyway.
/// If it is lost, new logins go to a new slot and index; older sessions stay valid until
/// they expire but leave the user's list, limit and revocation: set
/// [`routing_secret`](RedisStoreBuilder::routing_secret) where that matters.
///
/// *Sessions from before tags* (43-character tokens, `{tsg}:s:...`) stay readable and
/// writable under their old names until they expire, with their old index and guest set;
/// `user_sessions` (and so revocation) reads the user's routed and old indexes (one script
/// on one node, two on a cluster). No migration is needed. On one node the tags only change
/// key names.
///
/// *Failover.* Measured (`tests/redis_cluster.rs`, three primaries with a replica each,
/// `cluster-node-timeout 1000`, 30 clients through two instances): after a SIGKILL of a
/// primary its replica took over in 2.3 to 2.4 s, and every client was served again 2.9 s
/// after the kill; sessions revoked before the kill stayed revoked. Until the takeover every
/// request of an instance fails with 503 (fred reconnects its whole cluster client), not only
/// those of the lost primary's slots; after it, a failed command makes the store resync
/// fred's slot map (`CLUSTER SLOTS`). Replication is asynchronous: a write acknowledged just
/// before its primary dies can be lost with it (a session logged out then comes back, one
/// created is gone); size `cluster-node-timeout` and consider `min-replicas-to-write`
/// accordingly. A replica that has not finished its first sync takes over empty.
///
/// A prefix without a non-empty `{...}` tag is refused for a cluster.
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
/// removes an existing record publishes `"<instance id>:<record key name>"` on `{prefix}inval` in the
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
/// back they fail at once, and so do commands that were waiting when it was lost (the store
/// checks its own flag and wakes its pending commands on fred's error event, because fred
/// alone would queue them through its reconnection delay until they time out). The flag
/// goes back up only when Redis has answered a `PING` (sent every 100 ms while down, and
/// after fred reports a reconnection): fred calls a dead connection "connected" until a
/// command finds out, so its own state cannot say when commands will be answered. Against a
/// server that does not answer, commands time out after
/// [`command_timeout`](RedisStoreBuilder::command_timeout) (default 300 ms); a connection
/// that stops answering is dropped and re-established. A **write** that timed out or lost its
/// connection in flight may have been applied: it fails with
/// [`RedisStoreError::OutcomeUnknown`], which the layer reports as such. Either way the layer gets a
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
/// `redis-cluster://` URL; `tests/redis_cluster.rs` builds three primaries with a replica
/// each and checks the spread and the per-user operations there; `tests/redis_faults.rs`
/// kills and pauses private servers (fail fast, outcome unknown, contention).
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
