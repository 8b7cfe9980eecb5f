-- retire: on a cluster, ends a guest session that logged in into another slot (the login
-- script, in the user's slot, wrote the new session first). If `old_key` is still at the
-- version the login read, it is left forwarding to the new session, leaves its guest set
-- and is invalidated: {1}. Else {0}: it changed meanwhile, and the caller undoes the login.

-- The arguments, as `RetireArgs::call` (scripts.rs) builds them.
local old_key = KEYS[1]
local prefix = ARGV[1]
local instance = ARGV[2]
local expected = ARGV[3]
local new_name = ARGV[4]

if not at_version(old_key, expected) then return {0} end
retire(prefix, instance, old_key, new_name)
return {1}
