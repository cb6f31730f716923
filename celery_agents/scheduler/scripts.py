"""The Lua scripts that keep background entries exact: each step is one atomic script.

An entry's hash holds its run template, policy and counters; the schedule ZSET holds the ids
of entries by when they are due next; the entry's ``running`` ZSET holds its runs in flight
(by start time). ``started`` only grows inside CLAIM and FIRE, so ``max_count`` runs are never
exceeded, whatever restarts.

Two kinds of entry:

- ``run_in_background`` (no grid): in the schedule ZSET or with a run in flight, never both;
  COMPLETE makes it due ``interval`` after its run ended. Its runs never overlap.
- a schedule on a grid (``grid`` = 1): it stays in the schedule ZSET at its next grid time
  (``nominal``, plus jitter) while a run is in flight; FIRE applies its ``overlap`` policy to a
  fire that comes due meanwhile. ``extra`` counts fires asked for by hand (trigger, backfill,
  a buffered fire) that come before the grid's next one.
"""

from __future__ import annotations

# An entry's hash expires once it has ended; while it lives, after each step, unless it is a
# manifest schedule's (``persist``), which lives as long as the manifest names it. ``finish``
# ends an entry: done, or failed when every run failed (or too many failed in a row).
_COMMON = """
local function keep(ttl)
  if redis.call('HGET', KEYS[1], 'persist') == '1' then
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('EXPIRE', KEYS[1], ttl)
  end
end
local function finish(id, schedule, index, done, ttl_end, failed_in_a_row)
  local finished = tonumber(redis.call('HGET', KEYS[1], 'finished') or '0')
  local errors = tonumber(redis.call('HGET', KEYS[1], 'errors') or '0')
  if (finished > 0 and errors >= finished) or failed_in_a_row then
    redis.call('HSET', KEYS[1], 'state', 'failed')
  else
    redis.call('HSET', KEYS[1], 'state', 'done')
  end
  redis.call('ZREM', schedule, id)
  redis.call('SREM', index, id)
  redis.call('EXPIRE', KEYS[1], ttl_end)
  redis.call('EXPIRE', done, ttl_end)
end
local function count(field)
  return tonumber(redis.call('HGET', KEYS[1], field) or '0') or 0
end
"""

# KEYS: entry, schedule, index. ARGV: id, due, ttl, field, value, ...
CREATE = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
keep(ARGV[3])
return 1
"""
)

# A run_in_background entry's run. KEYS: entry, schedule, running. ARGV: id, now, run id, ttl.
# Returns the run's number, or nil.
CLAIM = (
    _COMMON
    + """
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return nil end
redis.call('ZREM', KEYS[2], ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'active' then return nil end
local max = redis.call('HGET', KEYS[1], 'max_count')
if max and max ~= '' and count('started') >= tonumber(max) then return nil end
local started = redis.call('HINCRBY', KEYS[1], 'started', 1)
redis.call('HSET', KEYS[1], 'inflight', ARGV[3], 'inflight_since', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
keep(ARGV[4])
return started
"""
)

# A grid schedule's fire that came due. KEYS: entry, schedule, running, index, done.
# ARGV: id, now, run id, ttl, kind ('grid' or 'extra'), fire (1/0: 0 = missed), missed count,
# next nominal time ('' = none left), its score (with jitter), skip reason ('' or why the fire
# is skipped, e.g. the budget), ttl once ended.
# Returns {outcome, run number, run ids to cancel...}; outcome is 'fired', 'skipped',
# 'buffered', 'missed', 'budget', 'max', 'ended' or 'none'.
FIRE = (
    _COMMON
    + """
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return {'none'} end
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'none'}
end
local extra = count('extra')
local grid_score = redis.call('HGET', KEYS[1], 'grid_score')
local ended = redis.call('HGET', KEYS[1], 'nominal') == 'end'
if ARGV[5] == 'extra' then
  if extra < 1 then  -- nothing asked for by hand after all: due at the grid's time, if any
    if ended then
      redis.call('ZREM', KEYS[2], ARGV[1])
    else
      redis.call('ZADD', KEYS[2], grid_score, ARGV[1])
    end
    return {'none'}
  end
  extra = redis.call('HINCRBY', KEYS[1], 'extra', -1)
else
  redis.call('HINCRBY', KEYS[1], 'missed', ARGV[7])
  if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[1], 'nominal', ARGV[8], 'grid_score', ARGV[9])
    grid_score = ARGV[9]
  else
    redis.call('HSET', KEYS[1], 'nominal', 'end')
    ended = true
  end
