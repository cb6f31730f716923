"""``Recovery``: a dead worker's runs go to a live one within seconds, not a visibility timeout.

Every second each worker process says it is alive (a key that lapses ``dead_after`` seconds
later) and which task messages and runs it holds. Every live worker looks, as often, for a
worker whose liveness lapsed; the first to see one takes it over (once, atomically): it
deletes the dead worker's run leases, so a redelivery may claim them at once, and, on a Redis
broker, marks its messages in kombu's unacked index as long delivered, so kombu's own sweep
(every ``RESTORE_EVERY`` seconds, ``config/celery_conf.py``) puts them back on their queues.
A worker that was only stalled (SIGSTOP) finds its leases gone when it resumes: fencing
(``leases.py``) keeps it from writing anything of those runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis

from ..keys import Keys
from ..text import as_text
from .kombu_visibility import expose

log = logging.getLogger(__name__)

HOLDERS_TTL = 86_400  # the set of workers that say what they hold; refreshed every second

# KEYS: the dead worker's liveness, its held tags, its held runs, the take-over mark, the
# holders set. ARGV: the worker, lock key prefix, lock key suffix, mark ttl.
# Returns the tags of its messages (nil: it lives, or another worker took it over).
_TAKE_OVER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[4]) then return nil end
local owner = ARGV[1] .. '/'
for _, run in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local lock = ARGV[2] .. run .. ARGV[3]
  local holder = redis.call('GET', lock)
  if holder and string.sub(holder, 1, #owner) == owner then redis.call('DEL', lock) end
end
local tags = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[5], ARGV[1])
return tags
"""


class Recovery:
    """This process's liveness, and the take-over of workers whose liveness lapsed."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        worker: str,
        *,
        held: Callable[[], tuple[list[str], list[str]]],
        broker: aioredis.Redis | None,
        every: float = 1.0,
        dead_after: float = 5.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.worker = worker
        self._held = held  # () -> (delivery tags, run ids) this process holds now
        self._broker = broker  # None: not a Redis broker (its messages come back by themselves)
        self._every = every
        self._dead_after = dead_after
        self._take_over = redis.register_script(_TAKE_OVER)
        self.taken: list[str] = []  # the workers this process took over (tests read it)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.beat()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next tick tries again
                log.warning("worker liveness: %s", exc)
            await asyncio.sleep(self._every)

    async def beat(self) -> None:
        """Say this process lives, and what it holds (one round trip)."""
        k, ttl = self._keys, int(self._dead_after * 1000)
        tags, runs = self._held()
        keep = int(self._dead_after * 4)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(k.worker_alive(self.worker), "1", px=ttl)
            pipe.sadd(k.holders(), self.worker)
            pipe.expire(k.holders(), HOLDERS_TTL)
            pipe.delete(k.held_tags(self.worker), k.held_runs(self.worker))
            if tags:
                pipe.sadd(k.held_tags(self.worker), *tags)
                pipe.expire(k.held_tags(self.worker), keep)
            if runs:
                pipe.sadd(k.held_runs(self.worker), *runs)
                pipe.expire(k.held_runs(self.worker), keep)
            await pipe.execute()

    async def sweep(self) -> None:
        """Take over every worker whose liveness lapsed."""
        k = self._keys
        others = [as_text(w) for w in await self._redis.smembers(k.holders())]
        others = [w for w in others if w != self.worker]
        if not others:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(k.worker_alive(other))
            alive = await pipe.execute()
        for other, lives in zip(others, alive, strict=True):
            if not lives:
                await self._take(other)

    async def _take(self, dead: str) -> None:
        k = self._keys
        tags = await self._take_over(
            keys=[
                k.worker_alive(dead),
                k.held_tags(dead),
                k.held_runs(dead),
                k.taken_over(dead),
                k.holders(),
            ],
            args=[dead, *k.run_lock("|").split("|"), int(self._dead_after * 6)],
        )
        if tags is None:
            return
        if tags and self._broker is not None:
            await expose(self._broker, [as_text(t) for t in tags])
        self.taken.append(dead)
        log.warning(
            "worker %s stopped saying it lives: its runs go to live workers (%d messages)",
            dead,
            len(tags),
        )

    async def leave(self) -> None:
        """A clean shutdown: nothing held is left to take over."""
        k = self._keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                k.worker_alive(self.worker), k.held_tags(self.worker), k.held_runs(self.worker)
            )
            pipe.srem(k.holders(), self.worker)
            await pipe.execute()
