"""The Lua scripts behind publishing and replaying events (one round trip each)."""

from __future__ import annotations

# KEYS: (seq counter, replay log, epoch) per channel, then the first channel's run's
# last-publish mark, then (fenced calls only) the publishing run's lease. ARGV: log cap, ttl,
# this call's token, the lease's owner ('' = not fenced), then (channel, event JSON without
# seq) per channel.
#
# - Fencing: a fenced call publishes unless another execution holds the run's lease, and
#   answers -1 then: an execution that stalled past its lease says nothing more. (A lease
#   that is gone, with nobody else holding it, is the publisher's to take back: Redis lost
#   it, and ``leases.py`` renews it again.)
# - Order: Redis hands out each run's sequence numbers, so the events of a run published by
#   several workers (team members on their parent's channel) still get one gap-free order,
#   which is also the order of PUBLISH. The number and the stream's epoch are spliced in
#   front of the JSON object's first field.
# - Epochs: the epoch is made with the counter. A counter that starts again from 1 (Redis
#   lost the run's keys: restarted empty, or they expired) starts a new epoch, so a client
#   tells "seq 3 again" from "seq 3 seen before".
# - All channels of one event cost one round trip. A call whose token is the mark's (the same
#   call sent again: its reply was lost with its connection) publishes nothing and answers the
#   seq it got the first time: a run's events come from the one execution holding its lease,
#   one call after another, so the last call is the one to check.
PUBLISH_EVENT = """
local cap, ttl, token, owner = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local channels = #KEYS - 1
if owner ~= '' then
  channels = #KEYS - 2
  local holder = redis.call('GET', KEYS[#KEYS])
  if holder and holder ~= owner then return -1 end
end
local mark = KEYS[channels + 1]
local last = redis.call('GET', mark)
if last then
  local sep = string.find(last, ':', 1, true)
  if sep and string.sub(last, 1, sep - 1) == token then
    return tonumber(string.sub(last, sep + 1))
  end
end
local first = 0
for i = 1, channels, 3 do
  local seq = redis.call('INCR', KEYS[i])
  local epoch = redis.call('GET', KEYS[i + 2])
  if seq == 1 or not epoch then
    epoch = token
    redis.call('SET', KEYS[i + 2], epoch)
  end
  local n = (i - 1) / 3
  local msg = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[2 * n + 6], 2)
  redis.call('RPUSH', KEYS[i + 1], msg)
  redis.call('LTRIM', KEYS[i + 1], -cap, -1)
  redis.call('EXPIRE', KEYS[i], ttl)
  redis.call('EXPIRE', KEYS[i + 1], ttl)
  redis.call('EXPIRE', KEYS[i + 2], ttl)
  redis.call('PUBLISH', ARGV[2 * n + 5], msg)
  if i == 1 then first = seq end
end
redis.call('SET', mark, token .. ':' .. first, 'EX', ttl)
return first
"""

# KEYS: replay log. ARGV: first wanted seq. The log is capped from the head, so the index of
# a seq is found from the seq of the first entry still kept.
READ_REPLAY = """
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return {} end
local first_seq = tonumber(string.match(first, '^{"seq":(%d+)'))
local start = tonumber(ARGV[1]) - first_seq
if start < 0 then start = 0 end
return redis.call('LRANGE', KEYS[1], start, -1)
"""
