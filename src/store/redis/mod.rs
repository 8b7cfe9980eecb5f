//! Sessions in Redis (single node or Redis Cluster, through [fred](https://docs.rs/fred)),
//! behind a bounded moka near-cache that invalidation messages keep coherent across
//! instances. Feature `redis`.
//!
//! # Layout in Redis
//!
//! With the default prefix `{tsg}:`:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `{tsg}:s:<key hex>` | hash | one session: `v` (version, decimal), `d` (the record blob), `c` (creation, ms since the epoch), `u` (user id, authenticated sessions only) |
//! | `{tsg}:s:<key hex>` (rotated away) | hash | a forwarding entry: only `f`, the name of the key the session moved to, for [`FORWARD_TTL`] |
//! | `{tsg}:u:<user id>` | sorted set | the user's sessions: members are full record key names, scores are each record's expiry deadline (Redis time, ms) |
//! | `{tsg}:guests` | sorted set | the guest sessions (no `u`), scored like an index: the guest budget |
//! | `{tsg}:inval` | pub/sub channel | invalidation messages `"<instance id>:<key hex>"` |
//!
//! Keys are SHA-256 hashes of the tokens, so a dump of Redis holds no usable token. Every
//! record expires with Redis's own TTL (`PEXPIRE` of the layer's `ttl` on every write: the
//! earlier of its idle and absolute deadlines, plus a short retention).
//!
//! **The blob** is one format byte (`1`) followed by the [`SessionRecord`] as MessagePack with
//! named fields. Fields can be added without a format change (records carry their names, and
//! new fields have serde defaults); a change that old code could not read gets a new format
//! byte. A record with an unknown format byte or one that does not decode is a
//! [`StoreError`] (the layer answers 503): the store fails closed, it never guesses.
//!
//! **Redis Cluster.** The braces in the prefix are a hash tag: every key of the store hashes
//! to the same slot, which is what makes the multi-key Lua scripts legal on a cluster (the
//! scripts also derive index key names from the prefix, which is allowed because they share
//! that slot). The trade-off: a cluster gives this store failover (a replica takes over the
//! slot), not sharding: all sessions live on one primary. Size that primary for the peak of
//! live sessions; one Redis primary holds millions of them. A prefix without a non-empty
//! `{...}` tag is refused for a cluster.
//!
//! Needs Redis 6.2 or later (`ZADD GT`); tested with Redis 7.0.
//!
//! # Atomicity and round trips
//!
//! Every write is one Lua script, so one round trip and atomic: `create` refuses an existing
//! key; `update` is compare-and-set on `v`; `rotate` checks the old version and the absence
//! of the new key, writes the new record and leaves the old key forwarding to it (see below);
//! `login` does all of that plus the per-user index and the session limit. Scripts are loaded
//! once (`SCRIPT LOAD`) and called with `EVALSHA`; after a Redis restart (`NOSCRIPT`) the
//! store falls back to `EVAL`, which costs that one call a second round trip and caches the
//! script again.
//!
//! | operation | round trips |
//! | --- | --- |
//! | `load`, near-cache hit | 0 |
//! | `load`, near-cache miss | 1 (`HGET`) |
//! | `create`, `update`, `rotate`, `delete`, `login` | 1 (`EVALSHA`) |
//! | `user_sessions` | 1 (`EVALSHA`) |
//!
//! So a login costs at most two round trips: the load of the guest session it replaces (0
//! on a near-cache hit) and the login script.
//!
//! # The per-user index, and why its scores are expiry deadlines
//!
//! A user's sorted set holds the full key names of their sessions. The scripts maintain it:
//! `create`, `rotate` and `login` of a record with an identity add the new key; `rotate`,
//! `login`, `delete` and evictions remove the old one (the record's `u` field tells a script
//! which index to edit, so `delete` needs no user id). Each member's score is **its record's
//! expiry deadline in Redis's own clock** (`TIME` + `ttl`), raised with `ZADD GT` by every
//! write of the record, touches included.
//!
//! A fixed score (the absolute deadline, `created_at` + absolute lifetime) would be tempting
//! because it never changes, but the store only gets `ttl`: at login `now + ttl` is the *idle*
//! deadline, and every touch then extends the record beyond it, so pruning by that score
//! would drop live sessions from the index and an administrator's "revoke all" would miss
//! them. Configuring the absolute lifetime on the store too would duplicate the layer's
//! setting (a mismatch again drops live sessions silently) and would mix the application's
//! clock with Redis's. A deadline in Redis time that follows the record's own `PEXPIRE`
//! needs no extra setting, is never earlier than the record's expiry (no live session is
//! ever pruned) and never much later (the entry is bounded by the record). Scripts that touch
//! an index drop entries whose deadline has passed (`ZREMRANGEBYSCORE -inf now`) and, among
//! the 64 entries with the earliest deadlines, entries whose record no longer exists, and set
//! the index key's expiry to its highest score, so the index never outlives its last session.
//!
//! **Bounded work.** A script blocks every client of Redis while it runs, so no script reads
//! a whole index: `login` counts the user's sessions with `ZCARD` (exact, because the scripts
//! remove the entries of the records they end and expired entries go by score; only records
//! deleted behind the store's back, by an eviction policy or by hand, leave stale entries,
//! and every script that reads an index drops those it meets), checks the 64 entries with the
//! earliest deadlines, and picks the victims of `EvictOldest` among them, by creation time
//! (`c`), like the [`MemoryStore`](super::MemoryStore). Under the per-user limit the window
//! holds the whole index, so the oldest sessions go; an index far over the limit (a limit
//! lowered since its sessions logged in) shrinks by up to 64 per login. `user_sessions(user,
//! limit)` examines at most `limit` + 64 entries and returns at most `limit` sessions (all of
//! them under the per-user limit). Measured in `tests/redis.rs` with 5 000 live sessions of
//! one user: a login examined 65 entries in 0.6 ms instead of 10 003 in 39 ms, a list of 20
//! examined 20 in 0.13 ms instead of 10 002 in 21 ms.
//!
//! # Guests and memory
//!
//! Guest sessions (no user) are the only ones anybody can create without credentials, so the
//! store bounds them: `{tsg}:guests` lists them, scored by their records' deadlines (raised
//! by every write, like index entries), and a guest `create` first drops the entries whose
//! deadline has passed, then, when the set holds
//! [`guest_capacity`](RedisStoreBuilder::guest_capacity) guests (default
//! [`DEFAULT_GUEST_CAPACITY`]), evicts the guests with the earliest deadlines (the least
//! recently active): record, entry and invalidation message, at most 8 per call, so the
//! script's work stays O(log n). A guest that logs in, rotates or is deleted leaves the set
//! (a rotated one is replaced by its new key). A logged-in session is never evicted to make
//! room for a guest. A guest's record, and its entry, expire with the ttl the layer gives it,
//! that is its guest idle lifetime: the store has no setting of its own for it.
//!
//! Redis checks `maxmemory` (under `noeviction`) only at the first write of a script, and
//! only for commands that may grow memory; the first write of most scripts here is a `DEL`
//! or a `ZREM`, which it does not check, and once a script has written, its later writes go
//! through. So the scripts that add a session (`create`, `login`) first send a `ZADD XX`
//! that changes nothing but is checked: on a full Redis a new guest is then refused with
//! [`StoreError::full`] (the layer answers 503 with `Retry-After`) and a login with a plain
//! [`StoreError`], instead of growing Redis past its limit, while writes to existing
//! sessions (touches, rotations) and deletes (logouts, revocations) keep working. See the
//! README for `maxmemory` and `maxmemory-policy`.
//!
//! # Forwarding after rotation
//!
//! `rotate` and `login` leave the old key as a forwarding entry to the new one for
//! [`FORWARD_TTL`] (60 s): a hash with only `f`, the new key's name. Loading it finds no
//! record (`Ok(None)`, never cached), and `create`, `update`, `rotate` and `login` on it
//! conflict. `delete` of it removes it and follows `f` (at most [`MAX_FORWARD_HOPS`] hops),
//! removing every key on the way and the live record it reaches, with its index entry and an
//! invalidation message for each, and answers whether a live record was removed. So a logout
//! or a revocation that read the session just before a rotation on another instance still
//! ends it, instead of answering success while the rotated session lives on.
//!
//! # The near-cache and its coherence
//!
//! Loads are served from a bounded moka cache (default 100 000 entries, 5 s TTL). Every write
//! by this instance updates or invalidates its own entries, and every script that changes or
//! removes an existing record publishes `"<instance id>:<key hex>"` on `{prefix}inval` in the
//! same script (so it costs no round trip). Each store runs a subscriber connection that
//! drops the entries named by other instances' messages (and ignores its own), so a logout,
//! revocation, eviction or rotation on one instance is refused on the others as soon as the
//! message arrives: one pub/sub hop. Measured in `tests/redis.rs` on loopback, from the
//! logout response on one instance to the refusal on the other: about 0.3 ms median and at
//! most about 10 ms; most of the time the very next request is already refused.
//!
//! Reads on another instance are therefore coherent within that delay; writes do not depend
//! on it at all: they are compare-and-set in Redis, and a conflict drops the local entry, so
//! the layer's retry reads the fresh record.
//!
//! The near-cache is used only while both connections are up and the subscription is in
//! place. When either connection drops, the whole near-cache is cleared and bypassed (from
//! the moment fred reports the drop, normally within a millisecond), so nothing revoked
//! during an outage is served from memory; it is cleared again once the subscription is
//! re-established (messages may have been lost meanwhile), and whenever the subscriber falls
//! behind. A fill from Redis that races with an invalidation of the same key is discarded.
//! If a message is lost some other way (a network partition that neither side notices), a
//! stale entry lives at most the near-cache TTL.
//!
//! # Outages
//!
//! fred reconnects by itself (exponential backoff, at most
//! [`reconnect_max_delay`](RedisStoreBuilder::reconnect_max_delay) between attempts, forever).
//! Commands are sent fail-fast: from the moment fred reports the connection lost until it is
//! back they fail at once (the store checks its own flag, set by fred's connection events,
//! because fred alone would queue commands during its first backoff delay), and against a
//! server that does not answer they time out after
//! [`command_timeout`](RedisStoreBuilder::command_timeout) (default 300 ms); a connection
//! that stops answering is dropped and re-established. Either way the layer gets a
//! [`StoreError`] and answers 503 (gRPC 14) to requests that carry a session, while requests
//! without a session never reach the store. Writes are never retried by the client (a
//! retried compare-and-set could apply twice); the layer decides. Sessions revoked before
//! an outage stay revoked after it: revocation deletes the record in Redis, and the
//! near-cache starts empty after every reconnection.
//!
//! # What is tested
//!
//! `tests/redis.rs` runs against a real Redis (`REDIS_URL`): the store contract, two layers
//! with their own stores sharing one Redis (cross-instance logout, revocation and session
//! limits, with the invalidation delay measured), round trips counted with `MONITOR` on a
//! private server (the commands clients send, not those the scripts run), and an outage (a
//! private `redis-server` killed and restarted); the guest budget (eviction order, both
//! instances' near-caches, never a user, bytes per guest measured), the work of `login` and
//! `user_sessions` on an index of 5 000 entries (reads counted with `INFO commandstats` on a
//! private server), forwarding across instances, and a private server at `maxmemory`. With
//! `REDIS_CLUSTER_TEST=1` it also builds a three-node cluster on loopback ports (`redis-cli
//! --cluster create`) and runs the contract and a cross-instance logout against it through a
//! `redis-cluster://` URL.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, UNIX_EPOCH};

