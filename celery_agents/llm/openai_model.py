"""``OpenAIModel``: any OpenAI-compatible chat-completions endpoint, streamed, with retries.

The call goes through ``ChatEndpoint`` (the SDK's pool and headers, our lean request and SSE
parsing); its errors are the SDK's exception types, read here.

Retries cover 408/409/429/5xx, timeouts and connection errors, honour ``retry-after``, and
happen only before the first delta was passed on (a retry after that would repeat text).
After the budget a ``ModelError`` names the provider, the status and the provider's message.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import openai

from ..errors import ModelError
from ..messages import Usage
from .base import ModelRequest, ModelResponse, ToolCallRequest
from .chat_http import ChatEndpoint

_RETRY_STATUS = frozenset({408, 409, 429})
RETRY_AFTER_CAP = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The provider's retry-after when it gave one (it knows best, up to a minute);
        otherwise our exponential backoff with jitter, capped at ``max_delay``."""
        if retry_after is not None and math.isfinite(retry_after):  # "nan" is no advice
            return float(min(max(retry_after, 0.0), RETRY_AFTER_CAP))
        backoff = self.base_delay * 2.0**attempt
        return min(backoff * (0.75 + random.random() / 2), self.max_delay)


_MIN_SECRET = 8  # shorter "keys" (placeholders like "none") are not worth hiding


