"""Following a run's events to its end, with a deadline (runs on the I/O loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..errors import RunTimeout
from ..events import Event, MemberFailed, MessageEvent, RunStarted, RunState, is_terminal
from ..messages import ChatMessage
from ..streaming.hub import RunWatch

# How much longer than the run's own timeout a caller waits: the worker enforces the timeout
# from the run's start, and the task may first wait in the queue.
WAIT_GRACE = 5.0


async def follow(watch: RunWatch, timeout: float) -> AsyncIterator[Event]:
    """Yield the run's events up to the terminal one; ``RunTimeout`` once ``timeout`` passes
    (naming the members of a Team/TeamRun that started and never ended)."""
    deadline = asyncio.get_running_loop().time() + timeout
    running: dict[str, str] = {}
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await watch.next_event()
            except TimeoutError:
                raise _timeout(watch.run_id, timeout, running) from None
            if event.member is not None:
                if isinstance(event, RunStarted):
                    running[event.run_id] = event.member
                elif isinstance(event, MessageEvent | MemberFailed):
                    running.pop(event.run_id, None)
            yield event
            if is_terminal(event):
                return
    finally:
        await watch.close()


def _timeout(run_id: str, timeout: float, running: dict[str, str]) -> RunTimeout:
    if running:
        names = ", ".join(sorted(set(running.values())))
        return RunTimeout(
            f"no result from run {run_id} within {timeout:g}s; still running: {names} "
            "(a member's worker may have died)",
            run_id=run_id,
            running=sorted(running.values()),
        )
    return RunTimeout(
        f"no result from run {run_id} within {timeout:g}s "
        "(is a worker running and consuming the queue?)",
        run_id=run_id,
    )


async def wait_message(watch: RunWatch, timeout: float) -> ChatMessage:
    """The run's final message, or its error raised."""
    state = RunState(watch.run_id)
    async for event in follow(watch, timeout):
        state.apply(event)
    return state.result()
