"""What the scripted server's two APIs share: a composed answer, and the shape of a dialect.

A scripted :class:`~celery_agents.testing.scripted_server.Step` is turned into one API-neutral
:class:`Answer` (text pieces, tool calls, token counts); a :class:`Dialect` writes that answer
as one API's JSON body or SSE events. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

_TEXT_PIECE = re.compile(r"\s*\S+\s*|\s+")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model writes it, possibly invalid


@dataclass(frozen=True)
class Answer:
    content: str | None
    pieces: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int


class Dialect(Protocol):
    """One model API's wire format, as the server writes it."""

    tool_id_prefix: str

    def error_payload(self, status: int, message: str) -> dict[str, Any]:
        """The JSON body of an HTTP error answer."""
        ...

    def last_user_text(self, body: dict[str, Any]) -> str:
        """What :class:`Echo` answers: the text of the last user turn."""
        ...

    def prompt_words(self, body: dict[str, Any]) -> int:
        """The default prompt token count: the words of the request's text."""
        ...

    def completion(self, model: str | None, answer: Answer) -> dict[str, Any]:
        """The body of a non-streaming answer."""
        ...

    def stream(
        self, model: str | None, answer: Answer, body: dict[str, Any], *, finished: bool
    ) -> list[bytes]:
        """The SSE events of a streamed answer; ``finished=False``: those before its end."""
        ...

    def broken_stream(self, model: str | None, where: Literal["sse", "error"]) -> list[bytes]:
        """One valid event, then unparseable data (``sse``) or an error event (``error``)."""
        ...


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def content_text(content: Any) -> str:
    """A message's text: a string, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


def messages_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]


def split_text(text: str) -> list[str]:
    """Split into word pieces whose concatenation is exactly ``text``."""
    return _TEXT_PIECE.findall(text)


def split_arguments(arguments: str) -> list[str]:
    # At least two pieces whenever possible, so clients have to assemble the arguments.
    if len(arguments) < 2:
        return [arguments]
    size = max(1, len(arguments) // 3)
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]
