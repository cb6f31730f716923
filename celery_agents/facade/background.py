"""``run_in_background``: runs at an interval on the beat, followed live from any process.

    stats = await agent.run_in_background("check the error rate", max_count=3, interval=1.0)
    while agent.is_running:
        print(stats.message_count)
    await agent.cancel()

``BackgroundStats`` follows the entry's channel (every run's result, then the entry's end) on
the facade's I/O loop; its fields are plain attributes, so reading them costs nothing.
``BackgroundRun.attach(id)`` follows an entry started elsewhere.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from ..errors import CeleryAgentsError, ClientClosed, RunCancelled, UserError, error_from_json
from ..events import MemberFailed, MessageEvent, RunDone, RunFailed, is_terminal
from ..messages import ChatMessage, Usage
from ..scheduler.entries import Entries, Entry, EntryTemplate, ttl_until
from ..streaming.hub import RunWatch
from ..text import as_text
from .bridge import on_io, run_sync
from .client import get_client

_NO_BEAT = (
    "no beat is running: background runs are fired by the scheduler; start one with "
    "`celery-agents beat` (exactly one stays active, extra ones stand by)"
)


class BackgroundStats:
    """A background entry's live state: ``message_count``, ``messages``, ``errors``,
    ``is_running``; ``await wait()`` for the end, ``await cancel()`` to stop it."""

    def __init__(self, entry_id: str, name: str, max_count: int | None) -> None:
        self.id = entry_id
        self.name = name
        self.max_count = max_count
        self.messages: list[ChatMessage] = []
        self.errors: list[CeleryAgentsError] = []
        self.is_running = True
        self.result: ChatMessage | None = None
        self.error: CeleryAgentsError | None = None
        self._seen: set[str] = set()
        self._ended = asyncio.Event()  # these two live on the I/O loop
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._closed: ClientClosed | None = None  # the facade closed: followed no more

    def __repr__(self) -> str:
        return (
            f"BackgroundStats(id={self.id!r}, name={self.name!r}, messages="
            f"{self.message_count}, errors={len(self.errors)}, running={self.is_running})"
        )

    @property
    def message_count(self) -> int:
        return len(self.messages)

    @property
    def usage(self) -> Usage:
        """Tokens of the runs so far, summed."""
        return sum((m.usage for m in self.messages if m.usage), Usage())

    @property
    def cost(self) -> float | None:
        """Cost of the runs so far (None if no run had a price)."""
        costs = [m.cost for m in self.messages if m.cost is not None]
        return round(sum(costs), 10) if costs else None

    @classmethod
    def attach(cls, entry_id: str) -> BackgroundStats:
        """Follow an entry started by another process (or a manifest schedule)."""
        return run_sync(_attach(entry_id))

    async def wait(self) -> ChatMessage | None:
        """Wait for the entry's end; its last good message, or its failure raised."""
        if self.max_count is None and self.is_running:
            raise UserError(
                f"background run {self.name!r} has no max_count and would never end: "
                "cancel() it, or give max_count"
            )
        await self.ended()
        if self._closed is not None:
            raise self._closed
        if self.error is not None:
            raise self.error
        return self.result

    async def wait_for_messages(self, count: int, timeout: float | None = None) -> None:
        """Wait until ``count`` messages arrived, or the entry ended with fewer (its last run,
        a failure limit, ``cancel()``: ``message_count`` says how many came, ``error`` why it
        ended); ``TimeoutError`` after ``timeout``."""

        async def until_count() -> None:
            async with asyncio.timeout(timeout):
                while self.message_count < count and not self._ended.is_set():
                    if self._closed is not None:
                        raise self._closed
                    self._changed.clear()
                    await self._changed.wait()

        await on_io(until_count())

    async def ended(self, timeout: float | None = None) -> None:
        """Wait until the entry has ended (its last run, a failure limit, or ``cancel()``)."""

        async def until_end() -> None:
            async with asyncio.timeout(timeout):
                await self._ended.wait()

        await on_io(until_end())

    async def cancel(self) -> None:
        """Stop future runs and cancel the one in flight; returns once no run can start, with
        ``is_running`` False (a no-op for an entry that has ended)."""

        async def cancel_and_end() -> None:
            if self._ended.is_set() and self._closed is None:
                return
            error = await _cancel(self.id)
            if error is not None and self.error is None:
                self.error = error
            self.is_running = False
            self._ended.set()
            self._changed.set()

        await on_io(cancel_and_end())

    def cancel_sync(self) -> None:
        run_sync(self.cancel())

    def _apply(self, event: Any) -> None:
        if is_terminal(event):
            if isinstance(event, RunDone):
                self.result = event.message
            elif isinstance(event, RunFailed):
                self.error = event.exception()
            self.is_running = False
            self._ended.set()
            return
        if event.position is None or len(event.position) != 1 or event.run_id in self._seen:
            return  # deeper members' events, or a redelivered run's second report
        if isinstance(event, MessageEvent):
            self._seen.add(event.run_id)
            self.messages.append(event.message)
        elif isinstance(event, MemberFailed):
            self._seen.add(event.run_id)
            self.errors.append(error_from_json(event.error))

    async def _follow(self, watch: RunWatch) -> None:
        try:
            while not self._ended.is_set():
                self._apply(await watch.next_event())
                self._changed.set()
        except ClientClosed as exc:  # shutdown() or configure(): the entry goes on unfollowed
            self._closed = exc
            self._ended.set()
            self._changed.set()
        finally:
            await watch.close()


