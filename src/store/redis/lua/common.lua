-- Helpers shared by every script: each script is the prelude that scripts.rs generates
-- from the Rust constants (FORWARD_TTL, MAX_FORWARD_HOPS, GUEST_EVICT), then this file, then
-- the script itself.
--
-- Every key name is a base followed by 's:<64 hex>' (a record), 'u:<user id>' (an index) or
-- 'guests' (a guest set); a base is the prefix ('{tsg}:', tokens without a routing tag) or
-- the prefix with a tag in its hash tag ('{tsg.AbC}:'). The names a script derives from a
-- record key (its index, its guest set) share that key's base, hence its cluster slot, which
-- is what makes deriving them legal on a cluster.
local function base_of(key) return string.sub(key, 1, #key - 66) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%.0f', n) end
local function inval(prefix, instance, key)
  -- the full key name: its base carries the routing tag, part of the key's identity
  redis.call('PUBLISH', prefix .. 'inval', instance .. ':' .. key)
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
  if user and user ~= '' then redis.call('ZREM', base_of(key) .. 'u:' .. user, key) end
end
-- The guest set beside a guest record (one per base: a guest bucket): the key names of
-- guest records, scored by their expiry deadlines like an index, and living as long as its
-- longest-lived guest.
local function guests_key(key) return base_of(key) .. 'guests' end
local function guest_add(prefix, key, deadline)
  local guests = guests_key(key)
  redis.call('ZADD', guests, 'GT', fmt(deadline), key)
  index_expiry(guests)
end
local function guest_remove(prefix, key)
  redis.call('ZREM', guests_key(key), key)
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
-- What the compare-and-set writes (create, update, rotate, login) share. Each answers
-- {status, key names...}: status 1 applied, 0 conflict (login: 2 limit reached), then the
-- keys the script ended besides the ones it was given (evicted guests or sessions).
--
-- The condition of update, rotate and login: `key` holds a record at version `expected`
-- (a missing key or a forwarding entry has no version).
local function at_version(key, expected)
  return redis.call('HGET', key, 'v') == expected
end
-- Lists `key` with its record's deadline (now + ttl): in the user's index `idx` (pruned on
-- the way), or in the guest set for a guest (user '').
local function enlist(prefix, idx, key, user, now, ttl, stop)
  if user ~= '' then
    index_add(idx, key, now, ttl, stop)
  else
    guest_add(prefix, key, now + tonumber(ttl))
  end
end
-- Takes `key` out of its user's index, or out of the guest set if `user` is false (its
-- record had no `u`).
local function unlist(prefix, key, user)
  if user then index_remove(prefix, key, user) else guest_remove(prefix, key) end
end
-- Ends `old` after its session moved to `new` (rotate, login): leaves it forwarding, takes
-- it out of its index or the guest set, and tells the other instances.
local function retire(prefix, instance, old, new)
  local user = redis.call('HGET', old, 'u')
  forward(old, new)
  unlist(prefix, old, user)
  inval(prefix, instance, old)
end
