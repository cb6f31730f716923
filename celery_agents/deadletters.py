"""Dead letters: runs that failed after their retries, kept with their inputs and error.

Only failures a retry might fix are kept (model, tool, timeout and output errors); a cancelled
run, a spent budget or a bad request is not. The payload holds no secrets: keys live on workers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from .errors import CeleryAgentsError, RunCancelled, RunError, UserError
from .keys import Keys
from .text import as_text

KEEP_SECONDS = 7 * 86400
KEEP_COUNT = 10_000
_NOT_RETRYABLE = (RunCancelled,)


def worth_keeping(error: CeleryAgentsError) -> bool:
    from .errors import BudgetExceeded

    return isinstance(error, RunError) and not isinstance(error, (*_NOT_RETRYABLE, BudgetExceeded))


async def keep(
    client: aioredis.Redis,
    keys: Keys,
    run_id: str,
    task: str,
    payload: dict[str, Any],
    error: CeleryAgentsError,
) -> None:
    record = {
        "run_id": run_id,
        "task": task,
        "failed_at": time.time(),
        "payload": payload,
        "error": error.to_json(),
    }
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.dead_letter(run_id), json.dumps(record), ex=KEEP_SECONDS)
        pipe.lpush(keys.dead_letters(), run_id)
        pipe.ltrim(keys.dead_letters(), 0, KEEP_COUNT - 1)
        pipe.expire(keys.dead_letters(), KEEP_SECONDS)
        await pipe.execute()


async def listing(client: aioredis.Redis, keys: Keys, limit: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters that have not expired."""
    ids = await client.lrange(keys.dead_letters(), 0, limit - 1)
    records = []
    for raw_id in ids:
        raw = await client.get(keys.dead_letter(as_text(raw_id)))
        if raw is not None:
            records.append(json.loads(raw))
    return records


async def take(client: aioredis.Redis, keys: Keys, run_id: str) -> dict[str, Any]:
    raw = await client.get(keys.dead_letter(run_id))
    if raw is None:
        raise UserError(f"no failed run {run_id!r} is kept (see `celery-agents runs failed`)")
    record: dict[str, Any] = json.loads(raw)
    return record


async def forget(client: aioredis.Redis, keys: Keys, run_id: str) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.dead_letter(run_id))
        pipe.lrem(keys.dead_letters(), 0, run_id)
        await pipe.execute()
