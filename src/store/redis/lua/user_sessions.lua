-- KEYS: index. ARGV: limit, scan. Returns {key, blob, key, blob, ...} of at most `limit`
-- live sessions, those with the earliest deadlines, after examining at most `limit` +
-- `scan` entries (the entries without a record among them are dropped).
local idx = KEYS[1]
redis.call('ZREMRANGEBYSCORE', idx, '-inf', fmt(now_ms()))
local limit = tonumber(ARGV[1])
local out, found = {}, 0
for _, m in ipairs(redis.call('ZRANGE', idx, 0, limit + tonumber(ARGV[2]) - 1)) do
  if found >= limit then break end
  local d = redis.call('HGET', m, 'd')
  if d then
    out[#out + 1] = m
    out[#out + 1] = d
    found = found + 1
  else
    redis.call('ZREM', idx, m)
  end
end
index_expiry(idx)
return out
