"""``RunHandle``: a queued or running run, attachable by id from any process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from ..errors import StreamGap
from ..events import Event, RunDone, RunFailed, RunStarted
from ..messages import ChatMessage
from ..runstate import RunRecord, RunStatus, final_state
from ..streaming.replay import read_replay
from ..text import as_text
from .bridge import iterate_on_io, on_io, run_sync
from .client import get_client
from .follow import WAIT_GRACE, follow, wait_message
from .stored import forgotten, outcome


class RunHandle:
    """Refers to a run by its id; holds no connection until used."""

    def __init__(self, run_id: str, *, timeout: float | None = None) -> None:
        self.run_id = run_id
        self._timeout = timeout

    @classmethod
    def attach(cls, run_id: str, *, timeout: float | None = None) -> RunHandle:
        """A handle on a run started elsewhere (another process, an earlier session)."""
        return cls(run_id, timeout=timeout)

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    def _wait_for(self, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        if self._timeout is not None:
            return self._timeout + WAIT_GRACE
        return get_client().settings.run_timeout + WAIT_GRACE

    async def result(self, *, timeout: float | None = None) -> ChatMessage:
        """The run's final message (waiting for it), or its error raised."""
        wait = self._wait_for(timeout)

        async def go() -> ChatMessage:
            stored = await forgotten(self.run_id)
            if stored is not None:  # Redis expired it: the store has its end
                return outcome(stored)
            return await wait_message(await get_client().watch(self.run_id), wait)

        return await on_io(go())

    def result_sync(self, *, timeout: float | None = None) -> ChatMessage:
        return run_sync(self.result(timeout=timeout))

    async def events(
        self, from_seq: int = 1, *, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        """The run's events from ``from_seq`` on, replayed then live, up to the terminal one;
        ``StreamGap`` after it if some were lost on the way (Redis lost the run's keys)."""
        watch = await on_io(get_client().watch(self.run_id, from_seq))
        try:
            async for event in iterate_on_io(follow(watch, self._wait_for(timeout))):
                yield event
        finally:  # also when left before the first event (follow() then never started)
            await on_io(watch.close())
        if watch.gap is not None:
            raise StreamGap(
                f"run {self.run_id}: {watch.gap}; the events above are not all of them",
                run_id=self.run_id,
            )

    async def cancel(self) -> None:
        """Cancel the run: it will not start, or stops at its next await if it runs."""
        await on_io(get_client().cancel_run(self.run_id))

    async def record(self) -> RunRecord:
        """The run's durable record: state, attempt, worker and that worker's last heartbeat
        for the run (``state="unknown"`` if nobody recorded it)."""
        client = get_client()

        async def read() -> RunRecord:
            raw = await client.redis.hgetall(client.keys.run_state(self.run_id))
            return RunRecord.from_hash(self.run_id, raw)

        return await on_io(read())

    async def status(self) -> RunStatus:
        """The run's recorded state; ``unknown`` for a run nobody recorded (or long expired)."""
        client = get_client()

        async def read() -> RunStatus:
            record = await client.redis.hget(client.keys.run_state(self.run_id), "state")
            if record is not None:
                return cast(RunStatus, as_text(record))
            status = _from_events(await read_replay(client.redis, client.keys, self.run_id))
            if status == "unknown":
                stored = await forgotten(self.run_id)
                if stored is not None:
                    return cast(RunStatus, stored.state)
            return status

        return await on_io(read())


async def recent_runs(limit: int = 200) -> list[RunRecord]:
    """The records of the newest ``limit`` runs clients queued, newest first, while Redis
    keeps them (``result_ttl``): what runs now, and what ended lately."""
    return await on_io(get_client().recent(limit))


def _from_events(events: list[Event]) -> RunStatus:
    """A run whose record expired may still have its event log."""
    status: RunStatus = "unknown"
    for event in events:
        if event.member is not None:
            continue
        if isinstance(event, RunStarted):
            status = "running"
        elif isinstance(event, RunDone):
            status = "succeeded"
        elif isinstance(event, RunFailed):
            status = final_state(event.exception())
    return status
