"""Run leases: at most one live execution per run id, and proof of life while it runs.

A worker claims a run before running it (one Lua call): a run already ended is not run again,
and a run whose lease another live execution holds is not run twice. While the run goes, the
worker renews its lease and the record's ``heartbeat_at``; on a Redis broker it also keeps the
run's task message invisible (``kombu_visibility``), so a long run is never redelivered while
its worker lives, and a dead worker's run is redelivered a visibility timeout after its last
heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from ..keys import Keys
from ..redis_pool import checked, script_reply
from ..text import as_text
from .kombu_visibility import HeldDeliveries

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")

# KEYS: record, lock, cancel keys (the run's, then its ancestors'). ARGV: owner, lease ms,
# now, worker, record ttl, then field/value pairs the record keeps if it has none yet (its
# name and tenant: a member's record was not made by a client).
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'timed_out' then
  return {'done', state}
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return {'busy', redis.call('PTTL', KEYS[2])}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'running_at', ARGV[3],
  'heartbeat_at', ARGV[3], 'worker', ARGV[4])
for i = 6, #ARGV, 2 do
  if ARGV[i + 1] ~= '' then redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
local cancelled = 0
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then cancelled = 1 end
end
return {'run', attempt, cancelled}
"""

# KEYS: lock, record pairs. ARGV: lease ms, now, owners (one per pair). Returns 1/0 per pair:
# 0 when another execution holds the lease.
_RENEW = """
local held = {}
for i = 3, #ARGV do
  local lock, record = KEYS[2 * (i - 2) - 1], KEYS[2 * (i - 2)]
  local holder = redis.call('GET', lock)
  if not holder then
    -- Gone, and nobody else holds it (Redis lost it, or a live worker took this process for
    -- dead): this execution is still the only one, so it takes its lease back.
    redis.call('SET', lock, ARGV[i], 'PX', ARGV[1])
    holder = ARGV[i]
  end
  if holder == ARGV[i] then
    redis.call('PEXPIRE', lock, ARGV[1])
    -- a record that expired under a run longer than its TTL is not made again without one
    if redis.call('EXISTS', record) == 1 then
      redis.call('HSET', record, 'heartbeat_at', ARGV[2])
    end
    held[#held + 1] = 1
  else
    held[#held + 1] = 0
  end
end
return held
"""


class AlreadyRan(Exception):
    """This delivery is of a run that already ended (a redelivery): nothing to do."""

    def __init__(self, run_id: str, state: str) -> None:
        super().__init__(f"run {run_id} already ended ({state}); this delivery is dropped")
        self.run_id = run_id
        self.state = state


class LeaseLost(AlreadyRan):
    """This execution's lease of the run lapsed (its process stalled past it), so another
    execution may hold the run now: this one writes nothing more of the run, its end
    included, and its delivery is dropped."""

    def __init__(self, run_id: str) -> None:
        Exception.__init__(
            self,
            f"run {run_id}: this execution's lease lapsed (the process stalled?); another "
            "execution owns the run, so this one ends without writing anything",
        )
        self.run_id = run_id
        self.state = "lost"


class RunningElsewhere(Exception):
    """Another live execution holds the run: try this delivery again once its lease could
    have lapsed (if that worker died, the run goes on here then)."""

    def __init__(self, run_id: str, retry_in: float) -> None:
        super().__init__(f"run {run_id} is running elsewhere; trying again in {retry_in:.1f}s")
        self.run_id = run_id
        self.retry_in = retry_in


@dataclass(frozen=True)
class Claim:
    verdict: Literal["run", "done", "busy"]
    attempt: int = 0
    cancelled: bool = False
    retry_in: float = 0.0  # busy: seconds until the other execution's lease runs out
    state: str = ""  # done: the state the run ended in


