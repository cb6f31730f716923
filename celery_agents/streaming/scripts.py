"""The Lua scripts behind publishing and replaying events (one round trip each)."""

from __future__ import annotations

# KEYS: (seq counter, replay log) per channel, then the first channel's run's last-publish
# mark. ARGV: log cap, ttl, this call's token, then (channel, event JSON without seq) per
# channel. Redis hands out each run's sequence numbers, so the events of a run published by
# several workers (team members on their parent's channel) still get one gap-free order,
# which is also the order of PUBLISH. The number is spliced in front of the JSON object's
# first field. All channels of one event cost one round trip. A call whose token is the
# mark's (the same call sent again: its reply was lost with its connection) publishes
# nothing and answers the seq it got the first time: a run's events come from the one
# execution holding its lease, one call after another, so the last call is the one to check.
PUBLISH_EVENT = """
local cap, ttl, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local mark = KEYS[#KEYS]
local last = redis.call('GET', mark)
if last then
  local sep = string.find(last, ':', 1, true)
  if sep and string.sub(last, 1, sep - 1) == token then
    return tonumber(string.sub(last, sep + 1))
  end
end
local first = 0
for i = 1, #KEYS - 1, 2 do
  local seq = redis.call('INCR', KEYS[i])
  local msg = '{"seq":' .. seq .. ',' .. string.sub(ARGV[i + 4], 2)
  redis.call('RPUSH', KEYS[i + 1], msg)
  redis.call('LTRIM', KEYS[i + 1], -cap, -1)
  redis.call('EXPIRE', KEYS[i], ttl)
  redis.call('EXPIRE', KEYS[i + 1], ttl)
  redis.call('PUBLISH', ARGV[i + 3], msg)
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
