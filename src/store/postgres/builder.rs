//! [`PostgresStoreBuilder`]: the store's settings and their defaults, the connection
//! configuration (timeouts, the instance id, the pool), migrating, and starting the
//! listener and clean-up tasks.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rand::RngCore;
use tokio_postgres::NoTls;

use super::listen::{self, ListenSettings};
use super::names::Names;
use super::ops::millis;
use super::schema;
use super::shared::StoreShared;
use super::statements::Statements;
use super::sweep::sweep;
use super::{PostgresStore, PostgresStoreError};
use crate::store::near_cache::NearCache;
use crate::store::StoreError;

/// Configures a [`PostgresStore`]: `PostgresStore::builder(url)...build().await`.
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresStoreBuilder {
    url: Url,
    schema: String,
    near_cache_ttl: Duration,
    near_cache_capacity: u64,
    guest_capacity: u64,
    pool_size: usize,
    command_timeout: Duration,
    connect_timeout: Duration,
    reconnect_max_delay: Duration,
    cleanup_interval: Duration,
    cleanup_batch: u32,
    run_migrations: bool,
}

/// The defaults, with their reasons.
impl PostgresStoreBuilder {
    /// The default schema, which holds the store's tables and functions.
    pub const DEFAULT_SCHEMA: &str = "tsg";
    /// The default near-cache TTL: the longest a stale entry can live if a notification is
    /// lost without the connection being noticed as down.
    pub const DEFAULT_NEAR_CACHE_TTL: Duration = Duration::from_secs(5);
    /// The default near-cache capacity, in sessions.
    pub const DEFAULT_NEAR_CACHE_CAPACITY: u64 = 100_000;
    /// The default guest budget, the same as the Redis store's: 50 000 guest rows. A guest row is a few hundred bytes
    /// plus its index entries, so about 25 MB of table and indexes; without a bound an
    /// anonymous flood grows the table (and its vacuum work) as fast as it can send requests.
    pub const DEFAULT_GUEST_CAPACITY: u64 = 50_000;
    /// The default pool size: a store holds at most this many connections (besides its
    /// notification connection). A statement here takes well under a millisecond, so 16
    /// connections serve thousands of requests a second, and a few instances stay far below
    /// PostgreSQL's default `max_connections` (100).
    pub const DEFAULT_POOL_SIZE: usize = 16;
    /// The default bound of one operation (waiting for a pooled connection, connecting and
    /// the statement together; also the server's `statement_timeout`): 500 ms. Longer than
    /// Redis's 300 ms because a login waits for the user's lock behind that user's other
    /// logins; short enough that an outage answers 503 quickly instead of piling up requests.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
    /// The default timeout of a connection attempt (TCP, TLS-less startup and
    /// authentication), for `build` and the notification connection.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// The default longest pause between two reconnection attempts of the notification
    /// connection (the backoff starts at 50 ms and doubles up to this).
    pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
    /// The default pause between two expiry clean-up rounds.
    pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
    /// The default number of rows one clean-up statement deletes at most (a round runs at
    /// most 10 of them): small enough to finish well within the command timeout.
    pub const DEFAULT_CLEANUP_BATCH: u32 = 500;
}

impl PostgresStoreBuilder {
    pub(super) fn new(url: String) -> Self {
        PostgresStoreBuilder {
            url: Url(url),
            schema: Self::DEFAULT_SCHEMA.to_owned(),
            near_cache_ttl: Self::DEFAULT_NEAR_CACHE_TTL,
            near_cache_capacity: Self::DEFAULT_NEAR_CACHE_CAPACITY,
            guest_capacity: Self::DEFAULT_GUEST_CAPACITY,
            pool_size: Self::DEFAULT_POOL_SIZE,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            reconnect_max_delay: Self::DEFAULT_RECONNECT_MAX_DELAY,
            cleanup_interval: Self::DEFAULT_CLEANUP_INTERVAL,
            cleanup_batch: Self::DEFAULT_CLEANUP_BATCH,
            run_migrations: true,
        }
    }