class RunLeases:
    """The leases of the runs this worker process executes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        worker: str,
        every: float,
        record_ttl: int,
        broker: aioredis.Redis | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = redis
        self._on_lost = on_lost  # told the run id of a lease found lost while renewing
        self._keys = keys
        self.worker = worker
        self.every = every
        self.lease = 3 * every  # renewed every ``every``: survives two missed renewals
        self._record_ttl = record_ttl
        self._held: dict[str, str] = {}  # run id -> owner token
        # Runs whose end is being written: not renewed meanwhile, since a renewal's PEXPIRE
        # is a change to the lock the end WATCHes (it would abort the end as if lost).
        self._ending: set[str] = set()
        self._renewing = asyncio.Lock()  # held while a renewal's script is in flight
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        # On a Redis broker, the messages held here (None: another broker keeps its own).
        self.deliveries = HeldDeliveries(broker) if broker is not None else None

    def track_delivery(self, tag: str) -> None:
        """A task message this process received (any thread): keep it invisible while held."""
        if self.deliveries is not None:
            self.deliveries.track(tag)

    def forget_delivery(self, tag: str) -> None:
        """A message whose ack was lost with the broker connection (``HeldDeliveries``)."""
        if self.deliveries is not None:
            self.deliveries.forget(tag)

    async def claim(
        self,
        run_id: str,
        ancestors: tuple[str, ...] = (),
        *,
        about: Mapping[str, str] | None = None,
        beside: Callable[[Pipeline], None] | None = None,
    ) -> tuple[Claim, Any]:
        """Claim ``run_id``; ``about`` are fields its record keeps if it has none yet (a
        value '' is left out). ``beside`` queues a read on the same round trip, whose reply
        comes back with the claim (None without one)."""
        owner = f"{self.identity}/{uuid.uuid4().hex[:12]}"
        keys = [
            self._keys.run_state(run_id),
            self._keys.run_lock(run_id),
            *(self._keys.run_cancel(r) for r in (run_id, *ancestors)),
        ]
        args: list[str | int | float] = [
            owner,
            int(self.lease * 1000),
            time.time(),
            self.worker,
            self._record_ttl,
            *(part for pair in (about or {}).items() for part in pair),
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._claim.sha, len(keys), *keys, *args)
            if beside is not None:
                beside(pipe)
            claimed, *read = await pipe.execute(raise_on_error=False)
        verdict, *rest = await script_reply(claimed, self._claim, keys, args)
        side = checked(read[0]) if read else None
        return self._settle(run_id, owner, as_text(verdict), rest), side

    def _settle(self, run_id: str, owner: str, verdict: str, rest: list[Any]) -> Claim:
        if verdict == "done":
            return Claim("done", state=as_text(rest[0]))
        if verdict == "busy":
            return Claim("busy", retry_in=max(int(rest[0]), 0) / 1000)
        self._held[run_id] = owner
        return Claim("run", attempt=int(rest[0]), cancelled=bool(rest[1]))

    @contextlib.asynccontextmanager
    async def fenced(self, run_id: str) -> AsyncIterator[Pipeline]:
        """A transaction for the run's end that commits only while this execution holds the
        run's lease (WATCH on its lock): else ``LeaseLost``, and none of it is written. It
        costs the end three round trips more (taking back a lease Redis lost, WATCH, reading it).
        A lease that is gone with nobody else holding it is taken back first. The run's lease
        is not renewed while its end is written (a renewal in flight is waited for first), so
        only another execution can change the lock under the WATCH."""
        owner = self._held.get(run_id)
        lock = self._keys.run_lock(run_id)
        self._ending.add(run_id)
        try:
            async with self._renewing:  # a renewal already sent lands before the WATCH
                pass
            if owner is not None:
                # Gone, and nobody else holds it (Redis lost it): the run is still only ours.
                # A no-op while any lease is there, ours or another's (read under WATCH below).
                await self._redis.set(lock, owner, px=int(self.lease * 1000), nx=True)
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(lock)
                holder = await pipe.get(lock)
                if owner is None or holder is None or as_text(holder) != owner:
                    raise LeaseLost(run_id)
                pipe.multi()  # type: ignore[no-untyped-call]
                try:
                    yield pipe
                except WatchError:  # another execution claimed the run meanwhile
                    raise LeaseLost(run_id) from None
        finally:
            self._ending.discard(run_id)

    @property
    def identity(self) -> str:
        """This process, among all workers (two may share a hostname): its leases' owner
        tokens start with it, and ``recovery.py`` takes over by it."""
        return f"{self.worker}:{os.getpid()}"

    def holding(self) -> tuple[list[str], list[str]]:
        """The delivery tags of the messages and the ids of the runs held here now."""
        tags = self.deliveries.tags() if self.deliveries is not None else []
        return tags, list(self._held)

    def fence(self, run_id: str) -> tuple[str, str] | None:
        """The run's lease key and this execution's owner token (for fenced publishes)."""
        owner = self._held.get(run_id)
        return None if owner is None else (self._keys.run_lock(run_id), owner)

    def release(self, run_id: str) -> None:
        """The run ended: stop renewing (the lease lapses; the record says it ended)."""
        self._held.pop(run_id, None)

    async def renew(self) -> None:
        async with self._renewing:
            held = {r: owner for r, owner in self._held.items() if r not in self._ending}
            kept = await self._renew_held(held) if held else []
        for run_id, ok in zip(held, kept, strict=True):
            if not ok and self._held.get(run_id) == held[run_id]:
                log.warning("lease of run %s was lost (this process stalled?)", run_id)
                self._held.pop(run_id, None)
                if self._on_lost is not None:
                    self._on_lost(run_id)
        if self.deliveries is not None:
            await self.deliveries.touch()

    async def _renew_held(self, held: dict[str, str]) -> list[int]:
        keys: list[str] = []
        for run_id in held:
            keys += [self._keys.run_lock(run_id), self._keys.run_state(run_id)]
        return list(
            await self._renew(keys=keys, args=[int(self.lease * 1000), time.time(), *held.values()])
        )
