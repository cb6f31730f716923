"""``RunStream``: a run's events as they happen, from ``agent.run_stream(...)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from ..errors import UserError
from ..events import Event, RunState, TextDelta
from ..messages import ChatMessage
from ..streaming.hub import RunWatch
from ..tasks.payload import RunPayload
from .bridge import iterate_on_io, on_io
from .client import AgentsClient, get_client
from .follow import WAIT_GRACE, follow

Check = Callable[[AgentsClient, RunPayload], Awaitable[None]]


class RunStream:
    """``async with`` starts the run; ``stream()`` yields text, ``get_message()`` the result.

    Leaving the block early stops listening; the run itself completes on its worker and
    stores its result.
    """

    def __init__(self, payload: RunPayload, check: Check) -> None:
        self.run_id = payload.run_id
        self._payload = payload
        self._check = check
        self._state = RunState(payload.run_id)
        self._watch: RunWatch | None = None
        self._events: AsyncIterator[Event] | None = None

    async def __aenter__(self) -> RunStream:
        self._watch = await on_io(self._start())
        self._events = iterate_on_io(follow(self._watch, self._payload.timeout + WAIT_GRACE))
        return self

    async def _start(self) -> RunWatch:
        client = get_client()
        await self._check(client, self._payload)
        return await client.start(self._payload)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]
        if self._watch is not None and not self._watch.finished:
            await on_io(self._watch.close())

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the run (deltas, tool calls, the terminal event), in order."""
        if self._events is None:
            raise UserError("use the stream inside `async with agent.run_stream(...) as stream:`")
        async for event in self._events:
            self._state.apply(event)
            yield event

    async def stream(self) -> AsyncIterator[str]:
        """Text deltas as the model produces them; joined, they equal the final content.

        Raises the run's error if it fails.
        """
        async for event in self.events():
            if isinstance(event, TextDelta) and event.member is None:
                yield event.text
        if self._state.error is not None:
            raise self._state.error

    async def get_message(self) -> ChatMessage:
        """Wait for the end of the run and return its final message."""
        async for _ in self.events():
            pass
        return self._state.result()
