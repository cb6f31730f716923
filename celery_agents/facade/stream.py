"""``RunStream``: a run's events as they happen (``agent.run_stream``, ``team_run.run_stream``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any

from ..errors import StreamGap, UserError
from ..events import Event, RunState, TextDelta
from ..messages import ChatMessage
from ..streaming.hub import RunWatch
from .bridge import iterate_on_io, on_io
from .follow import WAIT_GRACE, follow

Starter = Callable[[], Coroutine[Any, Any, RunWatch]]


class TextChunk(str):
    """A text delta that also says which agent produced it (``agent``, ``position``)."""

    agent: str
    position: tuple[int, ...]

    def __new__(cls, text: str, agent: str, position: tuple[int, ...] = ()) -> TextChunk:
        chunk = super().__new__(cls, text)
        chunk.agent = agent
        chunk.position = position
        return chunk


class RunStream:
    """``async with`` starts the run; ``stream()`` yields text, ``get_message()`` the result.

    Leaving the block early stops listening; the run itself completes on its workers and
    stores its result.
    """

    def __init__(
        self,
        start: Starter,
        *,
        run_id: str,
        name: str,
        timeout: float,
        convert: Callable[[ChatMessage], ChatMessage] | None = None,
    ) -> None:
        self.run_id = run_id
        self.name = name
        self._convert = convert
        self._start = start
        self._timeout = timeout
        self._state = RunState(run_id)
        self._watch: RunWatch | None = None
        self._events: AsyncIterator[Event] | None = None

    async def __aenter__(self) -> RunStream:
        self._watch = await on_io(self._start())
        if self._watch.run_id != self.run_id:  # an idempotency key's first run, followed
            self.run_id = self._watch.run_id
            self._state = RunState(self.run_id)
        self._events = iterate_on_io(follow(self._watch, self._timeout + WAIT_GRACE))
        return self

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
        """Every event of the run (and of its members), in order, up to the terminal one."""
        if self._events is None:
            raise UserError("use the stream inside `async with ....run_stream(...) as stream:`")
        async for event in self._events:
            self._state.apply(event)
            yield event

    async def stream(self) -> AsyncIterator[TextChunk]:
        """Text deltas as the models produce them, each tagged with its agent; for one agent,
        joined they equal the final content. Raises the run's error if it fails."""
        async for event in self.events():
            if isinstance(event, TextDelta):
                yield TextChunk(event.text, event.member or self.name, tuple(event.position or ()))
        if self._state.error is not None:
            raise self._state.error
        if self.gap is not None:
            raise StreamGap(
                f"run {self.run_id}: {self.gap}: the streamed text is not the whole answer; "
                "the final message is (get_message())",
                result=self._state.message,
                run_id=self.run_id,
            )

    @property
    def gap(self) -> str | None:
        """Why events of this stream were lost on the way, or None: it was whole."""
        return self._watch.gap if self._watch is not None else None

    async def get_message(self) -> ChatMessage:
        """Wait for the end of the run and return its final message."""
        async for _ in self.events():
            pass
        message = self._state.result()
        return self._convert(message) if self._convert else message
