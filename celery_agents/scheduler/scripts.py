"""The Lua scripts that keep background entries exact: each step is one atomic script.

An entry's hash holds its run template and counters; the schedule ZSET holds the ids of
entries waiting for their next run. An entry is in the ZSET or has a run in flight, never
both, so its runs never overlap; ``started`` only grows inside CLAIM, so ``max_count`` runs
are never exceeded, whatever restarts.
"""

from __future__ import annotations

# KEYS: entry, schedule, index. ARGV: id, due, ttl, field, value, ...
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: entry, schedule. ARGV: id, now, run id, ttl. Returns the run's number, or nil.
CLAIM = """
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return nil end
redis.call('ZREM', KEYS[2], ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'active' then return nil end
local max = redis.call('HGET', KEYS[1], 'max_count')
local started = tonumber(redis.call('HGET', KEYS[1], 'started') or '0')
if max and max ~= '' and started >= tonumber(max) then return nil end
started = redis.call('HINCRBY', KEYS[1], 'started', 1)
redis.call('HSET', KEYS[1], 'inflight', ARGV[3], 'inflight_since', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return started
"""

# Undo a CLAIM whose task could not be sent. KEYS: entry, schedule. ARGV: id, run id, due.
UNCLAIM = """
if redis.call('HGET', KEYS[1], 'inflight') ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'started', -1)
redis.call('HDEL', KEYS[1], 'inflight', 'inflight_since')
if redis.call('HGET', KEYS[1], 'state') == 'active' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: entry, done set, schedule, index. ARGV: id, run id, ok (1/0), next due, ttl while
# active, ttl once ended, failure limit, message JSON or error JSON.
# Returns 'next', 'end', 'stale' (not the run in flight), 'dup', or the state it stays in.
COMPLETE = """
if redis.call('HGET', KEYS[1], 'inflight') ~= ARGV[2] then return 'stale' end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then return 'dup' end
redis.call('HDEL', KEYS[1], 'inflight', 'inflight_since')
redis.call('HINCRBY', KEYS[1], 'finished', 1)
local in_a_row = 0
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'failures_in_a_row', 0, 'last', ARGV[8])
else
  redis.call('HINCRBY', KEYS[1], 'errors', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[8])
  in_a_row = redis.call('HINCRBY', KEYS[1], 'failures_in_a_row', 1)
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'paused' then  -- a run that ends after its entry was paused: the keys stay kept
  return state
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
if state ~= 'active' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return state
end
local max = redis.call('HGET', KEYS[1], 'max_count')
local started = tonumber(redis.call('HGET', KEYS[1], 'started'))
local more = (not max or max == '' or started < tonumber(max))
if more and in_a_row < tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 'next'
end
local finished = tonumber(redis.call('HGET', KEYS[1], 'finished'))
local errors = tonumber(redis.call('HGET', KEYS[1], 'errors') or '0')
if errors >= finished or in_a_row >= tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[1], 'state', 'failed')
else
  redis.call('HSET', KEYS[1], 'state', 'done')
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 'end'
"""

# KEYS: entry, schedule, index. ARGV: id, ttl once ended.
# Returns {state before, run id in flight or ''}; nil for an unknown entry.
CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
local inflight = redis.call('HGET', KEYS[1], 'inflight') or ''
if state == 'active' or state == 'paused' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {state, inflight}
"""

# KEYS: entry, schedule, entry's counted runs. ARGV: id, 'pause' or 'resume', now, the TTL a
# resumed entry gets. Returns the new state or nil. A paused entry keeps its keys until it is
# resumed (then they expire as an active entry's do) or cancelled.
PAUSE_RESUME = """
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[2] == 'pause' and state == 'active' then
  redis.call('HSET', KEYS[1], 'state', 'paused')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[3])
  return 'paused'
end
if ARGV[2] == 'resume' and state == 'paused' then
  redis.call('HSET', KEYS[1], 'state', 'active')
  if not redis.call('HGET', KEYS[1], 'inflight') then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  end
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
  return 'active'
end
return state
"""

# KEYS: lock. ARGV: token, ttl ms. Take the lock or extend our own; 1 if we hold it.
HOLD_LOCK = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock. ARGV: token. Release the lock only if we hold it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
