-- rotate: moves a record at the expected version to a new key that must not exist.
-- Returns {1} (applied) or {0} (conflict). The old key is left forwarding to the new one for
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

if not at_version(old_key, expected) then return {0} end
if redis.call('EXISTS', new_key) == 1 then return {0} end
write(new_key, version, blob, user, created_ms, ttl_ms)
retire(prefix, instance, old_key, new_key)
enlist(prefix, index, new_key, user, now_ms(), ttl_ms, scan_stop)
return {1}
