"""Where a run's step journal lives: a Redis hash per run (step -> entry JSON), written only
while this execution holds the run's lease, read when a later attempt claims the run, and
deleted with the run's end. The journal itself (what a step is, replay) is ``llm/journal.py``.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from ..keys import Keys
from ..streaming.publisher import Fence, Fenced
from .published import Published

# KEYS: the journal, the run's lease. ARGV: the lease's owner, the step, its entry, the ttl.
# Written unless another execution holds the lease (0 then): one that stalled past its lease
# journals nothing more. A lease that is gone with nobody holding it is renewed again by
# ``leases.py``; until then the write goes on, as a publish does.
_WRITE = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class RedisSteps:
    """The ``StepWriter`` of one execution of a run."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, run_id: str, fence: Fence, ttl: int
    ) -> None:
        self._redis = redis
        self._journal = keys.run_journal(run_id)
        self._lock, self._owner = fence
        self._ttl = ttl
        self._script = redis.register_script(_WRITE)

    async def write(self, step: str, entry: dict[str, Any]) -> None:
        written = await self._script(
            keys=[self._journal, self._lock],
            args=[self._owner, step, json.dumps(entry, separators=(",", ":")), self._ttl],
        )
        if not written:
            raise Fenced(f"the lease of {self._journal} is another execution's")


async def resumed(
    redis: aioredis.Redis, keys: Keys, run_id: str
) -> tuple[dict[str, dict[str, Any]], Published]:
    """What a later attempt of a run starts from (one round trip): the journaled steps, and
    what the earlier attempts published."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.run_journal(run_id))
        pipe.lrange(keys.run_log(run_id), 0, -1)
        steps, logged = await pipe.execute()
    return parse_journal(steps), Published.from_log(run_id, logged)


def parse_journal(raw: dict[bytes, bytes] | None) -> dict[str, dict[str, Any]]:
    """The journal's entries by step; an entry that cannot be read is left out (that step and
    the ones after it run live again)."""
    found: dict[str, dict[str, Any]] = {}
    for step, value in (raw or {}).items():
        try:
            entry = json.loads(value)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found[step.decode()] = entry
    return found
