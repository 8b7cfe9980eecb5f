-- create: writes a record under a key that must not exist. Returns {1, evicted guest
-- keys...} (applied) or {0} (the key exists).
--
-- A guest first drops the guest set's expired entries (by score), then, if the set is at
-- the capacity, evicts the guests with the earliest deadlines (at most `GUEST_EVICT`):
-- record, set entry and an invalidation message each. Never a logged-in session.

-- The arguments, as `CreateArgs::call` (scripts.rs) builds them.
local key = KEYS[1]
local index = KEYS[2] -- only for a logged-in session
local prefix = ARGV[1]
local instance = ARGV[2]
local ttl_ms = ARGV[3]
local version = ARGV[4]
local blob = ARGV[5]
local user = ARGV[6] -- '' for a guest
local created_ms = ARGV[7]
local scan_stop = tonumber(ARGV[8])
local guest_capacity = tonumber(ARGV[9])

if redis.call('EXISTS', key) == 1 then return {0} end
local now = now_ms()
local result = {1}
if user ~= '' then
  deny_if_oom(index)
else
  local guests = guests_key(key)
  deny_if_oom(guests)
  redis.call('ZREMRANGEBYSCORE', guests, '-inf', fmt(now))
  local over = redis.call('ZCARD', guests) - guest_capacity + 1
  if over > 0 then
    for _, m in ipairs(redis.call('ZRANGE', guests, 0, math.min(over, GUEST_EVICT) - 1)) do
      redis.call('ZREM', guests, m)
      if redis.call('HEXISTS', m, 'u') == 0 and redis.call('DEL', m) == 1 then
        inval(prefix, instance, m)
        result[#result + 1] = m
      end
    end
  end
end
write(key, version, blob, user, created_ms, ttl_ms)
enlist(prefix, index, key, user, now, ttl_ms, scan_stop)
return result