use fred::clients::{Client, SubscriberClient, WithOptions};
use fred::error::Error as FredError;
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, LuaInterface, PubsubInterface,
};
use fred::types::config::{
    Config as FredConfig, ConnectionConfig, Options, PerformanceConfig, ReconnectPolicy, Server,
    ServerConfig, UnresponsiveConfig,
};
use fred::types::Value;
use moka::ops::compute::Op;
use moka::sync::Cache;
use rand::RngCore;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::AbortHandle;

use super::{
    LimitPolicy, LoginOutcome, SessionLimit, SessionStore, StoreError, WriteOutcome, FORWARD_TTL,
    MAX_FORWARD_HOPS,
};
use crate::id::SessionKey;
use crate::record::SessionRecord;

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

/// The format byte of records written by this version.
const FORMAT_V1: u8 = 1;
/// TTLs are clamped to this (100 years), so that Redis accepts every `PEXPIRE` and Lua's
/// doubles stay exact.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// How many index entries a script checks for existence (those with the earliest
/// deadlines): the cheap writes, `login` (whose eviction victims come from these entries
/// too) and, on top of its limit, `user_sessions`. It bounds their work, whatever the size of
/// the index.
const INDEX_SCAN: usize = 64;
/// How many guests one guest `create` evicts at most, to bring the guest set under the cap.
/// One suffices in the steady state; more let the set shrink after the cap was lowered.
const GUEST_EVICT: usize = 8;
/// Per-list bound of `user_sessions` (a larger limit is clamped to this).
const MAX_LIST: usize = 100_000;
/// Stripes of the near-cache's fill guard (see [`NearCache`]).
const STRIPES: usize = 64;
/// How long a (re)subscription may take before it is retried.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the watcher re-checks its connection flags against fred's state.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// The pause between two failed (re)subscriptions.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);
/// How many messages the subscriber buffers before it counts as lagging (and clears).
const MESSAGE_BUFFER: usize = 4096;

// ----- errors -----

/// What can go wrong in the [`RedisStore`]. The store returns it inside a [`StoreError`]
/// (see [`StoreError`]'s `source`), and [`RedisStoreBuilder::build`] for configuration and
/// connection problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The configuration is not usable (a malformed URL, a prefix without a hash tag on a
    /// cluster, ...).
    #[error("invalid Redis store configuration: {0}")]
    Config(String),
    /// Redis could not be reached, timed out, or answered with an error.
    #[error("redis: {0}")]
    Redis(#[source] Box<dyn StdError + Send + Sync + 'static>),
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
            e => StoreError::new(e),
        }
    }
}

