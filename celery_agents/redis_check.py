"""A Redis that refuses us for good, told at once: a missing or wrong password, a database
that does not exist. Waiting cures neither, so these are ``ConfigError`` naming the variable,
never retried; a Redis that is only away (refused connection, timeout) is retried as before.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from .config.settings import REDIS_SCHEMES, Settings, shown_url
from .errors import ConfigError

CHECK_TIMEOUT = 5.0  # seconds the first PING may take before Redis counts as away
_NO_PASSWORD = ("NOAUTH", "HELLO must be called", "Authentication required")


def refusal(exc: BaseException, url: str, variable: str = "CELERY_AGENTS_REDIS_URL") -> str | None:
    """What is wrong with ``url`` if ``exc`` says Redis refuses it for good, else None."""
    where = f"the Redis at {_address(url)}"
    text = str(exc)
    if isinstance(exc, AuthenticationError) or text.startswith(("NOAUTH", "WRONGPASS")):
        if any(sign in text for sign in _NO_PASSWORD) and urlsplit(url).password is None:
            return (
                f"{variable}: {where} needs a password, and {shown_url(url)} has none: "
                f"put it in the URL, redis://:PASSWORD@HOST:PORT/DB (or USER:PASSWORD@ for an "
                f"ACL user)"
            )
        return f"{variable}: {where} refused the URL's user or password ({text})"
    if isinstance(exc, ResponseError) and "DB index is out of range" in text:
        return (
            f"{variable}: {where} has no database {urlsplit(url).path.lstrip('/')!r} "
            f"(a Redis has 16 unless its 'databases' setting says more: /0 to /15)"
        )
    return None


def check_redis(url: str, variable: str = "CELERY_AGENTS_REDIS_URL") -> None:
    """One PING: ``ConfigError`` if Redis refuses ``url`` for good; quiet if it is away."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        problem = refusal(exc, url, variable)
        if problem is not None:
            raise ConfigError(problem) from None
    finally:
        client.close()


def check_fleet_redis(settings: Settings) -> None:
    """``check_redis`` on each Redis a worker or beat uses: its own, and a Redis broker or
    result backend named apart from it."""
    check_redis(settings.redis_url)
    for variable, url in (
        ("CELERY_AGENTS_BROKER_URL", settings.broker_url),
        ("CELERY_AGENTS_RESULT_BACKEND", settings.result_backend),
    ):
        if url and url != settings.redis_url and urlsplit(url).scheme in REDIS_SCHEMES:
            check_redis(url, variable)


async def check_redis_async(client: aioredis.Redis, url: str) -> None:
    """``check_redis`` on a client the caller keeps (its pool retries only what is not a
    refusal): ``ConfigError`` if refused; a Redis that is away raises as any command would."""
    try:
        await client.ping()
    except redis.RedisError as exc:
        problem = refusal(exc, url)
        if problem is not None:
            raise ConfigError(problem) from None
        raise


def is_transient(exc: Exception) -> bool:
    """For redis-py's ``Retry``: an authentication error is not cured by trying again."""
    return not isinstance(exc, AuthenticationError)


def _address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
