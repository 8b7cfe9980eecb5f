//! The Lua scripts: every write is one script (atomic, one round trip), loaded once with
//! `SCRIPT LOAD` and called with `EVALSHA`.

use std::time::{Duration, UNIX_EPOCH};

use fred::clients::Client;
use fred::interfaces::LuaInterface;

use super::codec::millis;
use super::RedisStoreError;
use crate::record::SessionRecord;
use crate::store::{FORWARD_TTL, MAX_FORWARD_HOPS};

/// TTLs are clamped to this (100 years), so that Redis accepts every `PEXPIRE` and Lua's
/// doubles stay exact.
pub(super) const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// How many index entries a script checks for existence (those with the earliest
/// deadlines): the cheap writes, `login` (whose eviction victims come from these entries
/// too) and, on top of its limit, `user_sessions`. It bounds their work, whatever the size of
/// the index.
pub(super) const INDEX_SCAN: usize = 64;
/// How many guests one guest `create` evicts at most, to bring the guest set under the cap.
/// One suffices in the steady state; more let the set shrink after the cap was lowered.
pub(super) const GUEST_EVICT: usize = 8;
/// Per-list bound of `user_sessions` (a larger limit is clamped to this).
pub(super) const MAX_LIST: usize = 100_000;

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
pub(super) struct Script {
    pub(super) body: String,
    pub(super) sha: String,
}

#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) update: Script,
    pub(super) rotate: Script,
    pub(super) delete: Script,
    pub(super) login: Script,
    pub(super) user_sessions: Script,
}

pub(super) async fn load_scripts(client: &Client) -> Result<Scripts, RedisStoreError> {
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

pub(super) fn ttl_ms(ttl: Duration) -> String {
    millis(ttl).clamp(1, MAX_TTL_MS).to_string()
}

pub(super) fn created_ms(record: &SessionRecord) -> String {
    record
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
        .to_string()
}
