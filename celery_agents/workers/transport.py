"""``Transport``: kombu's Redis transport, with one client per channel instead of one per call.

kombu builds a new ``redis.Redis`` (with its table of reply callbacks) for every delivery's
bookkeeping, every ack and every publish: about a tenth of a worker's consumer thread on a
2-core host. A ``redis.Redis`` is thread-safe (each command takes a connection from the
channel's pool), so the channel keeps one. The worker's consumer connection uses this
transport on a Redis broker (``AgentConsumer``); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):
    _kept_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        if self._kept_client is None:
            self._kept_client = self._create_client()  # type: ignore[no-untyped-call]
        yield self._kept_client


class Transport(kombu_redis.Transport):
    Channel = Channel


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))
