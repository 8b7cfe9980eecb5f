//! [`RedisStoreBuilder`]: the store's settings and their defaults, fred's configuration
//! (reconnection, timeouts, fail-fast), and connecting.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::types::config::{
    Config as FredConfig, ConnectionConfig, Options, PerformanceConfig, ReconnectPolicy,
    ServerConfig, UnresponsiveConfig,
};
use rand::RngCore;

use super::codec::millis;
use super::names::Names;
use super::scripts::load_scripts;
use super::shared::{abort_all, StoreShared};
use super::watch::{subscribe, watch, Events};
use super::{RedisStore, RedisStoreError};
use crate::store::near_cache::NearCache;
use crate::store::StoreError;

/// How many messages the subscriber buffers before it counts as lagging (and clears).
const MESSAGE_BUFFER: usize = 4096;

/// Where to connect: a URL, or a cluster's seed nodes.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Url(String),
    Cluster(Vec<(String, u16)>),
}

/// Configures a [`RedisStore`]: `RedisStore::builder(url)...build().await`.
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    near_cache_ttl: Duration,
    near_cache_capacity: u64,
    guest_capacity: u64,
    command_timeout: Duration,
    connect_timeout: Duration,
    reconnect_max_delay: Duration,
    routing_secret: Option<Vec<u8>>,
}

/// The defaults, with their reasons.
impl RedisStoreBuilder {
    /// The default key prefix. The braces are a Redis Cluster hash tag (see the module docs).
    pub const DEFAULT_PREFIX: &str = "{tsg}:";
    /// The default near-cache TTL: the longest a stale entry can live if an invalidation
    /// message is lost.
    pub const DEFAULT_NEAR_CACHE_TTL: Duration = Duration::from_secs(5);
    /// The default near-cache capacity, in sessions.
    pub const DEFAULT_NEAR_CACHE_CAPACITY: u64 = 100_000;
    /// The default time a command may take before it fails.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(300);
    /// The default longest pause between two reconnection attempts.
    pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
    /// The default timeout of a TCP connection attempt.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// The default guest budget (see [`RedisStoreBuilder::guest_capacity`]): 50 000 guest
    /// sessions, about 40 MB of Redis.
    ///
    /// Measured with `MEMORY USAGE` on Redis 7.0 (`tests/redis.rs`,
    /// `guest_budget_evicts_the_least_recently_active_guests_never_users`): a guest record as the
    /// layer writes it (one small value; a 194-byte blob, so Redis stores the hash as a hash
    /// table) takes 584 bytes and its entry in the guest set 204, so **about 790 bytes per
    /// guest**; Redis's own key-space overhead (the expiry entry, the dictionaries) brings
    /// `used_memory` to about 900 bytes per guest. 50 000 guests are then about 40 MB (45 MB of
    /// `used_memory`): a sixth of a 256 MB Redis, the smallest common size, which leaves the
    /// rest to logged-in sessions; and room for 28 new guests a second, sustained, over a
    /// 30-minute guest idle lifetime, more than a site that needs no tuning sees. Without a bound,
    /// an anonymous flood filled 98 MB in 15 s.
    pub const DEFAULT_GUEST_CAPACITY: u64 = 50_000;
}

impl RedisStoreBuilder {
    pub(super) fn new(target: Target) -> Self {
        RedisStoreBuilder {
            target,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            near_cache_ttl: Self::DEFAULT_NEAR_CACHE_TTL,
            near_cache_capacity: Self::DEFAULT_NEAR_CACHE_CAPACITY,
            guest_capacity: Self::DEFAULT_GUEST_CAPACITY,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            reconnect_max_delay: Self::DEFAULT_RECONNECT_MAX_DELAY,
            routing_secret: None,
        }
    }

    /// Connects to a Redis Cluster through these seed nodes (host, port) instead of the URL
    /// (the rest of the cluster is discovered). Equivalent to a
    /// `redis-cluster://host:port,host:port` URL.
    pub fn cluster<I, H>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = (H, u16)>,
        H: Into<String>,
    {
        self.target = Target::Cluster(nodes.into_iter().map(|(h, p)| (h.into(), p)).collect());
        self
    }

    /// The prefix of every key and of the invalidation channel (default `{tsg}:`). On a
    /// cluster it must contain a non-empty hash tag (`{...}`), so that all keys share a slot.
    /// Instances that share sessions must use the same prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a near-cache entry may live (default 5 s): the worst-case staleness if an
    /// invalidation message is lost. Zero turns the near-cache off.
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

