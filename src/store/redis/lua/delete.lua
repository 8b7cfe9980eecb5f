-- KEYS: key. ARGV: prefix, instance. Removes the key and, while what it removed was a
-- forwarding entry, the key that entry names (at most `MAX_FORWARD_HOPS` hops), up to and
-- including the live record reached, with its index or guest-set entry. Publishes for the
-- given key even if it is missing (a delete is usually a revocation, and a message costs
-- nothing inside the script) and for every other key removed. Returns {1 if a live record
-- was removed, else 0; then the keys removed other than the given one}.
local prefix = ARGV[1]
local records = prefix .. 's:'
local key, out = KEYS[1], {0}
for hop = 0, MAX_FORWARD_HOPS do
  local h = redis.call('HMGET', key, 'v', 'u', 'f')
  local removed = redis.call('DEL', key) == 1
  if hop == 0 or removed then inval(prefix, ARGV[2], key) end
  if hop > 0 and removed then out[#out + 1] = key end
  if h[1] then
    if h[2] then index_remove(prefix, key, h[2]) else guest_remove(prefix, key) end
    out[1] = 1
    break
  end
  local f = h[3]
  if not f or string.sub(f, 1, #records) ~= records then break end
  key = f
end
return out
