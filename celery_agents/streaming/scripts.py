"""The Lua scripts behind publishing and replaying events (one round trip each)."""

from __future__ import annotations

# KEYS: seq counter, replay log. ARGV: channel, event JSON without seq, log cap, ttl seconds.
# Redis hands out the sequence number, so events of one run published by several workers
# (team members on the parent's channel) still get one gap-free order, which is also the
# order of PUBLISH. The number is spliced in front of the JSON object's first field.
PUBLISH_EVENT = """
local seq = redis.call('INCR', KEYS[1])
local msg = '{"seq":' .. seq .. ',' .. string.sub(ARGV[2], 2)
redis.call('RPUSH', KEYS[2], msg)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], msg)
return seq
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
