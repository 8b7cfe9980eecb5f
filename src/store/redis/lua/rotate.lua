-- KEYS: old, new, [index]. ARGV: prefix, instance, ttl, version, blob, user, created,
-- scan, expected. The old key is left forwarding to the new one for `FORWARD_TTL`, and
-- leaves its index or the guest set; the new key joins its index or the guest set.
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
