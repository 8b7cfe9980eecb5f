-- user_sessions: returns {key, blob, key, blob, ...} of at most `limit` live sessions of
-- the index, those with the earliest deadlines, after examining at most `limit` + `scan`
-- entries (the entries without a record among them are dropped).

-- The arguments, as `UserSessionsArgs::call` (scripts.rs) builds them.
local index = KEYS[1]
local limit = tonumber(ARGV[1])
local scan = tonumber(ARGV[2])

redis.call('ZREMRANGEBYSCORE', index, '-inf', fmt(now_ms()))
local out, found = {}, 0
for _, m in ipairs(redis.call('ZRANGE', index, 0, limit + scan - 1)) do
  if found >= limit then break end
  local d = redis.call('HGET', m, 'd')
  if d then
    out[#out + 1] = m
    out[#out + 1] = d
    found = found + 1
  else
    redis.call('ZREM', index, m)
  end
end
index_expiry(index)
return out
