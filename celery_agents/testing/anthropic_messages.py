"""Anthropic's Messages wire format (``POST /v1/messages``) for the scripted server.

A non-streaming answer is one ``message`` object whose ``content`` holds a ``text`` block and
``tool_use`` blocks; a streamed one is the SSE sequence ``message_start``, ``ping``, per block
``content_block_start`` / ``content_block_delta`` (``text_delta``, ``input_json_delta``) /
``content_block_stop``, then ``message_delta`` (``stop_reason`` and usage) and ``message_stop``.
Errors are ``{"type": "error", "error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Literal

from ._wire import Answer, ToolCall, content_text, dumps, messages_of, split_arguments

DEFAULT_MODEL = "scripted"

_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_payload(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def sse_event(payload: dict[str, Any]) -> bytes:
    """One event, named by its payload's ``type`` as Anthropic names them."""
    return f"event: {payload['type']}\ndata: {dumps(payload)}\n\n".encode()


def _stop_reason(answer: Answer) -> str:
    return "tool_use" if answer.tool_calls else "end_turn"


def _tool_input(call: ToolCall) -> Any:
    # The API always sends an object; arguments scripted as text that is not one are sent as
    # they are, so a client's handling of a broken tool call can be tested.
    try:
        value = json.loads(call.arguments)
    except json.JSONDecodeError:
        return call.arguments
    return value if isinstance(value, dict) else call.arguments


def _has_text(message: dict[str, Any]) -> bool:
    content = message.get("content")
    if isinstance(content, str):
        return True
    blocks = content if isinstance(content, list) else []
    return any(isinstance(block, dict) and block.get("type") == "text" for block in blocks)


class Messages:
    """Answers as Messages API ``message`` bodies and stream events."""

    tool_id_prefix = "toolu_"

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def error_payload(self, status: int, message: str) -> dict[str, Any]:
        return error_payload(status, message)

    def last_user_text(self, body: dict[str, Any]) -> str:
        # A user turn that only returns tool results is not what the user said.
        for message in reversed(messages_of(body)):
            if message.get("role") == "user" and _has_text(message):
                return content_text(message.get("content"))
        return ""

    def prompt_words(self, body: dict[str, Any]) -> int:
        words = len(content_text(body.get("system")).split())
        return words + sum(
            len(content_text(message.get("content")).split()) for message in messages_of(body)
        )

    def _message_id(self) -> str:
        return f"msg_scripted_{next(self._ids)}"

    def _message(self, model: str | None, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._message_id(),
            "type": "message",
            "role": "assistant",
            "model": model or DEFAULT_MODEL,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
        }

    def completion(self, model: str | None, answer: Answer) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if answer.content:
            content.append({"type": "text", "text": answer.content})
        content.extend(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call)}
            for call in answer.tool_calls
        )
        message = self._message(model, content)
        message["stop_reason"] = _stop_reason(answer)
        message["usage"] = {
            "input_tokens": answer.prompt_tokens,
            "output_tokens": answer.completion_tokens,
        }
        return message

    def _start(self, model: str | None, answer: Answer) -> list[dict[str, Any]]:
        message = self._message(model, [])
        message["usage"] = {"input_tokens": answer.prompt_tokens, "output_tokens": 1}
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def stream(
        self, model: str | None, answer: Answer, body: dict[str, Any], *, finished: bool
    ) -> list[bytes]:
        """Every event; ``finished=False`` leaves out ``message_delta`` and ``message_stop``."""
        events = self._start(model, answer)
        index = 0
        if answer.pieces:
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            events.extend(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
                for piece in answer.pieces
            )
            events.append({"type": "content_block_stop", "index": index})
            index += 1
        for call in answer.tool_calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            events.extend(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
                for piece in split_arguments(call.arguments)
            )
            events.append({"type": "content_block_stop", "index": index})
            index += 1
        if finished:
            # Cumulative counts, as the API sends them: clients replace what message_start said.
            usage = {
                "input_tokens": answer.prompt_tokens,
                "output_tokens": answer.completion_tokens,
            }
            events.append(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None},
                    "usage": usage,
                }
            )
            events.append({"type": "message_stop"})
        return [sse_event(event) for event in events]

    def broken_stream(self, model: str | None, where: Literal["sse", "error"]) -> list[bytes]:
        """``message_start`` and a text block saying ``partial``, then the break: data that is
        not JSON, or an ``error`` event (Anthropic's way of failing mid-stream)."""
        answer = Answer("partial", ("partial",), (), 1, 1)
        events = self.stream(model, answer, {}, finished=False)[:-1]  # the block stays open
        if where == "sse":
            events.append(b"event: content_block_delta\ndata: {not json\n\n")
        else:
            events.append(sse_event(error_payload(529, "the model crashed mid-stream")))
        return events
