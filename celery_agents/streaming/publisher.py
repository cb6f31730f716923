"""``EventPublisher``: PUBLISH an event and append it to the run's replay log, in one round trip."""

from __future__ import annotations

from collections.abc import Iterable

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

    async def publish(self, event: _Event, *, also_to: Iterable[str] = ()) -> int:
        """Publish ``event`` on its run's channel (and on ``also_to`` runs' channels).

        Returns the event's ``seq`` on its own run.
        """
        data = dump_event(event)
        seq = await self._publish_to(event.run_id, data)
        for run_id in also_to:
            await self._publish_to(run_id, data)
        return seq

    async def _publish_to(self, run_id: str, data: str) -> int:
        keys = self._keys
        result = await self._script(
            keys=[keys.run_seq(run_id), keys.run_log(run_id)],
            args=[keys.run_channel(run_id), data, self._log_cap, self._ttl],
        )
        return int(result)