    /// How many guest sessions (sessions without a logged-in user) Redis holds at most
    /// (default [`DEFAULT_GUEST_CAPACITY`](Self::DEFAULT_GUEST_CAPACITY), 50 000, about 40 MB; at least 1). A new guest
    /// beyond it evicts the guests that would expire first, that is the least recently
    /// active ones, on every instance; logged-in sessions are never evicted to make room for
    /// a guest. The count is shared by every store with the same prefix, so give them the
    /// same capacity.
    ///
    /// The budget is split into guest buckets of about 64 (at most 1 024 buckets; one below
    /// 128), each with `capacity / buckets` rounded up, so that guests spread over a
    /// cluster's slots: the total can exceed `capacity` by the rounding (at most 1.5 %:
    /// 50 765 for the default), and "least recently active first" holds within a bucket.
    ///
    /// Without a bound, anonymous requests can fill Redis: then either new sessions are
    /// refused (`noeviction`), logins included, or Redis evicts logged-in sessions and user
    /// indexes (`allkeys-lru`). How long a guest lives is not set here: its record expires
    /// with the lifetime the layer gives it, its guest idle lifetime.
    pub fn guest_capacity(mut self, capacity: u64) -> Self {
        self.guest_capacity = capacity.max(1);
        self
    }

    /// How long one command may take before it fails with a [`StoreError`] (default
    /// 300 ms; at least 1 ms). While the connection is down, commands fail at once
    /// regardless.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        // fred reads zero as "no timeout", which would let a hung server hang requests.
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one TCP connection attempt may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between two reconnection attempts (default 1 s; the backoff starts
    /// at 50 ms and doubles up to this).
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// The secret under which each user's routing tag is computed (HMAC-SHA-256 of the user
    /// id; see "Redis Cluster" in [`RedisStore`]'s docs). Every instance sharing the sessions
    /// must use the same. By default the store keeps one in Redis itself (`<prefix>route-key`,
    /// 32 random bytes written once with `SET NX`, no expiry), so nothing needs configuring;
    /// set it here to keep users' tags stable even if that key is lost (a lost key means new
    /// logins land in a new slot and index: older sessions stay valid until they expire but
    /// are no longer listed, limited or revoked with the user's). At least 16 bytes.
    pub fn routing_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.routing_secret = Some(secret.into());
        self
    }

    pub(super) fn fred_config(&self) -> Result<FredConfig, RedisStoreError> {
        let config = match &self.target {
            Target::Url(url) => FredConfig::from_url(&cluster_url(url))
                .map_err(|e| RedisStoreError::Config(format!("{url:?}: {e}")))?,
            Target::Cluster(nodes) if nodes.is_empty() => {
                return Err(RedisStoreError::Config("no cluster nodes given".into()))
            }
            Target::Cluster(nodes) => FredConfig {
                server: ServerConfig::new_clustered(nodes.clone()),
                ..FredConfig::default()
            },
        };
        if config.server.is_clustered() && !has_hash_tag(&self.prefix) {
            return Err(RedisStoreError::Config(format!(
                "prefix {:?} has no hash tag: on a cluster, keys must share a slot (use e.g. \"{{tsg}}:\")",
                self.prefix
            )));
        }
        Ok(FredConfig {
            // The first connection must work (build fails otherwise); later drops reconnect.
            fail_fast: true,
            ..config
        })
    }

