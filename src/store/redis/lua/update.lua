-- KEYS: key, [index]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
-- expected. A guest's deadline in the guest set follows its record's, like an index entry.
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