    /// The PostgreSQL schema of the store's tables, functions and notification channel
    /// (default `tsg`): 1 to 40 characters of `a-z`, `0-9` and `_`, not starting with a
    /// digit or `pg_` (it is spliced into SQL, so nothing else is accepted). Instances that
    /// share sessions must use the same schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How long a near-cache entry may live (default 5 s). Zero turns the near-cache off.
    pub fn near_cache_ttl(mut self, ttl: Duration) -> Self {
        self.near_cache_ttl = ttl;
        self
    }

    /// How many sessions the near-cache holds at most (default 100 000). Zero turns the
    /// near-cache off.
    pub fn near_cache_capacity(mut self, capacity: u64) -> Self {
        self.near_cache_capacity = capacity;
        self
    }

    /// How many guest sessions (sessions without a logged-in user) the table holds at most
    /// (default [`DEFAULT_GUEST_CAPACITY`](Self::DEFAULT_GUEST_CAPACITY); at least 1). A new
    /// guest beyond it evicts the guests that would expire first (the least recently
    /// active), at most 8 per new guest; logged-in sessions are never evicted for a guest.
    /// The count is shared by every store on the same schema, so give them the same
    /// capacity.
    pub fn guest_capacity(mut self, capacity: u64) -> Self {
        self.guest_capacity = capacity.max(1);
        self
    }

    /// How many connections the pool holds at most (default 16; at least 1).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long one operation may take before it fails with a [`StoreError`] (default
    /// 500 ms; at least 1 ms): waiting for a pooled connection, connecting and the
    /// statement together. The server's `statement_timeout` is set to the same value.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        // PostgreSQL reads a statement_timeout of 0 as "none".
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one connection attempt may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between two reconnection attempts of the notification connection
    /// (default 1 s).
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// How often the expiry clean-up runs (default 60 s), and how many rows one of its
    /// statements deletes at most (default 500; a round runs at most 10).
    pub fn cleanup(mut self, interval: Duration, batch: u32) -> Self {
        self.cleanup_interval = interval.max(Duration::from_millis(10));
        self.cleanup_batch = batch.max(1);
        self
    }