class OpenAIModel:
    """A model behind a provider's endpoint (its pools shared by all runs of a worker).

    ``secret`` is the provider's key, only to take it out of error messages that echo it.
    """

    def __init__(
        self,
        endpoint: ChatEndpoint,
        model_name: str,
        *,
        ref: str,
        retry: RetryPolicy,
        request_timeout: float,
        secret: str | None = None,
        on_throttle: Callable[[float], Awaitable[None]] | None = None,
        before_retry: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._on_throttle = on_throttle
        self._before_retry = before_retry
        self._endpoint = endpoint
        self._secret = secret
        self._model_name = model_name
        self._ref = ref
        self._retry = retry
        self._timeout = request_timeout

    @property
    def ref(self) -> str:
        return self._ref

    async def stream(self, request: ModelRequest) -> AsyncGenerator[str | ModelResponse]:
        attempt = 0
        while True:
            emitted = throttled = False
            try:
                async with aclosing(self._stream_once(request)) as items:
                    async for item in items:
                        if isinstance(item, str):
                            emitted = True
                        yield item
                return
            except openai.OpenAIError as exc:
                failure, delay = self._after(exc, attempt, emitted)
                throttled = isinstance(exc, openai.APIStatusError) and exc.status_code == 429
            except ValueError as exc:
                failure, delay = self._malformed(exc), 0.0
            if failure is not None:
                # Raised out here, not in the except: the SDK's error (its message may hold
                # what the provider echoed, key included) is not kept as the context.
                raise failure
            if throttled and self._on_throttle is not None:
                await self._on_throttle(delay)  # the fleet slows down, not just this run
            attempt += 1
            await asyncio.sleep(delay)
            if self._before_retry is not None:
                await self._before_retry()  # a retry is a request too: the fleet's limits hold

    def _after(
        self, exc: openai.OpenAIError, attempt: int, emitted: bool
    ) -> tuple[ModelError | None, float]:
        """The error to raise for ``exc``, or None and the delay before trying again. A retry
        after text was passed on would repeat it: only a call that sent nothing is retried."""
        budget_left = not emitted and attempt < self._retry.max_retries
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if budget_left and (status in _RETRY_STATUS or status >= 500):
                return None, self._retry.delay(attempt, _retry_after(exc))
            return self._error(exc, attempt, status=status), 0.0
        if isinstance(exc, openai.APIConnectionError):  # includes timeouts
            if budget_left:
                return None, self._retry.delay(attempt, None)
            return self._error(exc, attempt), 0.0
        if isinstance(exc, openai.APIError):  # the server's own error, sent in the stream
            return self._error(exc, attempt), 0.0
        return self._malformed(exc), 0.0

    def _malformed(self, exc: Exception) -> ModelError:
        return ModelError(
            f"{self._ref}: malformed response from the model server: {self._redacted(str(exc))}",
            provider=self._ref.partition(":")[0],
            model=self._ref,
        )

    async def _stream_once(self, request: ModelRequest) -> AsyncGenerator[str | ModelResponse]:
        body = _request_body(self._model_name, request)
        acc = _StreamAccumulator()
        async with aclosing(self._endpoint.stream(body, self._timeout)) as chunks:
            async for chunk in chunks:
                delta = acc.add(chunk)
                if delta:
                    yield delta
        yield acc.response(self._model_name)

    def _redacted(self, text: str) -> str:
        """``text`` without the provider's key (some servers echo it in their errors)."""
        key = self._secret
        if key is not None and len(key) >= _MIN_SECRET and key in text:
            return text.replace(key, "<redacted>")
        return text

    def _error(
        self, exc: openai.OpenAIError, attempt: int, *, status: int | None = None
    ) -> ModelError:
        what = f"HTTP {status}" if status is not None else type(exc).__name__
        detail = self._redacted(_provider_message(exc))
        tries = f" after {attempt + 1} attempts" if attempt else ""
        return ModelError(
            f"{self._ref}: model request failed{tries}: {what}: {detail}",
            provider=self._ref.partition(":")[0],
            model=self._ref,
            status_code=status,
            attempts=attempt + 1,
        )


class _StreamAccumulator:
    """Assembles streamed chunks (text, tool-call fragments, usage) into one response.

    Chunks are the JSON objects as sent; a field a server leaves out or sends as ``null`` is
    the same as an empty one, a field of the wrong type is a ``TypeError`` or ``ValueError``
    (a malformed response).
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.model: str | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """The text delta of ``chunk`` ("" if none); its other parts are kept."""
        try:
            return self._add(chunk)
        except (AttributeError, KeyError, TypeError) as exc:  # e.g. "choices": "x"
            raise ValueError(
                f"a stream chunk of an unexpected shape ({exc}): {chunk!r:.200}"
            ) from None

    def _add(self, chunk: dict[str, Any]) -> str:
        self.model = self.model or chunk.get("model")
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            )
        choices = chunk.get("choices")
        if not choices:
            return ""
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or ():
            slot = self.calls.setdefault(
                int(call.get("index") or 0), {"id": "", "name": "", "arguments": ""}
            )
            slot["id"] = call.get("id") or slot["id"]
            function = call.get("function")
            if function:
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
        text = delta.get("content") or ""
        if not isinstance(text, str):
            raise ValueError(f"a delta's content is not text: {text!r}")
        if text:
            self.parts.append(text)
        return text

    def response(self, requested_model: str) -> ModelResponse:
        calls = [
            ToolCallRequest(
                id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"] or "{}"
            )
            for i, c in sorted(self.calls.items())
        ]
        return ModelResponse(
            text="".join(self.parts),
            tool_calls=calls,
            usage=self.usage,
            model_name=self.model or requested_model,
            finish_reason=self.finish_reason,
        )


def _request_body(model_name: str, request: ModelRequest) -> dict[str, Any]:
    """The JSON body of a streamed call: ``extra_body`` goes in at the top level, as the SDK
    does, and may override what we set."""
    settings = request.settings
    body: dict[str, Any] = {
        "model": model_name,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **settings.model_dump(exclude_none=True, exclude={"extra_body"}),
    }
    if request.tools:
        body["tools"] = request.tools
    if request.tool_choice:
        body["tool_choice"] = request.tool_choice
    if request.response_format:
        body["response_format"] = request.response_format
    body.update(settings.extra_body)
    return body


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


def _provider_message(exc: openai.OpenAIError) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", exc))
