"""``HeldDeliveries``: a held run's task message stays invisible on a Redis broker while its
worker lives. The one place that relies on a private detail of kombu's Redis transport.

README guarantee: a run is never redelivered while its worker is alive, however long it runs;
a dead worker's runs are redelivered within seconds (``recovery.py`` marks its messages as
long delivered), or at the latest a visibility timeout after its last heartbeat.

kombu's Redis transport keeps each unacknowledged message's delivery tag in a sorted set
(``Channel.unacked_index_key``, "unacked_index"), scored with the time it was delivered. Every
``unacked_restore_interval``, any consumer puts back on its queue each message scored older
than the visibility timeout (``QoS.restore_visible``), alive worker or not
(celery/celery#2599, #5935). A worker re-stamps the tags it holds with the current time on
every lease renewal, so only a dead worker's messages age past the timeout.
``tests/test_kombu_visibility.py`` pins that behaviour on the installed kombu: if an upgrade
renames the set or changes what its score means, it fails.
"""

from __future__ import annotations

import threading
import time

import redis.asyncio as aioredis
from kombu.transport.redis import Channel

from ..text import as_text

UNACKED_INDEX: str = Channel.unacked_index_key

# KEYS: kombu's unacked index. ARGV: now, delivery tags. Re-stamps the tags still unacked;
# returns those that are gone (acked).
_TOUCH = """
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
"""


# KEYS: kombu's unacked index. ARGV: delivery tags. Marks the tags still unacked as delivered
# long ago, so kombu's next sweep puts their messages back on their queues.
_EXPOSE = """
for i = 1, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then redis.call('ZADD', KEYS[1], 0, ARGV[i]) end
end
return 1
"""


async def expose(broker: aioredis.Redis, tags: list[str], index: str = UNACKED_INDEX) -> None:
    """A dead worker's messages: redelivered at kombu's next sweep, not a visibility timeout
    after its last heartbeat."""
    await broker.eval(_EXPOSE, 1, index, *tags)


class HeldDeliveries:
    """The delivery tags of the task messages this worker process holds (any thread adds)."""

    def __init__(self, broker: aioredis.Redis, index: str = UNACKED_INDEX) -> None:
        self._index = index
        self._tags: set[str] = set()
        self._lock = threading.Lock()
        self._touch = broker.register_script(_TOUCH)

    def track(self, tag: str) -> None:
        """A task message this process received: keep it invisible while held."""
        with self._lock:
            self._tags.add(tag)

    def tags(self) -> list[str]:
        with self._lock:
            return list(self._tags)

    def forget(self, tag: str) -> None:
        """A message whose ack was lost with the broker connection: let it become visible
        again, so it is redelivered, dropped as done, and acknowledged for good."""
        with self._lock:
            self._tags.discard(tag)

    async def touch(self) -> None:
        """Re-stamp every held message as delivered now; forget those acknowledged since."""
        with self._lock:
            tags = list(self._tags)
        if not tags:
            return
        gone = await self._touch(keys=[self._index], args=[time.time(), *tags])
        with self._lock:
            self._tags.difference_update(as_text(tag) for tag in gone)
