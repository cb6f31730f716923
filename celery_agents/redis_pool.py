"""The asyncio Redis client every process builds the same way: a blocking pool, so a burst
of concurrent runs waits for a free connection instead of failing with "Too many connections"
(redis-py's default pool raises past 100)."""

from __future__ import annotations

import redis.asyncio as aioredis

from .config.settings import Settings

POOL_WAIT = 30.0  # seconds a call may wait for a connection before it fails


def async_redis(settings: Settings, *, client_name: str) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT,
        health_check_interval=30,
        client_name=client_name,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
