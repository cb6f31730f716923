"""A run's events as Server-Sent Events: each event's ``id:`` is its ``seq``, so a client
that reconnects with ``Last-Event-ID: n`` goes on at ``n + 1``, with no gap and no duplicate.

A comment line goes out after ``HEARTBEAT`` seconds of silence (proxies keep the connection,
clients see it is alive). A stream that ends in an error (the run's stream lost events, the
wait ran out) ends with an ``event: error`` frame naming it; a run's own failure is its
``run.failed`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from ..errors import CeleryAgentsError
from ..events import Event

HEARTBEAT = 15.0  # seconds of silence before a comment line
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(event: Event) -> str:
    if event.seq == 0:  # not of the run's stream (rebuilt from the store): no id to resume at
        return f"event: {event.kind}\ndata: {event.model_dump_json()}\n\n"
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"


def error_frame(exc: CeleryAgentsError) -> str:
    data = json.dumps({"type": type(exc).__name__, "message": exc.message})
    return f"event: error\ndata: {data}\n\n"


async def frames(
    events: AsyncIterator[Event], *, heartbeat: float = HEARTBEAT
) -> AsyncIterator[str]:
    """``events`` as SSE frames, with heartbeats while none comes. The next event is awaited
    in one task across heartbeats (cancelling it would end the source)."""
    pending: asyncio.Task[Event] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=heartbeat)
            if not done:
                yield ": heartbeat\n\n"
                continue
            current, pending = pending, None
            try:
                event = current.result()
            except StopAsyncIteration:
                return
            except CeleryAgentsError as exc:
                yield error_frame(exc)
                return
            yield frame(event)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def event_stream(events: AsyncIterator[Event]) -> StreamingResponse:
    return StreamingResponse(frames(events), media_type="text/event-stream", headers=HEADERS)
