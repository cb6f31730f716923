"""Following a run's events to its end, with a deadline (runs on the I/O loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..errors import RunTimeout
from ..events import Event, RunState, is_terminal
from ..messages import ChatMessage
from ..streaming.hub import RunWatch

# How much longer than the run's own timeout a caller waits: the worker enforces the timeout
# from the run's start, and the task may first wait in the queue.
WAIT_GRACE = 5.0


async def follow(watch: RunWatch, timeout: float) -> AsyncIterator[Event]:
    """Yield the run's events up to the terminal one; ``RunTimeout`` once ``timeout`` passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await watch.next_event()
            except TimeoutError:
                raise RunTimeout(
                    f"no result from run {watch.run_id} within {timeout:g}s "
                    "(is a worker running and consuming the queue?)",
                    run_id=watch.run_id,
                ) from None
            yield event
            if is_terminal(event):
                return
    finally:
        await watch.close()


async def wait_message(watch: RunWatch, timeout: float) -> ChatMessage:
    """The run's final message, or its error raised."""
    state = RunState(watch.run_id)
    async for event in follow(watch, timeout):
        state.apply(event)
    return state.result()