impl RedisStoreError {
    /// Whether Redis refused a write for lack of memory (`OOM command not allowed ...`).
    fn is_oom(&self) -> bool {
        match self {
            RedisStoreError::Redis(e) => e
                .downcast_ref::<FredError>()
                .is_some_and(|e| e.details().starts_with("OOM")),
            _ => false,
        }
    }
}

// ----- the record blob -----

pub(crate) fn encode(record: &SessionRecord) -> Result<Vec<u8>, RedisStoreError> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_V1);
    rmp_serde::encode::write_named(&mut out, record)
        .map_err(|e| RedisStoreError::Encode(e.to_string()))?;
    Ok(out)
}

pub(crate) fn decode(blob: &[u8]) -> Result<SessionRecord, RedisStoreError> {
    match blob.split_first() {
        Some((&FORMAT_V1, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| RedisStoreError::Decode(e.to_string()))
        }
        Some((&other, _)) => Err(RedisStoreError::UnknownFormat(other)),
        None => Err(RedisStoreError::Decode("empty record".into())),
    }
}

pub(crate) fn parse_hex_key(hex: &[u8]) -> Option<SessionKey> {
    SessionKey::from_hex(hex)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ttl_ms(ttl: Duration) -> String {
    millis(ttl).clamp(1, MAX_TTL_MS).to_string()
}

fn created_ms(record: &SessionRecord) -> String {
    record
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
        .to_string()
}

// ----- Lua -----

/// Constants every script starts with, from the Rust ones (so the two cannot disagree).
fn lua_prelude() -> String {
    format!(
        "local FORWARD_TTL = '{}'\nlocal MAX_FORWARD_HOPS = {}\nlocal GUEST_EVICT = {}\n",
        millis(FORWARD_TTL),
        MAX_FORWARD_HOPS,
        GUEST_EVICT
    )
}

/// Helpers shared by every script. Key names are computed from the prefix in Lua; on a
/// cluster that is legal because every key of the store carries the prefix's hash tag.
const LUA_COMMON: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%.0f', n) end
local function inval(prefix, instance, key)
  redis.call('PUBLISH', prefix .. 'inval', instance .. ':' .. string.sub(key, #prefix + 3))
end
-- Fails the script with Redis's OOM error when Redis is at maxmemory under noeviction.
-- Redis checks memory only at the first write of a script (later ones go through, so that
-- the script stays atomic) and only for commands that may grow memory, which the first
-- writes here (DEL, ZREM, ZREMRANGEBYSCORE) are not: so a script that adds a session calls
-- this first. ZADD is checked; with XX and a member that never exists it changes nothing.
local function deny_if_oom(zkey)
  redis.call('ZADD', zkey, 'XX', '0', '')
end
-- Drops entries past their deadline, then checks the first `stop`+1 entries (all for -1)
-- for a record that still exists; returns the checked entries that are live.
local function prune(idx, now, stop)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', fmt(now))
  local live = {}
  for _, m in ipairs(redis.call('ZRANGE', idx, 0, stop)) do
    if redis.call('EXISTS', m) == 1 then
      live[#live + 1] = m
    else
      redis.call('ZREM', idx, m)
    end
  end
  return live
end
-- The index lives as long as its longest-lived session.
local function index_expiry(idx)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', idx, fmt(tonumber(top[2]))) end
end
local function index_add(idx, key, now, ttl, stop)
  prune(idx, now, stop)
  redis.call('ZADD', idx, 'GT', fmt(now + tonumber(ttl)), key)
  index_expiry(idx)
end
local function index_remove(prefix, key, user)
  if user and user ~= '' then redis.call('ZREM', prefix .. 'u:' .. user, key) end
end
-- The guest set: the key names of guest records, scored by their expiry deadlines like an
-- index, and living as long as its longest-lived guest.
local function guests_key(prefix) return prefix .. 'guests' end
local function guest_add(prefix, key, deadline)
  local guests = guests_key(prefix)
  redis.call('ZADD', guests, 'GT', fmt(deadline), key)
  index_expiry(guests)
end
local function guest_remove(prefix, key)
  redis.call('ZREM', guests_key(prefix), key)
end
local function write(key, version, blob, user, created, ttl)
  redis.call('DEL', key)
  if user ~= '' then
    redis.call('HSET', key, 'v', version, 'd', blob, 'c', created, 'u', user)
  else
    redis.call('HSET', key, 'v', version, 'd', blob, 'c', created)
  end
  redis.call('PEXPIRE', key, ttl)
end
-- Leaves `old` (rotated away) as a forwarding entry to `new` for FORWARD_TTL ms: only the
-- field `f`, so that loads find no record and compare-and-set writes find no version.
local function forward(old, new)
  redis.call('DEL', old)
  redis.call('HSET', old, 'f', new)
  redis.call('PEXPIRE', old, FORWARD_TTL)
end
"#;

/// KEYS: key, [index]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
/// guest capacity. Returns {1, evicted guest keys...} (applied) or {0} (the key exists).
///
/// A guest first drops the guest set's expired entries (by score), then, if the set is at
/// the capacity, evicts the guests with the earliest deadlines (at most `GUEST_EVICT`):
/// record, set entry and an invalidation message each. Never a logged-in session.
const LUA_CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local now = now_ms()
local result = {1}
if ARGV[6] ~= '' then
  deny_if_oom(KEYS[2])
  write(KEYS[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[3])
  index_add(KEYS[2], KEYS[1], now, ARGV[3], tonumber(ARGV[8]))
  return result
end
local guests = guests_key(ARGV[1])
deny_if_oom(guests)
redis.call('ZREMRANGEBYSCORE', guests, '-inf', fmt(now))
local over = redis.call('ZCARD', guests) - tonumber(ARGV[9]) + 1
if over > 0 then
  for _, m in ipairs(redis.call('ZRANGE', guests, 0, math.min(over, GUEST_EVICT) - 1)) do
    redis.call('ZREM', guests, m)
    if redis.call('HEXISTS', m, 'u') == 0 and redis.call('DEL', m) == 1 then
      inval(ARGV[1], ARGV[2], m)
      result[#result + 1] = m
    end
  end
end
write(KEYS[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[3])
guest_add(ARGV[1], KEYS[1], now + tonumber(ARGV[3]))
return result
"#;

/// KEYS: key, [index]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
/// expected. A guest's deadline in the guest set follows its record's, like an index entry.
const LUA_UPDATE: &str = r#"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[9] then return 0 end
local previous = redis.call('HGET', KEYS[1], 'u')
write(KEYS[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[3])
if previous and previous ~= ARGV[6] then index_remove(ARGV[1], KEYS[1], previous) end
local now = now_ms()
if ARGV[6] ~= '' then
  if not previous then guest_remove(ARGV[1], KEYS[1]) end
  index_add(KEYS[2], KEYS[1], now, ARGV[3], tonumber(ARGV[8]))
else
  guest_add(ARGV[1], KEYS[1], now + tonumber(ARGV[3]))
end
inval(ARGV[1], ARGV[2], KEYS[1])
return 1
"#;

/// KEYS: old, new, [index]. ARGV: prefix, instance, ttl, version, blob, user, created,
/// scan, expected. The old key is left forwarding to the new one for `FORWARD_TTL`, and
/// leaves its index or the guest set; the new key joins its index or the guest set.
const LUA_ROTATE: &str = r#"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[9] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local previous = redis.call('HGET', KEYS[1], 'u')
write(KEYS[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[3])
forward(KEYS[1], KEYS[2])
if previous then
  index_remove(ARGV[1], KEYS[1], previous)
else
  guest_remove(ARGV[1], KEYS[1])
end
local now = now_ms()
if ARGV[6] ~= '' then
  index_add(KEYS[3], KEYS[2], now, ARGV[3], tonumber(ARGV[8]))
else
  guest_add(ARGV[1], KEYS[2], now + tonumber(ARGV[3]))
end
inval(ARGV[1], ARGV[2], KEYS[1])
return 1
"#;

/// KEYS: key. ARGV: prefix, instance. Removes the key and, while what it removed was a
/// forwarding entry, the key that entry names (at most `MAX_FORWARD_HOPS` hops), up to and
/// including the live record reached, with its index or guest-set entry. Publishes for the
/// given key even if it is missing (a delete is usually a revocation, and a message costs
/// nothing inside the script) and for every other key removed. Returns {1 if a live record
/// was removed, else 0; then the keys removed other than the given one}.
const LUA_DELETE: &str = r#"
local prefix = ARGV[1]
local records = prefix .. 's:'
local key, out = KEYS[1], {0}
for hop = 0, MAX_FORWARD_HOPS do
  local h = redis.call('HMGET', key, 'v', 'u', 'f')
  local removed = redis.call('DEL', key) == 1
  if hop == 0 or removed then inval(prefix, ARGV[2], key) end
  if hop > 0 and removed then out[#out + 1] = key end
  if h[1] then
    if h[2] then index_remove(prefix, key, h[2]) else guest_remove(prefix, key) end
    out[1] = 1
    break
  end
  local f = h[3]
  if not f or string.sub(f, 1, #records) ~= records then break end
  key = f
end
return out
"#;

/// KEYS: new, index, [old]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
/// limit max ('' for none), policy ('evict', 'reject' or ''), expected version of old.
/// Returns {1, evicted keys...} (applied), {0} (conflict) or {2} (limit reached).
///
/// Bounded work, whatever the size of the index: entries past their deadline go by score;
/// the first `scan`+1 entries (the earliest deadlines) are checked for a record, and are the
/// only candidates for `EvictOldest` (oldest creation first); the user's sessions are counted
/// with ZCARD (the scripts remove the entries of records they end). So an index over the
/// limit by more than a window shrinks by up to a window per login. The old key, if any, is
/// left forwarding to the new one.
const LUA_LOGIN: &str = r#"
local new, idx, old = KEYS[1], KEYS[2], KEYS[3]
deny_if_oom(idx)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', idx, '-inf', fmt(now))
local candidates = {}
for _, m in ipairs(redis.call('ZRANGE', idx, 0, tonumber(ARGV[8]))) do
  local c = redis.call('HGET', m, 'c')
  if not c then
    redis.call('ZREM', idx, m)
  elseif m ~= old and m ~= new then
    candidates[#candidates + 1] = {tonumber(c) or 0, m}
  end
end
local others = redis.call('ZCARD', idx)
if old and redis.call('ZSCORE', idx, old) then others = others - 1 end
if redis.call('ZSCORE', idx, new) then others = others - 1 end
local max = tonumber(ARGV[9])
local policy = ARGV[10]
if max and policy == 'reject' and others >= max then return {2} end
if old and redis.call('HGET', old, 'v') ~= ARGV[11] then return {0} end
if redis.call('EXISTS', new) == 1 then return {0} end
write(new, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[3])
if old then
  local previous = redis.call('HGET', old, 'u')
  forward(old, new)
  if previous then index_remove(ARGV[1], old, previous) else guest_remove(ARGV[1], old) end
  inval(ARGV[1], ARGV[2], old)
end
redis.call('ZADD', idx, 'GT', fmt(now + tonumber(ARGV[3])), new)
local result = {1}
if max and policy == 'evict' then
  local excess = math.min(others + 1 - math.max(max, 1), #candidates)
  if excess > 0 then
    table.sort(candidates, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    for i = 1, excess do
      local m = candidates[i][2]
      redis.call('DEL', m)
      redis.call('ZREM', idx, m)
      inval(ARGV[1], ARGV[2], m)
      result[#result + 1] = m
    end
  end
end
index_expiry(idx)
return result
"#;

/// KEYS: index. ARGV: limit, scan. Returns {key, blob, key, blob, ...} of at most `limit`
/// live sessions, those with the earliest deadlines, after examining at most `limit` +
/// `scan` entries (the entries without a record among them are dropped).
const LUA_USER_SESSIONS: &str = r#"
local idx = KEYS[1]
redis.call('ZREMRANGEBYSCORE', idx, '-inf', fmt(now_ms()))
local limit = tonumber(ARGV[1])
local out, found = {}, 0
for _, m in ipairs(redis.call('ZRANGE', idx, 0, limit + tonumber(ARGV[2]) - 1)) do
  if found >= limit then break end
  local d = redis.call('HGET', m, 'd')
  if d then
    out[#out + 1] = m
    out[#out + 1] = d
    found = found + 1
  else
    redis.call('ZREM', idx, m)
  end
end
index_expiry(idx)
return out
"#;

/// One script: its full text and its SHA-1 as `SCRIPT LOAD` returned it.
#[derive(Debug)]
struct Script {
    body: String,
    sha: String,
}

#[derive(Debug)]
struct Scripts {
    create: Script,
    update: Script,
    rotate: Script,
    delete: Script,
    login: Script,
    user_sessions: Script,
}

// ----- the near-cache -----

/// What a fill must see unchanged to be allowed: the clear epoch and its key's stripe.
type Stamp = (u64, u64);

/// The bounded near-cache, and the guard that keeps a slow fill from re-inserting what an
/// invalidation just removed: every invalidation bumps its key's stripe counter, every
/// clear bumps the epoch, and a fill is applied only if neither moved since before its read
/// (and is undone if one moved while it was being inserted).
struct NearCache {
    cache: Option<Cache<SessionKey, Arc<SessionRecord>>>,
    epoch: AtomicU64,
    stripes: [AtomicU64; STRIPES],
    hits: AtomicU64,
    misses: AtomicU64,
}

impl NearCache {
    fn new(ttl: Duration, capacity: u64) -> Self {
        let cache = (!ttl.is_zero() && capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        NearCache {
            cache,
            epoch: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn stripe(key: &SessionKey) -> usize {
        usize::from(key.as_bytes()[0]) % STRIPES
    }

    fn stamp(&self, key: &SessionKey) -> Stamp {
        (
            self.epoch.load(Ordering::SeqCst),
            self.stripes[Self::stripe(key)].load(Ordering::SeqCst),
        )
    }

    fn get(&self, key: &SessionKey) -> Option<Arc<SessionRecord>> {
        self.cache.as_ref()?.get(key)
    }

    /// Drops one entry and fences off fills that read before now.
    fn invalidate(&self, key: &SessionKey) {
        self.stripes[Self::stripe(key)].fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.invalidate(key);
        }
    }

    /// Drops everything and fences off every fill that read before now.
    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    /// Inserts `record` unless an invalidation happened since `stamp` or a newer version of
    /// it is cached.
    fn fill(&self, key: SessionKey, record: Arc<SessionRecord>, stamp: Stamp) {
        let Some(cache) = &self.cache else {
            return;
        };
        if self.stamp(&key) != stamp {
            return;
        }
        let version = record.version;
        let _ = cache
            .entry(key)
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().version >= version => Op::Nop,
                _ => Op::Put(record),
            });
        if self.stamp(&key) != stamp {
            cache.invalidate(&key);
        }
    }
}

/// Near-cache counters, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Loads served from the near-cache (no round trip).
    pub hits: u64,
    /// Loads that went to Redis (near-cache miss, or near-cache bypassed).
    pub misses: u64,
}

// ----- configuration -----

#[derive(Debug, Clone)]
enum Target {
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
}

impl RedisStoreBuilder {
    fn new(target: Target) -> Self {
        RedisStoreBuilder {
            target,
            prefix: DEFAULT_PREFIX.to_owned(),
            near_cache_ttl: DEFAULT_NEAR_CACHE_TTL,
            near_cache_capacity: DEFAULT_NEAR_CACHE_CAPACITY,
            guest_capacity: DEFAULT_GUEST_CAPACITY,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
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
    /// (default [`DEFAULT_GUEST_CAPACITY`], 50 000, about 40 MB; at least 1). A new guest
    /// beyond it evicts the guests that would expire first, that is the least recently
    /// active ones, on every instance; logged-in sessions are never evicted to make room for
    /// a guest. The count is shared by every store with the same prefix, so give them the
    /// same capacity.
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

    fn fred_config(&self) -> Result<FredConfig, RedisStoreError> {
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
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        Ok(self.build_inner().await?)
    }

    async fn build_inner(self) -> Result<RedisStore, RedisStoreError> {
        let config = self.fred_config()?;
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
        let mut events = Events {
            main_errors: client.error_rx(),
            main_reconnects: client.reconnect_rx(),
            sub_errors: subscriber.error_rx(),
            sub_reconnects: subscriber.reconnect_rx(),
            messages: subscriber.message_rx(),
        };
        let mut tasks = Vec::new();
        tasks.push(client.init().await?.abort_handle());
        match subscriber.init().await {
            Ok(task) => tasks.push(task.abort_handle()),
            Err(e) => {
                abort_all(&tasks);
                return Err(e.into());
            }
        }

        let channel = format!("{}inval", self.prefix);
        let loaded = async {
            subscribe(&subscriber, &channel).await?;
            load_scripts(&client).await
        }
        .await;
        let scripts = match loaded {
            Ok(s) => s,
            Err(e) => {
                abort_all(&tasks);
                return Err(e);
            }
        };

        // The events so far are those of the first connections, which are in place now:
        // dropping them saves a needless clear and resubscription. Any error among them,
        // though, means a connection dropped meanwhile: then start from "not ready".
        let disturbed = drain(&mut events.main_errors) + drain(&mut events.sub_errors) > 0;
        drain(&mut events.main_reconnects);
        drain(&mut events.sub_reconnects);

        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let inner = Arc::new(Inner {
            cmd: client.with_options(&options),
            client,
            subscriber,
            prefix: self.prefix,
            guest_capacity: self.guest_capacity.to_string(),
            channel,
            instance,
            scripts,
            near: NearCache::new(self.near_cache_ttl, self.near_cache_capacity),
            main_up: AtomicBool::new(true),
            sub_ready: AtomicBool::new(!disturbed),
            tasks: Mutex::new(tasks),
        });
        let watcher = tokio::spawn(watch(Arc::downgrade(&inner), events, disturbed));
        inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(watcher.abort_handle());
        Ok(RedisStore { inner })
    }
}

/// Rewrites `redis-cluster://a:1,b:2,c:3/...` into fred's form
/// `redis-cluster://a:1?node=b:2&node=c:3`; other URLs pass unchanged.
fn cluster_url(url: &str) -> String {
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
fn has_hash_tag(prefix: &str) -> bool {
    prefix
        .find('{')
        .and_then(|open| prefix[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// Discards the pending events of `rx`; returns how many there were.
fn drain<T: Clone>(rx: &mut tokio::sync::broadcast::Receiver<T>) -> usize {
    let mut n = 0;
    loop {
        match rx.try_recv() {
            Ok(_) => n += 1,
            Err(TryRecvError::Lagged(missed)) => {
                n += usize::try_from(missed).unwrap_or(usize::MAX);
            }
            Err(_) => return n,
        }
    }
}

fn abort_all(tasks: &[AbortHandle]) {
    for t in tasks {
        t.abort();
    }
}

async fn subscribe(subscriber: &SubscriberClient, channel: &str) -> Result<(), RedisStoreError> {
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscriber.subscribe(channel)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisStoreError::Redis("SUBSCRIBE timed out".into())),
    }
}

async fn load_scripts(client: &Client) -> Result<Scripts, RedisStoreError> {
    let prelude = lua_prelude();
    let load = |body: &str| {
        let body = format!("{prelude}{LUA_COMMON}{body}");
        async move {
            // On a cluster this loads the script on every primary; the answer is its SHA-1.
            let sha: String = client.script_load_cluster(body.clone()).await?;
            Ok::<_, RedisStoreError>(Script { body, sha })
        }
    };
    Ok(Scripts {
        create: load(LUA_CREATE).await?,
        update: load(LUA_UPDATE).await?,
        rotate: load(LUA_ROTATE).await?,
        delete: load(LUA_DELETE).await?,
        login: load(LUA_LOGIN).await?,
        user_sessions: load(LUA_USER_SESSIONS).await?,
    })
}

// ----- the store -----

/// Sessions in Redis behind a coherent moka near-cache; see the [module docs](self) for the
/// layout, the guarantees and the round trips. Cheap to clone; clones share connections and
/// near-cache.
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
    inner: Arc<Inner>,
}

struct Inner {
    /// The main connection, with fail-fast options for every command.
    cmd: WithOptions<Client>,
    client: Client,
    subscriber: SubscriberClient,
    prefix: String,
    /// [`RedisStoreBuilder::guest_capacity`], as the create script takes it.
    guest_capacity: String,
    channel: String,
    /// Random per store: names this store in its invalidation messages.
    instance: String,
    scripts: Scripts,
    near: NearCache,
    /// The main connection is up (cleared by its error events, set by its reconnections).
    main_up: AtomicBool,
    /// The subscriber is connected and subscribed since its latest connection.
    sub_ready: AtomicBool,
    /// fred's connection tasks and the watcher, aborted when the store is dropped.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        abort_all(&self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("instance", &self.inner.instance)
            .field("near_cache", &self.near_cache_stats())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects with every default: `redis://host:port[/db]` for one node,
    /// `redis-cluster://host:port,host:port` for a cluster (credentials as usual in the URL).
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        Self::builder(url).build().await
    }

    /// Starts a configuration for `url` (see [`connect`](Self::connect) for the forms).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Url(url.into()))
    }

    /// The near-cache counters since the store was built.
    pub fn near_cache_stats(&self) -> NearCacheStats {
        NearCacheStats {
            hits: self.inner.near.hits.load(Ordering::Relaxed),
            misses: self.inner.near.misses.load(Ordering::Relaxed),
        }
    }

    /// Whether loads may be served from the near-cache right now: both connections are up
    /// and the invalidation channel is subscribed.
    pub fn near_cache_active(&self) -> bool {
        self.inner.near.cache.is_some() && self.inner.coherent()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// This store's instance id, as its invalidation messages carry it.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }
}

impl Inner {
    fn record_key(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.prefix, key.to_hex())
    }

    fn index_key(&self, user_id: &str) -> String {
        format!("{}u:{user_id}", self.prefix)
    }

    fn key_of(&self, name: &[u8]) -> Result<SessionKey, RedisStoreError> {
        let prefix = format!("{}s:", self.prefix);
        name.strip_prefix(prefix.as_bytes())
            .and_then(parse_hex_key)
            .ok_or_else(|| {
                RedisStoreError::Reply(format!(
                    "not a session key: {:?}",
                    String::from_utf8_lossy(name)
                ))
            })
    }

    fn coherent(&self) -> bool {
        self.main_up.load(Ordering::SeqCst)
            && self.sub_ready.load(Ordering::SeqCst)
            && self.client.is_connected()
            && self.subscriber.is_connected()
    }

    /// The stamp for a fill, or `None` if the near-cache must not be used now (in which case
    /// it is cleared: nothing from before an outage may survive it).
    fn usable_stamp(&self, key: &SessionKey) -> Option<Stamp> {
        self.near.cache.as_ref()?;
        if self.coherent() {
            Some(self.near.stamp(key))
        } else {
            self.near.clear();
            None
        }
    }

    /// Fails at once while the main connection is known to be down. fred itself only fails
    /// fast once its first reconnection attempt has begun; before that (its first backoff
    /// delay) a command would wait for the timeout instead.
    fn ensure_up(&self) -> Result<(), RedisStoreError> {
        if self.main_up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(RedisStoreError::Redis(
                "the connection to Redis is down (reconnecting)".into(),
            ))
        }
    }

    async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, RedisStoreError> {
        self.ensure_up()?;
        let result: Result<Value, FredError> = self
            .cmd
            .evalsha(script.sha.as_str(), keys.clone(), args.clone())
            .await;
        match result {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                // Redis restarted or flushed its script cache: EVAL runs and caches it again.
                Ok(self.cmd.eval(script.body.as_str(), keys, args).await?)
            }
            other => Ok(other?),
        }
    }

    /// The arguments every write script starts with: prefix, instance, ttl, version, blob,
    /// user, created, scan.
    fn write_args(
        &self,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(Vec<Value>, Option<String>), RedisStoreError> {
        let blob = encode(record)?;
        let user = record.identity.as_ref().map(|i| i.user_id.clone());
        let args = vec![
            Value::from(self.prefix.as_str()),
            Value::from(self.instance.as_str()),
            Value::from(ttl_ms(ttl)),
            Value::from(record.version.to_string()),
            Value::from(blob.as_slice()),
            Value::from(user.clone().unwrap_or_default()),
            Value::from(created_ms(record)),
            Value::from((INDEX_SCAN - 1).to_string()),
        ];
        Ok((args, user))
    }

    /// A near-cache hit, if the near-cache may be used now.
    fn load_cached(&self, key: &SessionKey) -> Option<Arc<SessionRecord>> {
        self.usable_stamp(key)?;
        let hit = self.near.get(key)?;
        self.near.hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, RedisStoreError> {
        if let Some(hit) = self.load_cached(&key) {
            return Ok(Some(hit));
        }
        let stamp = self.usable_stamp(&key);
        self.near.misses.fetch_add(1, Ordering::Relaxed);
        self.ensure_up()?;
        let reply: Value = self.cmd.hget(self.record_key(&key), "d").await?;
        if reply.is_null() {
            return Ok(None);
        }
        let blob = reply
            .as_bytes()
            .ok_or_else(|| RedisStoreError::Reply(format!("HGET answered {:?}", reply.kind())))?;
        let record = Arc::new(decode(blob)?);
        if let (Some(stamp), true) = (stamp, self.coherent()) {
            self.near.fill(key, record.clone(), stamp);
        }
        Ok(Some(record))
    }

    /// After a write: on success the new record is cached (if the near-cache may be used and
    /// nothing invalidated it meanwhile); on a conflict or an error the entry is dropped, so
    /// that the layer's re-read goes to Redis.
    fn settle(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        stamp: Option<Stamp>,
        applied: bool,
    ) {
        match stamp {
            Some(stamp) if applied && self.coherent() => self.near.fill(key, record, stamp),
            Some(_) if applied => self.near.clear(),
            _ => self.near.invalidate(&key),
        }
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, RedisStoreError> {
        let (mut args, user) = self.write_args(&record, ttl)?;
        args.push(Value::from(self.guest_capacity.as_str()));
        let guest = user.is_none();
        let mut keys = vec![self.record_key(&key)];
        keys.extend(user.map(|u| self.index_key(&u)));
        let stamp = self.usable_stamp(&key);
        let result = match self.eval(&self.scripts.create, keys, args).await {
            // Redis is full (noeviction): no room for a guest, which is not an outage.
            Err(e) if guest && e.is_oom() => Err(RedisStoreError::Full(Box::new(e))),
            other => other,
        };
        let write = result.and_then(|reply| {
            let (ok, evicted) = self.applied_and_keys(reply)?;
            // Other instances drop them on the messages; this one ignores its own.
            for gone in &evicted {
                self.near.invalidate(gone);
            }
            Ok(applied(ok))
        });
        self.settle(
            key,
            record,
            stamp,
            matches!(write, Ok(WriteOutcome::Applied)),
        );
        write
    }

    /// A `{0 or 1, key names...}` reply: the flag and the keys.
    fn applied_and_keys(&self, reply: Value) -> Result<(bool, Vec<SessionKey>), RedisStoreError> {
        let mut items = reply.into_array().into_iter();
        let ok = match items.next() {
            Some(first) => flag(&first)?,
            None => return Err(RedisStoreError::Reply("empty reply".into())),
        };
        let keys = items
            .map(|v| {
                v.as_bytes()
                    .ok_or_else(|| RedisStoreError::Reply(format!("{v:?}")))
                    .and_then(|name| self.key_of(name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((ok, keys))
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, RedisStoreError> {
        let (mut args, user) = self.write_args(&record, ttl)?;
        args.push(Value::from(expected.to_string()));
        let mut keys = vec![self.record_key(&key)];
        keys.extend(user.map(|u| self.index_key(&u)));
        let stamp = self.usable_stamp(&key);
        let result = self.eval(&self.scripts.update, keys, args).await;
        let write = result.and_then(|v| flag(&v)).map(applied);
        self.settle(
            key,
            record,
            stamp,
            matches!(write, Ok(WriteOutcome::Applied)),
        );
        write
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, RedisStoreError> {
        let (mut args, user) = self.write_args(&record, ttl)?;
        args.push(Value::from(expected.to_string()));
        let mut keys = vec![self.record_key(&old), self.record_key(&new)];
        keys.extend(user.map(|u| self.index_key(&u)));
        let stamp = self.usable_stamp(&new);
        let result = self.eval(&self.scripts.rotate, keys, args).await;
        let write = result.and_then(|v| flag(&v)).map(applied);
        // The old key is gone (or changed meanwhile): either way, not cached any more.
        self.near.invalidate(&old);
        self.settle(
            new,
            record,
            stamp,
            matches!(write, Ok(WriteOutcome::Applied)),
        );
        write
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, RedisStoreError> {
        self.near.invalidate(&key);
        let args = vec![
            Value::from(self.prefix.as_str()),
            Value::from(self.instance.as_str()),
        ];
        let result = self
            .eval(&self.scripts.delete, vec![self.record_key(&key)], args)
            .await;
        // Again after the script, in case a fill raced with it.
        self.near.invalidate(&key);
        let (live, followed) = self.applied_and_keys(result?)?;
        // The keys it forwarded to (this instance ignores its own messages).
        for gone in &followed {
            self.near.invalidate(gone);
        }
        Ok(live)
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, RedisStoreError> {
        let (mut args, user) = self.write_args(&record, ttl)?;
        let (max, policy) = match limit {
            Some(SessionLimit { max, policy }) => (
                max.to_string(),
                match policy {
                    LimitPolicy::EvictOldest => "evict",
                    LimitPolicy::RejectNew => "reject",
                },
            ),
            None => (String::new(), ""),
        };
        args.push(Value::from(max));
        args.push(Value::from(policy));
        args.push(Value::from(
            old.map(|(_, v)| v.to_string()).unwrap_or_default(),
        ));
        let user = user.unwrap_or_default();
        let mut keys = vec![self.record_key(&new), self.index_key(&user)];
        keys.extend(old.map(|(k, _)| self.record_key(&k)));
        let stamp = self.usable_stamp(&new);
        let result = self.eval(&self.scripts.login, keys, args).await;
        if let Some((old, _)) = old {
            self.near.invalidate(&old);
        }
        let outcome = result.and_then(|v| self.login_outcome(v));
        if let Ok(LoginOutcome::Applied { evicted }) = &outcome {
            for key in evicted {
                self.near.invalidate(key);
            }
        }
        let ok = matches!(outcome, Ok(LoginOutcome::Applied { .. }));
        self.settle(new, record, stamp, ok);
        outcome
    }

    fn login_outcome(&self, reply: Value) -> Result<LoginOutcome, RedisStoreError> {
        let mut items = reply.into_array().into_iter();
        match items.next().and_then(|v| v.as_i64()) {
            Some(1) => {
                let evicted = items
                    .map(|v| {
                        v.as_bytes()
                            .ok_or_else(|| RedisStoreError::Reply(format!("{v:?}")))
                            .and_then(|name| self.key_of(name))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(LoginOutcome::Applied { evicted })
            }
            Some(0) => Ok(LoginOutcome::Conflict),
            Some(2) => Ok(LoginOutcome::LimitReached),
            other => Err(RedisStoreError::Reply(format!("login answered {other:?}"))),
        }
    }

    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, RedisStoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let args = vec![
            Value::from(limit.min(MAX_LIST).to_string()),
            Value::from(INDEX_SCAN.to_string()),
        ];
        let reply = self
            .eval(
                &self.scripts.user_sessions,
                vec![self.index_key(user_id)],
                args,
            )
            .await?;
        let items = reply.into_array();
        let mut out = Vec::with_capacity(items.len() / 2);
        for pair in items.chunks_exact(2) {
            let (Some(name), Some(blob)) = (pair[0].as_bytes(), pair[1].as_bytes()) else {
                return Err(RedisStoreError::Reply("user_sessions: not a string".into()));
            };
            let key = self.key_of(name)?;
            let record = decode(blob)?;
            if record
                .identity
                .as_ref()
                .is_some_and(|i| i.user_id == user_id)
            {
                out.push((key, Arc::new(record)));
            }
        }
        out.sort_by_key(|(_, r)| r.created_at);
        Ok(out)
    }
}

fn flag(reply: &Value) -> Result<bool, RedisStoreError> {
    match reply.as_i64() {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(RedisStoreError::Reply(format!("{reply:?}"))),
    }
}

fn applied(ok: bool) -> WriteOutcome {
    if ok {
        WriteOutcome::Applied
    } else {
        WriteOutcome::Conflict
    }
}

// ----- the watcher: connection events and invalidation messages -----

struct Events {
    main_errors: tokio::sync::broadcast::Receiver<(FredError, Option<Server>)>,
    main_reconnects: tokio::sync::broadcast::Receiver<Server>,
    sub_errors: tokio::sync::broadcast::Receiver<(FredError, Option<Server>)>,
    sub_reconnects: tokio::sync::broadcast::Receiver<Server>,
    messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
}

/// Applies connection events and invalidation messages to the near-cache until the store is
/// dropped (or fred closes the streams).
///
/// Error events are handled before reconnection events (`biased`), so that an error and
/// the reconnection that followed it, when both are pending, leave the connection marked
/// up. A slow tick re-checks the flags against fred's own state, as a safety net.
async fn watch(store: Weak<Inner>, mut ev: Events, mut resubscribe: bool) {
    // `resubscribe` is set while the subscriber is connected but not (yet) subscribed again.
    let mut tick = tokio::time::interval(WATCH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let retry = async {
            if resubscribe {
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            e = ev.main_errors.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                s.main_up.store(false, Ordering::SeqCst);
                s.near.clear();
            }
            e = ev.sub_errors.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                s.sub_ready.store(false, Ordering::SeqCst);
                s.near.clear();
            }
            e = ev.main_reconnects.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                s.near.clear();
                s.main_up.store(true, Ordering::SeqCst);
            }
            e = ev.sub_reconnects.recv() => {
                if matches!(e, Err(RecvError::Closed)) { return; }
                let Some(s) = store.upgrade() else { return };
                s.sub_ready.store(false, Ordering::SeqCst);
                s.near.clear();
                resubscribe = true;
            }
            m = ev.messages.recv() => {
                let Some(s) = store.upgrade() else { return };
                match m {
                    Ok(message) => s.apply(&message),
                    // Messages were dropped: anything may be stale.
                    Err(RecvError::Lagged(_)) => s.near.clear(),
                    Err(RecvError::Closed) => return,
                }
            }
            () = retry => {}
            _ = tick.tick() => {
                let Some(s) = store.upgrade() else { return };
                // An event lost or handled out of order must not leave a flag wrong for good.
                if !s.main_up.load(Ordering::SeqCst) && s.client.is_connected() {
                    s.near.clear();
                    s.main_up.store(true, Ordering::SeqCst);
                }
                if !s.sub_ready.load(Ordering::SeqCst) && s.subscriber.is_connected() {
                    resubscribe = true;
                }
            }
        }
        if resubscribe {
            let Some(s) = store.upgrade() else { return };
            if subscribe(&s.subscriber, &s.channel).await.is_ok() {
                // Messages published while unsubscribed are lost: start from empty.
                s.near.clear();
                s.sub_ready.store(true, Ordering::SeqCst);
                resubscribe = false;
            }
        }
    }
}

impl Inner {
    fn apply(&self, message: &fred::types::Message) {
        if *message.channel != *self.channel {
            return;
        }
        let Some(text) = message.value.as_bytes() else {
            return self.near.clear();
        };
        let Some(colon) = text.iter().position(|b| *b == b':') else {
            return self.near.clear();
        };
        let (instance, hex) = (&text[..colon], &text[colon + 1..]);
        if instance == self.instance.as_bytes() {
            return; // our own write: already applied locally
        }
        match parse_hex_key(hex) {
            Some(key) => self.near.invalidate(&key),
            None => self.near.clear(),
        }
    }
}

impl SessionStore for RedisStore {
    /// A near-cache hit answers at once (0 round trips); anything else goes to Redis.
    fn load_now(&self, key: SessionKey) -> Option<Result<Option<Arc<SessionRecord>>, StoreError>> {
        self.inner.load_cached(&key).map(|hit| Ok(Some(hit)))
    }

    async fn load(&self, key: SessionKey) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(self.inner.load(key).await?)
    }

    async fn create(
        &self,
        key: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        Ok(self.inner.create(key, record, ttl).await?)
    }

    async fn update(
        &self,
        key: SessionKey,
        expected: u64,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        Ok(self.inner.update(key, expected, record, ttl).await?)
    }

    async fn rotate(
        &self,
        old: SessionKey,
        expected: u64,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        Ok(self.inner.rotate(old, expected, new, record, ttl).await?)
    }

    async fn delete(&self, key: SessionKey) -> Result<bool, StoreError> {
        Ok(self.inner.delete(key).await?)
    }

    async fn login(
        &self,
        old: Option<(SessionKey, u64)>,
        new: SessionKey,
        record: Arc<SessionRecord>,
        ttl: Duration,
        limit: Option<SessionLimit>,
    ) -> Result<LoginOutcome, StoreError> {
        Ok(self.inner.login(old, new, record, ttl, limit).await?)
    }

    /// At most `limit` sessions: all of the user's if they are no more (the per-user limit
    /// makes it so), else the `limit` whose deadlines come first. One script examines at
    /// most `limit` + 64 index entries, whatever the size of the index.
    async fn user_sessions(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<(SessionKey, Arc<SessionRecord>)>, StoreError> {
        Ok(self.inner.user_sessions(user_id, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Identity;
    use std::collections::HashMap;
    use std::time::SystemTime;

    #[test]
    fn blobs_round_trip_and_carry_a_format_byte() {
        let mut r = SessionRecord::new(SystemTime::now());
        r.version = 7;
        r.identity = Some(Identity::new("alice").with_roles(["admin"]));
        r.pinned_ip = Some("2001:db8::1".parse().unwrap());
        r.user_agent = Some("curl/8".into());
        r.data = HashMap::from([("n".to_owned(), serde_json::json!({"a": [1, 2.5, null]}))]);
        let blob = encode(&r).unwrap();
        assert_eq!(blob[0], FORMAT_V1);
        assert_eq!(decode(&blob).unwrap(), r);
    }

    #[test]
    fn unknown_formats_and_garbage_fail_closed() {
        let blob = encode(&SessionRecord::new(SystemTime::now())).unwrap();
        let mut newer = blob.clone();
        newer[0] = 2;
        assert!(matches!(
            decode(&newer),
            Err(RedisStoreError::UnknownFormat(2))
        ));
        assert!(matches!(decode(&[]), Err(RedisStoreError::Decode(_))));
        assert!(matches!(
            decode(&[FORMAT_V1, 0xc1, 0xff]),
            Err(RedisStoreError::Decode(_))
        ));
        assert!(matches!(
            decode(&blob[..blob.len() / 2]),
            Err(RedisStoreError::Decode(_))
        ));
    }

    #[test]
    fn cluster_urls_list_seed_nodes() {
        assert_eq!(
            cluster_url("redis-cluster://a:1,b:2,c:3"),
            "redis-cluster://a:1?node=b:2&node=c:3"
        );
        assert_eq!(
            cluster_url("redis-cluster://u:p@a:1,b:2?connection_timeout=5"),
            "redis-cluster://u:p@a:1?node=b:2&connection_timeout=5"
        );
        assert_eq!(cluster_url("redis-cluster://a:1"), "redis-cluster://a:1");
        assert_eq!(cluster_url("redis://a:1/2"), "redis://a:1/2");
        for url in [
            "redis-cluster://a:1,b:2,c:3",
            "redis-cluster://a:1?node=b:2",
        ] {
            let config = FredConfig::from_url(&cluster_url(url)).unwrap();
            assert!(config.server.is_clustered(), "{url}");
        }
    }

    #[test]
    fn cluster_prefixes_need_a_hash_tag() {
        assert!(has_hash_tag("{tsg}:"));
        assert!(has_hash_tag("app:{s}:"));
        assert!(!has_hash_tag("tsg:"));
        assert!(!has_hash_tag("{}:"));
        assert!(!has_hash_tag("}{:"));
        let builder = RedisStore::builder("redis-cluster://127.0.0.1:7000").prefix("plain:");
        assert!(matches!(
            builder.fred_config(),
            Err(RedisStoreError::Config(_))
        ));
    }

    #[test]
    fn hex_keys_parse_back() {
        let key = crate::id::SessionToken::generate().key();
        assert_eq!(parse_hex_key(key.to_hex().as_bytes()), Some(key));
        assert_eq!(parse_hex_key(b"zz"), None);
        assert_eq!(parse_hex_key(&[b'g'; 64]), None);
    }

    #[test]
    fn near_cache_fills_lose_to_invalidations() {
        let near = NearCache::new(Duration::from_secs(5), 100);
        let key = crate::id::SessionToken::generate().key();
        let rec = |v: u64| {
            let mut r = SessionRecord::new(SystemTime::now());
            r.version = v;
            Arc::new(r)
        };
        let stamp = near.stamp(&key);
        near.invalidate(&key);
        near.fill(key, rec(1), stamp);
        assert!(
            near.get(&key).is_none(),
            "a fill that read before an invalidation"
        );
        let stamp = near.stamp(&key);
        near.clear();
        near.fill(key, rec(1), stamp);
        assert!(near.get(&key).is_none(), "a fill that read before a clear");
        near.fill(key, rec(3), near.stamp(&key));
        near.fill(key, rec(2), near.stamp(&key));
        assert_eq!(near.get(&key).map(|r| r.version), Some(3), "never older");
    }
}
