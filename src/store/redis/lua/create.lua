-- KEYS: key, [index]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
-- guest capacity. Returns {1, evicted guest keys...} (applied) or {0} (the key exists).
--
-- A guest first drops the guest set's expired entries (by score), then, if the set is at
-- the capacity, evicts the guests with the earliest deadlines (at most `GUEST_EVICT`):
-- record, set entry and an invalidation message each. Never a logged-in session.
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
