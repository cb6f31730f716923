"""The ``Model`` protocol: a streaming call yielding text deltas, then one ``ModelResponse``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.manifest import ModelSettings
from ..messages import Usage


@dataclass(frozen=True)
class ModelRequest:
    """What the agent loop sends: OpenAI-format chat messages and tool schemas."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    settings: ModelSettings = field(default_factory=ModelSettings)
    response_format: dict[str, Any] | None = None
    tool_choice: str | None = None


@dataclass(frozen=True)
class ToolCallRequest:
    """A tool call the model asked for; ``arguments`` is the raw JSON text it produced."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ModelResponse:
    """The complete answer of one model call."""

    text: str
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model_name: str = ""
    finish_reason: str | None = None


class Model(Protocol):
    """A chat model. ``stream`` yields ``str`` deltas, then exactly one ``ModelResponse``."""

    @property
    def ref(self) -> str:
        """``provider:name``, as the agent named it."""
        ...

    def stream(self, request: ModelRequest) -> AsyncGenerator[str | ModelResponse]: ...