end
-- Due next: a fire asked for by hand at once, else the grid's next time, else nothing.
if extra > 0 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
elseif not ended then
  redis.call('ZADD', KEYS[2], grid_score, ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local running = redis.call('ZCARD', KEYS[3])
local function idle_end(outcome)
  if ended and extra == 0 and running == 0 then
    finish(ARGV[1], KEYS[2], KEYS[4], KEYS[5], ARGV[11], false)
    return {'ended'}
  end
  keep(ARGV[4])
  return {outcome}
end
if ARGV[5] == 'grid' and ARGV[6] ~= '1' then return idle_end('missed') end
if ARGV[10] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
  redis.call('HSET', KEYS[1], 'last_skip', ARGV[10])
  return idle_end('budget')
end
local max = redis.call('HGET', KEYS[1], 'max_count')
if max and max ~= '' and count('started') >= tonumber(max) then return idle_end('max') end
local cancel = {}
if running > 0 then
  local overlap = redis.call('HGET', KEYS[1], 'overlap')
  if overlap == 'buffer_one' and redis.call('HGET', KEYS[1], 'buffered') ~= '1' then
    redis.call('HSET', KEYS[1], 'buffered', '1')
    keep(ARGV[4])
    return {'buffered'}
  end
  if overlap == 'cancel_other' then
    cancel = redis.call('ZRANGE', KEYS[3], 0, -1)
    redis.call('DEL', KEYS[3])
    redis.call('HINCRBY', KEYS[1], 'cancelled_other', #cancel)
  elseif overlap ~= 'allow_all' then
    redis.call('HINCRBY', KEYS[1], 'skipped', 1)
    keep(ARGV[4])
    return {'skipped'}
  end
end
local started = redis.call('HINCRBY', KEYS[1], 'started', 1)
redis.call('HSET', KEYS[1], 'inflight', ARGV[3], 'inflight_since', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
keep(ARGV[4])
local reply = {'fired', started}
for _, run in ipairs(cancel) do table.insert(reply, run) end
return reply
"""
)

# Undo a CLAIM or FIRE whose task could not be sent. KEYS: entry, schedule, running.
# ARGV: id, run id, due.
UNCLAIM = """
if redis.call('ZREM', KEYS[3], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'started', -1)
if redis.call('HGET', KEYS[1], 'inflight') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'inflight', 'inflight_since')
end
if redis.call('HGET', KEYS[1], 'state') == 'active' then
  if redis.call('HGET', KEYS[1], 'grid') == '1' then
    redis.call('HINCRBY', KEYS[1], 'extra', 1)  -- fired again soon, the grid unmoved
    local score = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or ARGV[3])
    redis.call('ZADD', KEYS[2], math.min(score, tonumber(ARGV[3])), ARGV[1])
  else
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  end
end
return 1
"""

# KEYS: entry, done set, schedule, index, running, the entry's usage (every run's tokens
# added up by the workers, failed runs' and members' too). ARGV: id, run id, ok (1/0), next
# due (no grid), ttl while active, ttl once ended, failure limit (no grid), message JSON or
# error JSON, today (the budget's day), now, the error's text (a pause's reason).
# The tokens runs used since the last count go to today's budget.
# Returns 'next', 'end', 'paused', 'stale' (not a run in flight), 'dup', or the state it
# stays in.
COMPLETE = (
    _COMMON
    + """
if redis.call('ZREM', KEYS[5], ARGV[2]) == 0 then return 'stale' end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then return 'dup' end
if redis.call('HGET', KEYS[1], 'inflight') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'inflight', 'inflight_since')
end
redis.call('HINCRBY', KEYS[1], 'finished', 1)
if redis.call('HGET', KEYS[1], 'day') ~= ARGV[9] then
  redis.call('HSET', KEYS[1], 'day', ARGV[9], 'day_tokens', 0)
