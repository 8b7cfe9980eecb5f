-- delete: removes the key and, while what it removed was a forwarding entry, the key that
-- entry names (at most MAX_FORWARD_HOPS hops), up to and including the live record
-- reached, with its index or guest-set entry. Publishes for the given key even if it is
-- missing (a delete is usually a revocation, and a message costs nothing inside the
-- script) and for every other key removed. Returns {1 if a live record was removed, else 0;
-- then the keys removed other than the given one}.

-- The arguments, as `DeleteArgs::call` (scripts.rs) builds them.
local key = KEYS[1]
local prefix = ARGV[1]
local instance = ARGV[2]

local records = prefix .. 's:'
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
  if not f or string.sub(f, 1, #records) ~= records then break end
  at = f
end
return out
