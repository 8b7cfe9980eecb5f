-- update: rewrites a record if it is at the expected version (compare-and-set). Returns {1}
-- (applied) or {0} (missing, forwarding, or at another version). A guest's deadline in the
-- guest set follows its record's, like an index entry.

-- The arguments, as `UpdateArgs::call` (scripts.rs) builds them.
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
local expected = ARGV[9]

if not at_version(key, expected) then return {0} end
local previous = redis.call('HGET', key, 'u')
write(key, version, blob, user, created_ms, ttl_ms)
-- A change of user (or a guest's login) moves the key to the index it now belongs in.
if previous and previous ~= user then index_remove(prefix, key, previous) end
if user ~= '' and not previous then guest_remove(prefix, key) end
enlist(prefix, index, key, user, now_ms(), ttl_ms, scan_stop)
inval(prefix, instance, key)
return {1}