end
local used = redis.call('HMGET', KEYS[6], 'input_tokens', 'output_tokens')
local total = (tonumber(used[1]) or 0) + (tonumber(used[2]) or 0)
local spent = total - count('tokens_counted')
if spent < 0 then spent = total end  -- the usage hash expired meanwhile: it starts over
redis.call('HSET', KEYS[1], 'tokens_counted', total, 'last_tokens', spent)
redis.call('HINCRBY', KEYS[1], 'day_tokens', spent)
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
local grid = redis.call('HGET', KEYS[1], 'grid') == '1'
local max = redis.call('HGET', KEYS[1], 'max_count')
local more = (not max or max == '' or count('started') < tonumber(max))
if grid then
  local pause_after = count('pause_after')
  if in_a_row > 0 and pause_after > 0 and in_a_row >= pause_after then
    local reason = 'paused after ' .. in_a_row .. ' failed runs in a row; the last: ' .. ARGV[11]
    redis.call('HSET', KEYS[1], 'state', 'paused', 'pause_reason', reason)
    redis.call('ZREM', KEYS[3], ARGV[1])
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
    return 'paused'
  end
  if more and redis.call('HGET', KEYS[1], 'buffered') == '1' then
    redis.call('HSET', KEYS[1], 'buffered', '0')
    redis.call('HINCRBY', KEYS[1], 'extra', 1)
    redis.call('ZADD', KEYS[3], ARGV[10], ARGV[1])
  end
  local ended = redis.call('HGET', KEYS[1], 'nominal') == 'end' and count('extra') == 0
  if (more and not ended) or redis.call('ZCARD', KEYS[5]) > 0 then
    keep(ARGV[5])
    return 'next'
  end
  finish(ARGV[1], KEYS[3], KEYS[4], KEYS[2], ARGV[6], false)
  return 'end'
end
if more and in_a_row < tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  keep(ARGV[5])
  return 'next'
end
finish(ARGV[1], KEYS[3], KEYS[4], KEYS[2], ARGV[6], in_a_row >= tonumber(ARGV[7]))
return 'end'
"""
)

# KEYS: entry, schedule, index, removed schedules, running. ARGV: id, ttl once ended,
# remember (1/0: a manifest schedule's removal is kept, with the fingerprint of what was
# removed). Returns {state before, run ids in flight...}; nil for an unknown entry.
CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
local reply = {state}
for _, run in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do table.insert(reply, run) end
if state == 'active' or state == 'paused' then
  if ARGV[3] == '1' and redis.call('HGET', KEYS[1], 'persist') == '1' then
    redis.call('HSET', KEYS[4], ARGV[1], redis.call('HGET', KEYS[1], 'fingerprint') or '')
  end
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[5], ARGV[2])
end
return reply
"""

# KEYS: entry, schedule, entry's counted runs, running. ARGV: id, 'pause' or 'resume', when
# it is due once resumed, the TTL a resumed entry gets, the grid time it resumes at ('' for
# no grid). Returns the new state or nil. A paused entry keeps its keys until it is resumed
# (then they expire as an active entry's do) or cancelled.
PAUSE_RESUME = (
    _COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[2] == 'pause' and state == 'active' then
  redis.call('HSET', KEYS[1], 'state', 'paused', 'pause_reason', 'paused by hand')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[3])
  return 'paused'
end
if ARGV[2] == 'resume' and state == 'paused' then
  redis.call('HSET', KEYS[1], 'state', 'active', 'failures_in_a_row', 0)
  redis.call('HDEL', KEYS[1], 'pause_reason')
  if redis.call('HGET', KEYS[1], 'grid') == '1' then
    if redis.call('HGET', KEYS[1], 'nominal') ~= 'end' then
      redis.call('HSET', KEYS[1], 'nominal', ARGV[5], 'grid_score', ARGV[3])
    end
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  elseif redis.call('ZCARD', KEYS[4]) == 0 then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  end
  keep(ARGV[4])
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
  return 'active'
end
return state
"""
)

# Fire an entry ``count`` more times now (trigger, backfill), following its overlap policy.
# KEYS: entry, schedule. ARGV: id, count, now.
# Returns 'queued', 'running' (no grid, and a run is in flight: it is not fired twice), or the
# state that does not fire.
TRIGGER = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'active' then return state or 'unknown' end
if redis.call('HGET', KEYS[1], 'grid') == '1' then
  redis.call('HINCRBY', KEYS[1], 'extra', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return 'queued'
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 'running' end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 'queued'
"""

# Which entries a name the CLI was given stands for: the entry of that id, else the manifest
# schedule of that name, else every live entry of that name. (It reads entry hashes by their
# names, ``ARGV[1] .. id``: fine on one Redis, which is what the beat and workers share.)
# KEYS: index. ARGV: key prefix of entry hashes, name, manifest entries' id prefix.
RESOLVE = """
for _, id in ipairs({ARGV[2], ARGV[3] .. ARGV[2]}) do
  local key = ARGV[1] .. id  -- a name like 'x:done' names another kind of key
  if redis.call('TYPE', key).ok == 'hash' and redis.call('HEXISTS', key, 'state') == 1 then
    return {id}
  end
end
local found = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HGET', ARGV[1] .. id, 'name') == ARGV[2] then table.insert(found, id) end
end
table.sort(found)
return found
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
