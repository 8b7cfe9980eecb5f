//! The PostgreSQL store (feature `postgres`): the design is documented on
//! [`PostgresStore`], which applications name at the crate root.

mod builder; // PostgresStoreBuilder: settings, connection configuration, building
mod error; // PostgresStoreError
mod listen; // the notification connection and its task
mod names; // the schema (checked), the channel, the instance id, advisory lock ids
mod ops; // the operations: load and the writes
mod schema; // migrations (sql/v1.sql ...) and the schema version
mod session_store; // impl SessionStore for PostgresStore
mod shared; // StoreShared: what every clone of a PostgresStore shares
mod statements; // the SQL the operations send
mod sweep; // the expiry clean-up task
#[cfg(test)]
mod tests; // unit tests of the pure parts

use std::fmt;
use std::sync::Arc;

pub use builder::PostgresStoreBuilder;
pub use error::PostgresStoreError;

use super::near_cache::NearCacheStats;
use super::StoreError;
use shared::StoreShared;

/// Sessions in PostgreSQL (through [tokio-postgres](https://docs.rs/tokio-postgres) and a
/// small [deadpool](https://docs.rs/deadpool-postgres) pool), behind the same bounded moka
/// near-cache as `RedisStore` (feature `redis`), kept coherent across instances by
/// `LISTEN`/`NOTIFY`. Feature `postgres`.
///
/// # Table layout
///
/// Everything lives in one schema (default `tsg`, see
/// [`schema`](PostgresStoreBuilder::schema)), created and upgraded by versioned,
/// idempotent migrations that [`build`](PostgresStoreBuilder::build) runs (or
/// [`migrate`](PostgresStoreBuilder::migrate), for a separate migration role):
///
/// | object | what |
/// | --- | --- |
/// | `sessions` | one row per session key: `key bytea` primary key (the SHA-256 of the token, never the token), `version bigint`, `record bytea` (the blob), `user_id text` (null for guests), `created_at timestamptz` (the record's), `expires_at timestamptz` (the database's clock plus the layer's ttl), `forward_to bytea` (rotated-away keys only), `guest boolean` (generated: no user, not a forward) |
/// | `sessions_expires_at` | index on `expires_at`: the clean-up's order |
/// | `sessions_user` | partial index on `(user_id, created_at, key)`: the per-user index, oldest first |
/// | `sessions_guests` | partial index on `expires_at` of guest rows: the guest budget's eviction order |
/// | `guest_count` | one row: how many guest rows there are, kept by a trigger; its row lock serialises guest creates |
/// | `schema_version` | the migrations applied |
/// | `create_session`, `rotate_session`, `login_session`, `delete_session` | PL/pgSQL functions: each write is one call, atomic, one round trip |
/// | `count_guests`, `notify_change` | triggers on `sessions` |
/// | channel `<schema>_inval` | notifications `"<instance id>:<key hex>"` |
///
/// **The blob** is the same as Redis's: one format byte (`1`) and the [`SessionRecord`] as
/// MessagePack with named fields, so fields added to the record need no migration; an
/// unknown format byte or a blob that does not decode is a [`StoreError`] (503): the store
/// fails closed. Only what must be indexed is a column of its own.
///
/// # The contract, statement by statement
///
/// * `load`: the near-cache, else one `SELECT` of an unexpired row with a version.
/// * `create`: `create_session` refuses a key with an unexpired row (a forward included).
/// * `update`: one `UPDATE ... WHERE key = $1 AND version = $expected AND expires_at >
///   now()`: compare-and-set; a stale writer cannot bring a deleted row back.
/// * `rotate`: `rotate_session` locks the old row at the expected version, inserts the new
///   key, then turns the old row into a forward to it for [`FORWARD_TTL`], in one
///   transaction: the new record exists before the old one is gone, and nothing happens
///   unless both conditions hold.
/// * `delete`: `delete_session` removes the key and follows forwards (at most
///   [`MAX_FORWARD_HOPS`]) to the live record they lead to, so a logout that read a session
///   just before another instance rotated it still ends it. Final: keys are random and a
///   deleted key has no row to compare with.
/// * `login`: `login_session` takes a transaction-scoped advisory lock on the user
///   (`pg_advisory_xact_lock` of a hash of schema and user id), counts the user's live
///   sessions, and then checks the limit, rotates (or creates) and evicts the oldest under
///   that lock: concurrent logins of one user from any number of instances are serialised,
///   so the limit holds exactly; logins of different users never wait for each other.
/// * `user_sessions`: one `SELECT` through `sessions_user`, reading at most `limit` rows.
///
/// | operation | round trips |
/// | --- | --- |
/// | `load`, near-cache hit | 0 |
/// | `load`, near-cache miss | 1 |
/// | `create`, `update`, `rotate`, `delete`, `login`, `user_sessions` | 1 |
///
/// (Each pooled connection prepares a statement once, on its first use.)
///
/// # Expiry
///
/// `expires_at` is set from the database's clock on every write; every read and write
/// treats a row past it as absent. A clean-up task per store deletes expired rows in
/// batches ([`cleanup`](PostgresStoreBuilder::cleanup): default every 60 s, at most 10
/// statements of 500 rows), never on a request; with `FOR UPDATE SKIP LOCKED` several
/// instances' clean-ups and the requests never wait for each other.
///
/// # Guests
///
/// A guest `create` takes the `guest_count` row lock, and when the count has reached
/// [`guest_capacity`](PostgresStoreBuilder::guest_capacity) (default
/// [`PostgresStoreBuilder::DEFAULT_GUEST_CAPACITY`]) deletes the guests with the earliest
/// deadlines (at most 8, expired ones first), never a logged-in session. The count is kept
/// by a trigger, so a guest that logs in, rotates, is deleted or cleaned up frees its place
/// whatever path removed it. Guest creates are serialised by that one row (logged-in
/// sessions and updates are not): about one guest create per commit latency, thousands a
/// second on a local server.
///
/// # The near-cache and its coherence
///
/// The same near-cache and rules as Redis (default 100 000 entries, 5 s TTL): every write
/// by this instance updates or invalidates its own entries; every transaction that changes
/// or removes a row notifies `"<instance id>:<key hex>"` on the schema's channel through a
/// trigger, delivered at commit (never for a rolled-back write). Each store keeps one
/// dedicated connection that `LISTEN`s and drops the entries named by other instances'
/// notifications. The near-cache is used only while that connection listens: when it drops
/// (or a one-second ping gets no answer), the near-cache is cleared and bypassed until a
/// new connection listens, and cleared again then (notifications sent meanwhile are lost).
/// A fill that races with an invalidation of its key is discarded.
///
/// The limits, as for Redis: a connection the server closes (a restart, `pg_terminate_backend`)
/// is noticed at once, but a revocation committed between the server's end of the connection
/// and this store reading that end (microseconds) may be served until then; a connection
/// that stops answering without closing (a partition, a paused host) is noticed by the ping
/// within about 2 s, and until then entries may be served that other instances changed in
/// the meantime (at most the near-cache TTL in any case).
///
/// # Outages
///
/// Every operation is bounded by [`command_timeout`](PostgresStoreBuilder::command_timeout)
/// (default 500 ms: waiting for the pool, connecting, the statement; the server's
/// `statement_timeout` is the same), and connection attempts by
/// [`connect_timeout`](PostgresStoreBuilder::connect_timeout) (2 s). An unreachable server
/// is a [`StoreError`] and the layer answers 503 (gRPC 14); never a panic, never "no
/// session". A write that timed out may have been applied (its outcome is unknown); writes
/// are never retried by the store. A timeout also empties the pool of its idle connections
/// (the abandoned one may be stuck behind a server that stopped answering), so the next
/// requests open fresh ones instead of waiting on it. Sessions revoked before an outage stay revoked after it:
/// revocation deletes the row, and the near-cache starts empty after every reconnection.
///
/// No TLS: connect over a private network or a local socket, or put a TLS-terminating
/// proxy in front (the README says more). Connect to PostgreSQL itself, not through a
/// transaction-pooling PgBouncer: the store sets per-connection settings at startup
/// (`statement_timeout`, `tsg.instance`) and keeps a `LISTEN`ing session, which transaction
/// pooling does not carry.
///
/// # What is tested
///
/// `tests/postgres.rs` runs against a real PostgreSQL (`POSTGRES_URL`), each test in a
/// schema of its own that it drops: the store contract, two layers with their own stores
/// on one database (cross-instance logout, concurrent logins of one user under a session
/// limit), the notification connection killed with `pg_terminate_backend` (the near-cache
/// is bypassed, nothing revoked is served, it recovers), the server cut off under load and a
/// server that stops answering (both through a loopback proxy: 503 within a bounded time,
/// recovery, nothing revoked comes back), a closed port, tampered rows and forged
/// notifications, migrations run twice and concurrently, and the expiry clean-up.
///
/// [`FORWARD_TTL`]: super::FORWARD_TTL
/// [`MAX_FORWARD_HOPS`]: super::MAX_FORWARD_HOPS
/// [`SessionRecord`]: crate::SessionRecord
///
/// Cheap to clone; clones share the pool, the tasks and the near-cache.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_session_guard::{PostgresStore, SessionGuardLayer};
///
/// let store = PostgresStore::builder("postgres://app@127.0.0.1/app")
///     .schema("myapp_sessions")
///     .build()
///     .await?;
/// let layer = SessionGuardLayer::new(store);
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<StoreShared>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.shared.names.schema())
            .field("instance", &self.shared.names.instance())
            .field("near_cache", &self.near_cache_stats())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects with every default: a `postgres://user[:password]@host[:port]/database`
    /// URL (or a `key=value` connection string).
    ///
    /// # Errors
    ///
    /// As [`PostgresStoreBuilder::build`].
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        Self::builder(url).build().await
    }

    /// Starts a configuration for `url` (see [`connect`](Self::connect) for the forms).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(url.into())
    }

    /// The near-cache counters since the store was built.
    pub fn near_cache_stats(&self) -> NearCacheStats {
        self.shared.near.stats()
    }

    /// Whether loads may be served from the near-cache right now: the notification
    /// connection is up and listening.
    pub fn near_cache_active(&self) -> bool {
        self.shared.near.enabled() && self.shared.coherent()
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        self.shared.names.schema()
    }

    /// This store's instance id, as its notifications carry it (and its connections'
    /// `application_name`s: `tsg-pool-<id>`, `tsg-listen-<id>`).
    pub fn instance_id(&self) -> &str {
        self.shared.names.instance()
    }

    /// Runs one expiry clean-up round now (as the background task does; bounded the same
    /// way) and returns how many expired rows it deleted.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when PostgreSQL cannot be reached or a statement fails.
    pub async fn remove_expired(&self) -> Result<u64, StoreError> {
        Ok(self
            .shared
            .sweep_round(i64::from(PostgresStoreBuilder::DEFAULT_CLEANUP_BATCH))
            .await?)
    }
}
