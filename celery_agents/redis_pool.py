"""The asyncio Redis client every process builds the same way.

- A blocking pool: a burst of concurrent runs waits for a free connection instead of failing
  with "Too many connections" (redis-py's default pool raises past 100).
- Retries through a Redis restart or a network blip: a pool built from a URL has none by
  default, so one dropped connection would fail whatever command was on it. A command is
  tried again with backoff for about ``RETRY_SECONDS``; after that the error is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

from .config.settings import Settings
from .redis_check import is_transient

POOL_WAIT = 30.0  # seconds a call may wait for a connection before it fails
RETRY_SECONDS = 10.0  # how long a command keeps trying through a lost connection
_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=2.0)
_RETRIES = 9  # 0.05, 0.1, ... capped at 2 s: about RETRY_SECONDS in all


def async_redis(
    settings: Settings, *, client_name: str, max_connections: int | None = None
) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.redis_max_connections,
        timeout=POOL_WAIT,
        health_check_interval=30,
        client_name=client_name,
        retry=Retry(
            _BACKOFF,
            _RETRIES,
            supported_errors=(ConnectionError, TimeoutError),
            is_retryable=is_transient,  # a wrong password stays wrong
        ),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def checked(reply: Any) -> Any:
    """A reply of a pipeline run with ``raise_on_error=False``, raised if it is an error."""
    if isinstance(reply, Exception):
        raise reply
    return reply


async def script_reply(
    reply: Any, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
) -> Any:
    """A script's reply from such a pipeline (``EVALSHA``). If Redis had lost the script
    (restarted, or flushed its scripts), it runs again, loading it."""
    if isinstance(reply, NoScriptError):
        return await script(keys=keys, args=args)
    return checked(reply)
