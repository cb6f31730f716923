"""Per-agent accounting in minute buckets, so ``celery-agents status`` can sum the last hour."""

from __future__ import annotations

import time

from redis.asyncio.client import Pipeline

from ..keys import Keys
from ..messages import Usage
from ..runstate import RunStatus, write_state

BUCKET_TTL = 3900  # an hour of buckets plus a margin


def record_run(
    pipe: Pipeline,
    keys: Keys,
    agent: str,
    usage: Usage | None,
    cost: float | None,
    *,
    ok: bool,
    now: float | None = None,
    state: tuple[str, RunStatus, int] | None = None,
) -> None:
    """Queue counting the run in its minute; with ``state`` (run id, final state, ttl) also
    the run's record, on the same pipeline."""
    key = keys.usage_minute(int((now or time.time()) // 60))
    if state is not None:
        write_state(pipe, keys, state[0], state[1], state[2])
    pipe.hincrby(key, f"{agent}|runs", 1)
    if not ok:
        pipe.hincrby(key, f"{agent}|errors", 1)
    if usage is not None:
        pipe.hincrby(key, f"{agent}|input_tokens", usage.input_tokens)
        pipe.hincrby(key, f"{agent}|output_tokens", usage.output_tokens)
    if cost is not None:
        pipe.hincrbyfloat(key, f"{agent}|cost", cost)
    pipe.expire(key, BUCKET_TTL)
