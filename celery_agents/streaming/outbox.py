"""``Outbox``: a run's progress events leave in order, batched, without the run waiting on them.

``put`` returns at once: the events go out on the next turn of the loop, together with any
others put meanwhile, in one round trip. While a batch is on its way, new events gather for
the next. ``flush`` waits until they are out (a member's start is in Redis before its model is
called, so a worker that dies then still leaves it on record). ``close`` sends what is still
waiting ahead of the run's terminal event, in the round trip that ends the run: a fast model's
text and end go out together. A publish that failed fails the next ``put`` or ``flush``, as an
awaited publish would have (the run then fails); its events stay waiting, so ``close`` sends
them again ahead of the terminal event once Redis answers.
"""

from __future__ import annotations

import asyncio

from redis.asyncio.client import Pipeline

from ..events import _Event
from .publisher import EventPublisher, Fence, Targets

BATCH = 256  # targets per round trip, at most


class Outbox:
    def __init__(self, publisher: EventPublisher, fence: Fence | None = None) -> None:
        self._publisher = publisher
        self.fence = fence  # progress goes out only while the run's lease is held
        self._waiting: list[tuple[str, _Event]] = []
        self._sending: asyncio.Task[None] | None = None
        self._on_the_way = False  # a batch was sent, its reply not read yet
        self._closing = False
        self._failed: BaseException | None = None

    def put(self, targets: Targets) -> None:
        self._raise_failure()
        self._waiting.extend(targets)
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def flush(self) -> None:
        """Return once everything put so far is in Redis."""
        while self._sending is not None:
            await asyncio.wait({self._sending})
        self._raise_failure()

    async def close(self, targets: Targets, *, after: Pipeline | None = None) -> None:
        """Everything waiting, then ``targets``; ``after``'s commands first, one round trip."""
        self._closing = True
        sending = self._sending
        if sending is not None and self._on_the_way:
            await asyncio.wait({sending})  # that batch goes first (it is on another connection)
        elif sending is not None:  # not started yet: what it would send goes with the end
            sending.cancel()
            self._sending = None
        self._failed = None  # what failed is still waiting: it is sent again now
        batch, self._waiting = [*self._waiting, *targets], []
        await self._publisher.publish_to(batch, after=after)

    async def _send(self) -> None:
        try:
            while self._waiting and not self._closing:
                batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
                self._on_the_way = True
                try:
                    await self._publisher.publish_to(batch, fence=self.fence)
                except Exception:
                    self._waiting[:0] = batch  # kept, in order, for the next try
                    raise
                self._on_the_way = False
        except Exception as exc:
            self._failed = exc
        finally:
            self._on_the_way = False
            self._sending = None

    def _raise_failure(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
