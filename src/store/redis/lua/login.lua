-- KEYS: new, index, [old]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
-- limit max ('' for none), policy ('evict', 'reject' or ''), expected version of old.
-- Returns {1, evicted keys...} (applied), {0} (conflict) or {2} (limit reached).
--
-- Bounded work, whatever the size of the index: entries past their deadline go by score;
-- the first `scan`+1 entries (the earliest deadlines) are checked for a record, and are the
-- only candidates for `EvictOldest` (oldest creation first); the user's sessions are counted
-- with ZCARD (the scripts remove the entries of records they end). So an index over the
-- limit by more than a window shrinks by up to a window per login. The old key, if any, is
-- left forwarding to the new one.
local new, idx, old = KEYS[1], KEYS[2], KEYS[3]
deny_if_oom(idx)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', idx, '-inf', fmt(now))
local candidates = {}
for _, m in ipairs(redis.call('ZRANGE', idx, 0, tonumber(ARGV[8]))) do
  local c = redis.call('HGET', m, 'c')
  if not c then
    redis.call('ZREM', idx, m)
  elseif m ~= old and m ~= new then
    candidates[#candidates + 1] = {tonumber(c) or 0, m}
  end
end
local others = redis.call('ZCARD', idx)
if old and redis.call('ZSCORE', idx, old) then others = others - 1 end
if redis.call('ZSCORE', idx, new) then others = others - 1 end
local max = tonumber(ARGV[9])
local policy = ARGV[10]
if max and policy == 'reject' and others >= max then return {2} end
if old and redis.call('HGET', old, 'v') ~= ARGV[11] then return {0} end
if redis.call('EXISTS', new) == 1 then return {0} end
write(new, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[3])
if old then
  local previous = redis.call('HGET', old, 'u')
  forward(old, new)
  if previous then index_remove(ARGV[1], old, previous) else guest_remove(ARGV[1], old) end
  inval(ARGV[1], ARGV[2], old)
end
redis.call('ZADD', idx, 'GT', fmt(now + tonumber(ARGV[3])), new)
local result = {1}
if max and policy == 'evict' then
  local excess = math.min(others + 1 - math.max(max, 1), #candidates)
  if excess > 0 then
    table.sort(candidates, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    for i = 1, excess do
      local m = candidates[i][2]
      redis.call('DEL', m)
      redis.call('ZREM', idx, m)
      inval(ARGV[1], ARGV[2], m)
      result[#result + 1] = m
    end
  end
end
index_expiry(idx)
return result
