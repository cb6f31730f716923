"""``EventPublisher``: PUBLISH events and append them to replay logs, one round trip per event.

The asyncio flavour serves workers; ``SyncEventPublisher`` the beat. Both run one script.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from ..events import _Event, dump_event
from ..keys import Keys
from ..redis_pool import checked, script_reply
from .scripts import PUBLISH_EVENT

Targets = Sequence[tuple[str, _Event]]
Fence = tuple[str, str]  # a run's lease key, and the owner token the publishing execution holds


class Fenced(Exception):
    """A fenced publish found its execution's lease gone: nothing was published."""


class _Base:
    def __init__(self, client: Any, keys: Keys, *, log_cap: int, ttl: int) -> None:
        self._keys = keys
        self._log_cap = log_cap
        self._ttl = ttl
        self._script = client.register_script(PUBLISH_EVENT)

    def _keys_args(
        self, targets: Targets, fence: Fence | None = None
    ) -> tuple[list[str], list[str | int]]:
        keys: list[str] = []
        # A token per call: a call the connection layer sends again (its reply was lost with
        # the connection, after Redis ran it) is recognised and not published twice.
        args: list[str | int] = [
            self._log_cap,
            self._ttl,
            os.urandom(8).hex(),
            fence[1] if fence is not None else "",
        ]
        for run_id, event in targets:
            keys += [
                self._keys.run_seq(run_id),
                self._keys.run_log(run_id),
                self._keys.run_epoch(run_id),
            ]
            args += [self._keys.run_channel(run_id), dump_event(event)]
        keys.append(self._keys.run_published(targets[0][0]))
        if fence is not None:
            keys.append(fence[0])
        return keys, args

    def _call(self, targets: Targets, fence: Fence | None = None) -> Any:
        keys, args = self._keys_args(targets, fence)
        return self._script(keys=keys, args=args)


class EventPublisher(_Base):
    """Publishes events of runs; Redis assigns each run's gap-free ``seq``."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, log_cap: int, ttl: int) -> None:
        super().__init__(client, keys, log_cap=log_cap, ttl=ttl)

    async def publish(self, event: _Event) -> int:
        """Publish ``event`` on its own run's channel; returns its ``seq``."""
        return await self.publish_to([(event.run_id, event)])

    async def publish_to(
        self, targets: Targets, *, after: Pipeline | None = None, fence: Fence | None = None
    ) -> int:
        """Publish each ``(run_id, event)`` on that run's channel, atomically and in one round
        trip; returns the ``seq`` the first one got. ``after``: a pipeline whose commands are
        sent first, in that same round trip (they are done when the event is out). ``fence``
        (the run's lease key and this execution's owner token): only while it holds the
        lease, else ``Fenced``."""
        if after is None:
            seq = int(await self._call(targets, fence))
            if seq < 0:
                raise Fenced(f"run {targets[0][0]}: this execution no longer holds its lease")
            return seq
        keys, args = self._keys_args(targets)
        position = len(after)
        after.evalsha(self._script.sha, len(keys), *keys, *args)
        replies = await after.execute(raise_on_error=False)
        for reply in replies[:position]:
            checked(reply)
        return int(await script_reply(replies[position], self._script, keys, args))


class SyncEventPublisher(_Base):
    """The same, for blocking code (the beat)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, log_cap: int, ttl: int) -> None:
        super().__init__(client, keys, log_cap=log_cap, ttl=ttl)

    def publish(self, event: _Event) -> int:
        return int(self._call([(event.run_id, event)]))

    def publish_to(self, targets: Targets) -> int:
        """Publish each ``(run_id, event)`` on that run's channel, in one call."""
        return int(self._call(targets))
