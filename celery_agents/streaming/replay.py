"""Reading a run's replay log from a given ``seq``."""

from __future__ import annotations

import redis.asyncio as aioredis

from ..events import Event, parse_event
from ..keys import Keys
from .scripts import READ_REPLAY


async def read_replay(
    client: aioredis.Redis, keys: Keys, run_id: str, from_seq: int = 1
) -> list[Event]:
    """Every logged event of ``run_id`` with ``seq >= from_seq``, in order."""
    raw = await client.eval(READ_REPLAY, 1, keys.run_log(run_id), from_seq)
    return [parse_event(item) for item in raw]
