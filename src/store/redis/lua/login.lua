-- login: rotates the guest session `old_key` (or creates, without one) into the logged-in
-- session `new_key`, with the user's index and session limit. Returns {1, evicted keys...}
-- (applied), {0} (conflict) or {2} (limit reached).
--
-- Bounded work, whatever the size of the index: entries past their deadline go by score;
-- the first `scan_stop`+1 entries (the earliest deadlines) are checked for a record, and are
-- the only candidates for `EvictOldest` (oldest creation first); the user's sessions are
-- counted with ZCARD (the scripts remove the entries of records they end). So an index over
-- the limit by more than a window shrinks by up to a window per login. The old key, if any,
-- is left forwarding to the new one.

-- The arguments, as `LoginArgs::call` (scripts.rs) builds them.
local new_key = KEYS[1]
local index = KEYS[2]
local old_key = KEYS[3] -- only when a guest session logs in
local prefix = ARGV[1]
local instance = ARGV[2]
local ttl_ms = ARGV[3]
local version = ARGV[4]
local blob = ARGV[5]
local user = ARGV[6]
local created_ms = ARGV[7]
local scan_stop = tonumber(ARGV[8])
local limit_max = tonumber(ARGV[9]) -- nil for no limit
local limit_policy = ARGV[10] -- 'evict', 'reject' or ''
local old_version = ARGV[11] -- the expected version of old_key

deny_if_oom(index)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', index, '-inf', fmt(now))
local candidates = {}
for _, m in ipairs(redis.call('ZRANGE', index, 0, scan_stop)) do
  local c = redis.call('HGET', m, 'c')
  if not c then
    redis.call('ZREM', index, m)
  elseif m ~= old_key and m ~= new_key then
    candidates[#candidates + 1] = {tonumber(c) or 0, m}
  end
end
local others = redis.call('ZCARD', index)
if old_key and redis.call('ZSCORE', index, old_key) then others = others - 1 end
if redis.call('ZSCORE', index, new_key) then others = others - 1 end
if limit_max and limit_policy == 'reject' and others >= limit_max then return {2} end
if old_key and not at_version(old_key, old_version) then return {0} end
if redis.call('EXISTS', new_key) == 1 then return {0} end
write(new_key, version, blob, user, created_ms, ttl_ms)
if old_key then retire(prefix, instance, old_key, new_key) end
redis.call('ZADD', index, 'GT', fmt(now + tonumber(ttl_ms)), new_key)
local result = {1}
if limit_max and limit_policy == 'evict' then
  local excess = math.min(others + 1 - math.max(limit_max, 1), #candidates)
  if excess > 0 then
    table.sort(candidates, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    for i = 1, excess do
      local m = candidates[i][2]
      redis.call('DEL', m)
      redis.call('ZREM', index, m)
      inval(prefix, instance, m)
      result[#result + 1] = m
    end
  end
end
index_expiry(index)
return result
