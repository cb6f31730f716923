"""Messages that runs produce: ``ChatMessage`` and the TeamRun items ``AgentResponse`` / ``Talk``.

All of them are pydantic models whose JSON form round-trips exactly; that JSON is what crosses
the broker, the pub/sub channel and the result backend.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    """The one clock for timestamps on messages and events."""
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Usage(BaseModel):
    """Tokens a run consumed, as the provider reported them."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class ToolCallInfo(BaseModel):
    """One tool call made during a run, with its outcome."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None


class ChatMessage(BaseModel):
    """One message of a conversation: a prompt or an agent's answer."""

    content: Any
    role: Literal["user", "assistant", "system"] = "assistant"
    name: str | None = None
    model: str | None = None
    message_id: str = Field(default_factory=new_id)
    run_id: str | None = None
    conversation_id: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)
    usage: Usage | None = None
    cost: float | None = None
    response_time: float | None = None
    tool_calls: list[ToolCallInfo] = Field(default_factory=list)
    forwarded_from: list[str] = Field(default_factory=list)
    associated_messages: list[ChatMessage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def text(self) -> str:
        """The content as text (structured content as its JSON)."""
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, BaseModel):
            return self.content.model_dump_json()
        import json

        return json.dumps(self.content, default=str)


class Participant(BaseModel):
    """Who took part in a hand-off; has ``.name`` like the seed's agent objects."""

    model_config = ConfigDict(frozen=True)

    name: str


class Talk(BaseModel):
    """A TeamRun hand-off: ``source``'s message forwarded to ``targets``."""

    kind: Literal["talk"] = "talk"
    source: Participant
    targets: list[Participant]
    message: ChatMessage | None = None


class AgentResponse(BaseModel):
    """One agent's answer inside a Team or TeamRun execution."""

    kind: Literal["agent_response"] = "agent_response"
    agent_name: str
    message: ChatMessage
    timing: float | None = None
