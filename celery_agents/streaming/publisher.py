"""``EventPublisher``: PUBLISH events and append them to replay logs, one round trip per event."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from ..events import _Event, dump_event
from ..keys import Keys
from .scripts import PUBLISH_EVENT


class EventPublisher:
    """Publishes events of runs; Redis assigns each run's gap-free ``seq``."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, log_cap: int, ttl: int) -> None:
        self._keys = keys
        self._log_cap = log_cap
        self._ttl = ttl
        self._script = client.register_script(PUBLISH_EVENT)

    async def publish(self, event: _Event) -> int:
        """Publish ``event`` on its own run's channel; returns its ``seq``."""
        return await self.publish_to([(event.run_id, event)])

    async def publish_to(self, targets: Sequence[tuple[str, _Event]]) -> int:
        """Publish each ``(run_id, event)`` on that run's channel, atomically and in one round
        trip; returns the ``seq`` the first one got."""
        keys: list[str] = []
        args: list[str | int] = [self._log_cap, self._ttl]
        for run_id, event in targets:
            keys += [self._keys.run_seq(run_id), self._keys.run_log(run_id)]
            args += [self._keys.run_channel(run_id), dump_event(event)]
        return int(await self._script(keys=keys, args=args))
