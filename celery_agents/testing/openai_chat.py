"""OpenAI's Chat Completions wire format (``POST /v1/chat/completions``) for the scripted server."""

from __future__ import annotations

import itertools
import time
from typing import Any, Literal

from ._wire import Answer, content_text, dumps, messages_of, split_arguments

DEFAULT_MODEL = "scripted"

# (type, code) pairs shaped like OpenAI's, so client code that inspects them sees realistic values.
_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "request_timeout"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_payload(status: int, message: str) -> dict[str, Any]:
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "api_error", ""))
    return {"error": {"message": message, "type": kind, "param": None, "code": code or None}}


def sse_event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else dumps(payload)
    return f"data: {data}\n\n".encode()


def _finish_reason(answer: Answer) -> str:
    return "tool_calls" if answer.tool_calls else "stop"


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


class ChatCompletions:
    """Answers as ``chat.completion`` bodies and ``chat.completion.chunk`` events."""

    tool_id_prefix = "call_"

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def error_payload(self, status: int, message: str) -> dict[str, Any]:
        return error_payload(status, message)

    def last_user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(messages_of(body)):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""

    def prompt_words(self, body: dict[str, Any]) -> int:
        return sum(
            len(content_text(message.get("content")).split()) for message in messages_of(body)
        )

    def _completion_id(self) -> str:
        return f"chatcmpl-scripted-{next(self._ids)}"

    def completion(self, model: str | None, answer: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.content}
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in answer.tool_calls
            ]
        return {
            "id": self._completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or DEFAULT_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": _finish_reason(answer),
                    "logprobs": None,
                }
            ],
            "usage": _usage(answer),
        }

    def _chunk(
        self,
        model: str | None,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        completion_id: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": completion_id or self._completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model or DEFAULT_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def stream(
        self, model: str | None, answer: Answer, body: dict[str, Any], *, finished: bool
    ) -> list[bytes]:
        """The chunks; when ``finished``, the usage chunk (if asked for) and ``[DONE]``."""
        completion_id = self._completion_id()
        deltas: list[dict[str, Any]] = [{"role": "assistant"}]
        deltas.extend({"content": piece} for piece in answer.pieces)
        for index, call in enumerate(answer.tool_calls):
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            deltas.extend(
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in split_arguments(call.arguments)
            )
        chunks = [self._chunk(model, delta, completion_id=completion_id) for delta in deltas]
        chunks.append(self._chunk(model, {}, _finish_reason(answer), completion_id))
        options = body.get("stream_options")
        if finished and isinstance(options, dict) and options.get("include_usage") is True:
            usage_chunk = self._chunk(model, {}, completion_id=completion_id)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = _usage(answer)
            chunks.append(usage_chunk)
        events = [sse_event(chunk) for chunk in chunks]
        if finished:
            events.append(sse_event("[DONE]"))
        return events

    def broken_stream(self, model: str | None, where: Literal["sse", "error"]) -> list[bytes]:
        broken = (
            b"data: {not json\n\n"
            if where == "sse"
            else sse_event(error_payload(500, "the model crashed mid-stream"))
        )
        return [sse_event(self._chunk(model, {"role": "assistant", "content": "partial"})), broken]
