-- user_sessions: returns {key, blob, key, blob, ...} of at most `limit` live sessions of
-- the index (and then of `legacy`, the user's index from before routing tags, when given:
-- one node only, as a cluster keeps the two in different slots), those with the earliest
-- deadlines, after examining at most `limit` + `scan` entries of each (the entries without a
-- record among them are dropped).

-- The arguments, as `UserSessionsArgs::call` (scripts.rs) builds them.
local index = KEYS[1]
local legacy = KEYS[2] -- optional
local limit = tonumber(ARGV[1])
local scan = tonumber(ARGV[2])

local now = now_ms()
local out, found = {}, 0
for _, idx in ipairs({index, legacy}) do
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', fmt(now))
  for _, m in ipairs(redis.call('ZRANGE', idx, 0, limit + scan - 1)) do
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
end
return out
