-- rotate: moves a record at the expected version to a new key that must not exist.
-- Returns 1 (applied) or 0 (conflict). The old key is left forwarding to the new one for
-- FORWARD_TTL, and leaves its index or the guest set; the new key joins its index or the
-- guest set.

-- The arguments, as `RotateArgs::call` (scripts.rs) builds them.
local old_key = KEYS[1]
local new_key = KEYS[2]
local index = KEYS[3] -- only for a logged-in session
local prefix = ARGV[1]
local instance = ARGV[2]
local ttl_ms = ARGV[3]
local version = ARGV[4]
local blob = ARGV[5]
local user = ARGV[6] -- '' for a guest
local created_ms = ARGV[7]
local scan_stop = tonumber(ARGV[8])
local expected = ARGV[9]

if redis.call('HGET', old_key, 'v') ~= expected then return 0 end
if redis.call('EXISTS', new_key) == 1 then return 0 end
local previous = redis.call('HGET', old_key, 'u')
write(new_key, version, blob, user, created_ms, ttl_ms)
forward(old_key, new_key)
if previous then
  index_remove(prefix, old_key, previous)
else
  guest_remove(prefix, old_key)
end
local now = now_ms()
if user ~= '' then
  index_add(index, new_key, now, ttl_ms, scan_stop)
else
  guest_add(prefix, new_key, now + tonumber(ttl_ms))
end
inval(prefix, instance, old_key)
return 1
