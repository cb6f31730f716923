"""Stream events: the wire format between workers and clients, and the pure fold over them.

Every event has ``run_id``, ``seq`` (gap-free per run, assigned by Redis when the event is
published) and ``ts``. ``run.done`` and ``run.failed`` are terminal. ``RunState`` folds a run's
events into its result without any I/O, so the worker, the client and tests share one logic.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from .errors import CeleryAgentsError, RunError, error_from_json
from .messages import ChatMessage, Participant


class _Event(BaseModel):
    run_id: str
    seq: int = 0
    # Which life of the run's stream ``seq`` counts in (Redis assigns both on publish): a
    # stream whose keys Redis lost starts over at seq 1 in a new epoch.
    epoch: str | None = None
    ts: float = Field(default_factory=time.time)
    # Set on events of a Team member / TeamRun stage re-published on its parent's channel.
    member: str | None = None
    position: list[int] | None = None


class RunStarted(_Event):
    kind: Literal["run.started"] = "run.started"
    agent: str
    model: str
    attempt: int = 1
    worker: str | None = None


class TextDelta(_Event):
    kind: Literal["text.delta"] = "text.delta"
    text: str


class ToolCallEvent(_Event):
    kind: Literal["tool.call"] = "tool.call"
    tool_call_id: str
    tool_name: str
    args: dict[str, Any]


class ToolResultEvent(_Event):
    kind: Literal["tool.result"] = "tool.result"
    tool_call_id: str
    tool_name: str
    result: Any = None
    error: str | None = None


class MessageEvent(_Event):
    kind: Literal["message"] = "message"
    message: ChatMessage


class TalkEvent(_Event):
    kind: Literal["talk"] = "talk"
    source: Participant
    targets: list[Participant]


class MemberFailed(_Event):
    kind: Literal["member.failed"] = "member.failed"
    error: dict[str, Any]


class RunFailed(_Event):
    kind: Literal["run.failed"] = "run.failed"
    error: dict[str, Any]

    def exception(self) -> CeleryAgentsError:
        return error_from_json(self.error)


class RunDone(_Event):
    kind: Literal["run.done"] = "run.done"
    message: ChatMessage


Event = Annotated[
    RunStarted
    | TextDelta
    | ToolCallEvent
    | ToolResultEvent
    | MessageEvent
    | TalkEvent
    | MemberFailed
    | RunFailed
    | RunDone,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
TERMINAL_KINDS = frozenset({"run.done", "run.failed"})


def parse_event(data: bytes | str) -> Event:
    """Parse one event from its JSON wire form."""
    return EVENT_ADAPTER.validate_json(data)


def dump_event(event: _Event) -> str:
    """The JSON an event is published as, without ``seq`` and ``epoch`` (Redis assigns them
    on publish)."""
    return event.model_dump_json(exclude={"seq", "epoch"})


def is_terminal(event: Event) -> bool:
    return event.kind in TERMINAL_KINDS and event.member is None


class RunState:
    """Folds one run's events into its outcome. Pure: no I/O, no clock."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.last_seq = 0
        self.text_parts: list[str] = []
        self.messages: list[ChatMessage] = []
        self.message: ChatMessage | None = None
        self.error: CeleryAgentsError | None = None

    @property
    def done(self) -> bool:
        return self.message is not None or self.error is not None

    def apply(self, event: Event) -> None:
        self.last_seq = max(self.last_seq, event.seq)
        if event.member is not None:
            return
        if isinstance(event, TextDelta):
            self.text_parts.append(event.text)
        elif isinstance(event, MessageEvent):
            self.messages.append(event.message)
        elif isinstance(event, RunDone):
            self.message = event.message
        elif isinstance(event, RunFailed):
            self.error = event.exception()

    def result(self) -> ChatMessage:
        """The final message, or the run's error raised."""
        if self.error is not None:
            raise self.error
        if self.message is None:
            raise RunError("the run has not finished", run_id=self.run_id)
        return self.message