    /// Connects both connections, subscribes to the invalidation channel and loads the
    /// scripts. Fails if Redis cannot be reached now; once built, the store reconnects by
    /// itself. Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] (wrapping a [`RedisStoreError`](crate::RedisStoreError)) when the URL
    /// is invalid, Redis cannot be reached within the connect timeout, or the scripts cannot be
    /// loaded.
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        Ok(self.build_inner().await?)
    }

    async fn build_inner(self) -> Result<RedisStore, RedisStoreError> {
        let config = self.fred_config()?;
        let cluster = config.server.is_clustered();
        let max_delay = u32::try_from(millis(self.reconnect_max_delay))
            .unwrap_or(u32::MAX)
            .max(50);
        let policy = ReconnectPolicy::new_exponential(0, 50, max_delay, 2);
        let connection = ConnectionConfig {
            connection_timeout: self.connect_timeout,
            internal_command_timeout: self.connect_timeout,
            // A retried write could apply twice; the layer retries what is safe to retry.
            max_command_attempts: 1,
            unresponsive: UnresponsiveConfig {
                max_timeout: Some((self.command_timeout * 4).max(Duration::from_secs(1))),
                interval: Duration::from_millis(250),
            },
            ..ConnectionConfig::default()
        };
        let perf = PerformanceConfig {
            default_command_timeout: self.command_timeout,
            broadcast_channel_capacity: MESSAGE_BUFFER,
            ..PerformanceConfig::default()
        };
        let client = Client::new(
            config.clone(),
            Some(perf.clone()),
            Some(connection.clone()),
            Some(policy.clone()),
        );
        let subscriber = SubscriberClient::new(config, Some(perf), Some(connection), Some(policy));
        let options = Options {
            fail_fast: true,
            max_attempts: Some(1),
            timeout: Some(self.command_timeout),
            ..Options::default()
        };

        // Listen before connecting, so that no event of the first connections is missed.
        let mut events = Events::listen(&client, &subscriber);
        let mut tasks = Vec::new();
        tasks.push(client.init().await?.abort_handle());
        match subscriber.init().await {
            Ok(task) => tasks.push(task.abort_handle()),
            Err(e) => {
                abort_all(&tasks);
                return Err(e.into());
            }
        }

        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let loaded = async {
            let secret = match self.routing_secret {
                Some(secret) if secret.len() >= 16 => secret,
                Some(_) => {
                    return Err(RedisStoreError::Config(
                        "the routing secret must have at least 16 bytes".into(),
                    ))
                }
                None => routing_secret(&client, &self.prefix).await?,
            };
            let names = Names::new(self.prefix, instance, secret, self.guest_capacity);
            subscribe(&subscriber, names.channel()).await?;
            Ok((names, load_scripts(&client).await?))
        }
        .await;
        let (names, scripts) = match loaded {
            Ok(s) => s,
            Err(e) => {
                abort_all(&tasks);
                return Err(e);
            }
        };

        let disturbed = events.discard_pending();
        let shared = Arc::new(StoreShared {
            cmd: client.with_options(&options),
            client,
            subscriber,
            cluster,
            names,
            guest_capacity: self.guest_capacity,
            scripts,
            near: NearCache::new(self.near_cache_ttl, self.near_cache_capacity),
            main_up: AtomicBool::new(true),
            lost: tokio::sync::Notify::new(),
            resync: AtomicBool::new(false),
            sub_ready: AtomicBool::new(!disturbed),
            tasks: Mutex::new(tasks),
        });
        let watcher = tokio::spawn(watch(Arc::downgrade(&shared), events, disturbed));
        shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(watcher.abort_handle());
        Ok(RedisStore { shared })
    }
}

/// Rewrites `redis-cluster://a:1,b:2,c:3/...` into fred's form
/// `redis-cluster://a:1?node=b:2&node=c:3`; other URLs pass unchanged.
pub(super) fn cluster_url(url: &str) -> String {
    const SCHEMES: [&str; 2] = ["redis-cluster://", "valkey-cluster://"];
    let Some(scheme) = SCHEMES.iter().find(|s| url.starts_with(*s)) else {
        return url.to_owned();
    };
    let rest = &url[scheme.len()..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let mut hosts = hosts.split(',').filter(|h| !h.is_empty());
    let Some(first) = hosts.next() else {
        return url.to_owned();
    };
    let nodes: Vec<String> = hosts.map(|h| format!("node={h}")).collect();
    if nodes.is_empty() {
        return url.to_owned();
    }
    let query = tail.find('?').map_or("", |q| &tail[q + 1..]);
    let mut out = format!("{scheme}{userinfo}{first}?{}", nodes.join("&"));
    if !query.is_empty() {
        out.push('&');
        out.push_str(query);
    }
    out
}

/// Whether `prefix` has a non-empty Redis Cluster hash tag: the text between the first `{`
/// and the first `}` after it.
pub(super) fn has_hash_tag(prefix: &str) -> bool {
    super::names::hash_tag_end(prefix).is_some()
}

/// The deployment's routing secret, kept in Redis: written once by whichever instance comes
/// first (`SET NX`, no expiry), then read by all.
async fn routing_secret(client: &Client, prefix: &str) -> Result<Vec<u8>, RedisStoreError> {
    use fred::interfaces::LuaInterface;
    const SET_ONCE: &str =
        "redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])";
    let key = format!("{prefix}route-key");
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
    let secret: Option<String> = client.eval(SET_ONCE, key.as_str(), fresh).await?;
    match secret {
        Some(s) if s.len() >= 32 => Ok(s.into_bytes()),
        _ => Err(RedisStoreError::Reply(format!(
            "{key} holds no routing secret"
        ))),
    }
}
