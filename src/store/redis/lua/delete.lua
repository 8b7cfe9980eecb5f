-- delete: removes the key and, while what it removed was a forwarding entry, the key that
-- entry names (at most MAX_FORWARD_HOPS hops), up to and including the live record
-- reached, with its index or guest-set entry. Publishes for the given key even if it is
-- missing (a delete is usually a revocation, and a message costs nothing inside the
-- script) and for every other key removed. Returns {1 if a live record was removed, else 0;
-- then the keys removed other than the given one}, or {2, removed keys..., next key} when the
-- chain goes on under another base (another slot on a cluster).

-- The arguments, as `DeleteArgs::call` (scripts.rs) builds them.
local key = KEYS[1]
local prefix = ARGV[1]
local instance = ARGV[2]

local at, out = key, {0}
for hop = 0, MAX_FORWARD_HOPS do
  local h = redis.call('HMGET', at, 'v', 'u', 'f')
  local removed = redis.call('DEL', at) == 1
  if hop == 0 or removed then inval(prefix, instance, at) end
  if hop > 0 and removed then out[#out + 1] = at end
  if h[1] then
    unlist(prefix, at, h[2])
    out[1] = 1
    break
  end
  local f = h[3]
  if not f or #f <= 66 or string.sub(f, -66, -65) ~= 's:' then break end
  if base_of(f) ~= base_of(at) then
    -- Forwarding into another slot (a guest that logged in on a cluster): the caller goes
    -- on there with another call, after checking that `f` is one of the store's key names.
    out[1] = 2
    out[#out + 1] = f
    break
  end
  at = f
end
return out