    /// Whether `build` creates or upgrades the schema (default true). With false, `build`
    /// only checks that the schema is at the version this store needs, and fails otherwise:
    /// for deployments whose application role may not create tables (run
    /// [`migrate`](Self::migrate) with a role that may).
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    fn pg_config(
        &self,
        instance: &str,
        role: &str,
    ) -> Result<tokio_postgres::Config, PostgresStoreError> {
        let mut config: tokio_postgres::Config = self
            .url
            .0
            .parse()
            .map_err(|e| PostgresStoreError::Config(format!("the URL: {e}")))?;
        let statement_ms = millis(self.command_timeout).max(1);
        // `tsg.instance` names this store in its notifications (sql/v1.sql reads it).
        let ours = format!("-c statement_timeout={statement_ms} -c tsg.instance={instance}");
        let options = match config.get_options() {
            Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config
            .options(&options)
            .application_name(format!("tsg-{role}-{instance}"))
            .connect_timeout(self.connect_timeout);
        Ok(config)
    }

    /// Creates or upgrades the schema (idempotent; see "Table layout" in
    /// [`PostgresStore`]'s docs) and returns, without starting a store. For deployments that
    /// migrate with another role before the application starts.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] (wrapping a [`PostgresStoreError`]) when the URL or schema name is
    /// invalid, PostgreSQL cannot be reached within the connect timeout, or a migration fails.
    pub async fn migrate(self) -> Result<(), StoreError> {
        let names = Names::new(self.schema.clone(), "migrate".into())?;
        let config = self.pg_config(names.instance(), "migrate")?;
        let work = async {
            let (mut client, connection) = config.connect(NoTls).await?;
            let driver = tokio::spawn(connection);
            let result = migrate_with(&mut client, names.schema()).await;
            drop(client);
            let _ = driver.await;
            result
        };
        match tokio::time::timeout(self.connect_timeout + self.command_timeout * 20, work).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PostgresStoreError::Timeout(self.connect_timeout).into()),
        }
    }

    /// Connects (the pool's first connection and the notification connection), migrates
    /// the schema (unless [`run_migrations(false)`](Self::run_migrations)), and starts the
    /// listener and the expiry clean-up. Fails if PostgreSQL cannot be reached now; once
    /// built, the store reconnects by itself. Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] (wrapping a [`PostgresStoreError`]) when the URL or schema name is
    /// invalid, PostgreSQL cannot be reached within the connect timeout, a migration fails,
    /// or (without migrations) the schema is missing or too old.
    pub async fn build(self) -> Result<PostgresStore, StoreError> {
        Ok(self.build_inner().await?)
    }

    async fn build_inner(self) -> Result<PostgresStore, PostgresStoreError> {
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let names = Names::new(self.schema.clone(), instance)?;
        let manager = Manager::from_config(
            self.pg_config(names.instance(), "pool")?,
            NoTls,
            ManagerConfig {
                // A closed connection is replaced; a live one is handed out as it is.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.command_timeout))
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.command_timeout))
            .build()
            .map_err(|e| PostgresStoreError::Config(format!("the pool: {e}")))?;

        let setup = async {
            let mut client = pool.get().await?;
            if self.run_migrations {
                migrate_with(&mut client, names.schema()).await
            } else {
                schema::check(&client, names.schema()).await
            }
        };
        match tokio::time::timeout(self.connect_timeout + self.command_timeout * 20, setup).await {
            Ok(result) => result?,
            Err(_) => return Err(PostgresStoreError::Timeout(self.connect_timeout)),
        }

        let settings = ListenSettings {
            config: self.pg_config(names.instance(), "listen")?,
            channel: names.channel().to_owned(),
            connect_timeout: self.connect_timeout,
            max_delay: self.reconnect_max_delay,
        };
        let listener = listen::connect(&settings).await?;
        let shared = Arc::new(StoreShared {
            pool,
            sql: Statements::new(names.schema()),
            names,
            guest_capacity: i64::try_from(self.guest_capacity).unwrap_or(i64::MAX),
            command_timeout: self.command_timeout,
            near: NearCache::new(self.near_cache_ttl, self.near_cache_capacity),
            listening: AtomicBool::new(true),
            tasks: Mutex::new(Vec::new()),
        });
        let watcher = tokio::spawn(listen::watch(Arc::downgrade(&shared), settings, listener));
        let sweeper = tokio::spawn(sweep(
            Arc::downgrade(&shared),
            self.cleanup_interval,
            i64::from(self.cleanup_batch),
        ));
        shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([watcher.abort_handle(), sweeper.abort_handle()]);
        Ok(PostgresStore { shared })
    }
}

/// The connection URL, whose `Debug` hides the password (a builder may well be logged).
#[derive(Clone)]
struct Url(String);

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// `url` with its password replaced by `***`: in `scheme://user:password@host` and in a
/// `password=...` key-value pair.
pub(super) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        if let Some(at) = rest.rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let (start, end) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
                out.replace_range(start..end, "***");
            }
        }
    }
    if let Some(p) = out.find("password=") {
        let start = p + "password=".len();
        let end = out[start..]
            .find([' ', '&'])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
}

/// Runs the migrations; logs what it did.
async fn migrate_with(
    client: &mut tokio_postgres::Client,
    schema: &str,
) -> Result<(), PostgresStoreError> {
    let before = schema::migrate(client, schema).await?;
    if before < schema::LATEST {
        tracing::info!(
            schema,
            from = before,
            to = schema::LATEST,
            "session store schema migrated"
        );
    }
    Ok(())
}