BackgroundRun = BackgroundStats
"""The same object, by the name used to attach to an entry: ``BackgroundRun.attach(id)``."""


class BackgroundMixin:
    """``run_in_background``, ``is_running`` and ``cancel`` for Agent, Team and TeamRun."""

    _background: BackgroundStats | None = None

    def _label(self) -> str:
        return str(getattr(self, "name", type(self).__name__))

    @property
    def is_running(self) -> bool:
        """True from ``run_in_background`` until its last run ended or it was cancelled."""
        return self._background is not None and self._background.is_running

    async def cancel(self) -> None:
        """Cancel the running background entry (no-op if none runs)."""
        if self._background is not None and self._background.is_running:
            await self._background.cancel()

    async def _start_background(
        self,
        task: str,
        payload: dict[str, Any],
        *,
        max_count: int | None,
        interval: float,
        timeout: float,
        block: bool,
        idempotency_key: str | None = None,
    ) -> BackgroundStats:
        if self.is_running and self._background is not None:
            raise UserError(
                f"{self._label()!r} already runs in the background (entry {self._background.id}); "
                "await cancel() first, or wait() for it"
            )
        if max_count is not None and max_count < 1:
            raise UserError(
                f"max_count must be at least 1 (or None to run until cancelled), got {max_count}"
            )
        if interval < 0:
            raise UserError(f"interval must not be negative, got {interval}")
        template = EntryTemplate(
            name=self._label(),
            task=task,
            payload=payload,
            interval=interval,
            max_count=max_count,
            timeout=timeout,
        )
        stats = await on_io(_create(template, idempotency_key))
        self._background = stats
        if block:
            await stats.wait()
        return stats


async def _create(template: EntryTemplate, idempotency_key: str | None) -> BackgroundStats:
    """A new entry, followed; with a key another call claimed, that call's entry."""
    client = get_client()
    if not await client.beat_alive():
        raise UserError(_NO_BEAT)
    entry_id = uuid.uuid4().hex
    if idempotency_key:
        owner = await client.claim(idempotency_key, entry_id)
        if owner != entry_id:
            return await _attach(owner)
    stats = BackgroundStats(entry_id, template.name, template.max_count)
    watch = await client.hub.watch(entry_id, replay=False)  # subscribed before anything fires
    now = time.time()
    await Entries(client.redis, client.keys).create(
        entry_id, template, now, ttl_until(now, now, template.timeout, client.settings.result_ttl)
    )
    if idempotency_key:
        await client.confirm(idempotency_key)
    stats._pump = asyncio.create_task(stats._follow(watch))
    return stats


async def _attach(entry_id: str) -> BackgroundStats:
    client = get_client()
    entry = Entry.from_hash(entry_id, await Entries(client.redis, client.keys).read(entry_id))
    if entry.state == "unknown":
        raise UserError(f"no background run {entry_id!r} (it may have ended and expired)")
    stats = BackgroundStats(entry_id, entry.name, entry.max_count)
    watch = await client.hub.watch(entry_id)  # replays what happened so far, then follows
    stats._pump = asyncio.create_task(stats._follow(watch))
    return stats


async def _cancel(entry_id: str) -> RunCancelled | None:
    """Cancel the entry; the error its followers are told, None if it had ended already."""
    client = get_client()
    outcome = await Entries(client.redis, client.keys).cancel(entry_id, client.settings.result_ttl)
    if outcome is None:
        raise UserError(f"no background run {entry_id!r}")
    state, *inflight = (as_text(v) for v in outcome)
    if state not in ("active", "paused"):
        return None  # it had ended already
    for run_id in inflight:
        await client.cancel_run(run_id)
    error = RunCancelled(f"background run {entry_id} was cancelled", entry=entry_id)
    await client.publisher.publish(RunFailed(run_id=entry_id, error=error.to_json()))
    return error
