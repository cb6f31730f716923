"""``GuardedModel``: a pydantic-ai ``WrapperModel`` that puts our fleet guarantees around every
model request a pydantic-ai agent makes, without forking pydantic-ai.

- Each request first takes its provider's fleet-wide limits (a ``RequestLimiter``: requests
  and tokens per window, concurrent requests), and settles the tokens it really used.
- Retries are ours (the SDK clients are built with ``max_retries=0``): 408/409/429/5xx and
  connection failures, with the provider's ``retry-after`` when it gives one, and only before
  the response started (a retry after text was passed on would repeat it). A 429 slows the
  whole fleet down, and every retry is one more request within the fleet's limits.
- A failure is our ``ModelError``, naming the model, the status and the provider's message,
  with the provider's key taken out of it (some servers echo it).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    UnexpectedModelBehavior,
)
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from ..errors import ModelError

T = TypeVar("T")
_RETRY_STATUS = frozenset({408, 409, 429})
RETRY_AFTER_CAP = 60.0
_MIN_SECRET = 8  # shorter "keys" (placeholders like "none") are not worth hiding


class RequestLimiter(Protocol):
    """A provider's fleet-wide limits (``workers.limits.ProviderLimiter``)."""

    async def acquire(self, estimated_tokens: int) -> str | None: ...
    async def release(self, lease: str | None) -> None: ...
    async def settle(self, estimated_tokens: int, actual_tokens: int) -> None: ...
    async def back_off(self, seconds: float) -> None: ...
    async def admit_retry(self) -> None: ...


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


class GuardedModel(WrapperModel):
    """``wrapped`` behind its provider's limits, our retries and our errors."""

    def __init__(
        self,
        wrapped: Any,
        *,
        ref: str,
        retry: RetryPolicy,
        limiter: RequestLimiter | None = None,
        secret: str | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.ref = ref
        self._retry = retry
        self._limiter = limiter
        self._secret = secret if secret is not None and len(secret) >= _MIN_SECRET else None

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        estimate = estimate_tokens(messages, model_settings)
        lease = await self._acquire(estimate)
        try:
            response = await self._attempts(
                lambda: self.wrapped.request(messages, model_settings, model_request_parameters)
            )
            await self._settle(estimate, response.usage.input_tokens + response.usage.output_tokens)
            return response
        finally:
            await self._release(lease)

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        estimate = estimate_tokens(messages, model_settings)
        lease = await self._acquire(estimate)
        try:
            async with AsyncExitStack() as stack:

                async def opened() -> StreamedResponse:
                    return await stack.enter_async_context(
                        self.wrapped.request_stream(
                            messages, model_settings, model_request_parameters, run_context
                        )
                    )

                stream = await self._attempts(opened)
                failure: ModelError | None = None
                try:
                    yield stream
                except (ModelAPIError, UnexpectedModelBehavior) as exc:
                    failure = self._failure(exc, 0)  # mid-stream: never retried
                else:
                    usage = stream.usage
                    await self._settle(estimate, usage.input_tokens + usage.output_tokens)
            if failure is not None:
                raise failure
        finally:
            await self._release(lease)

    async def _attempts(self, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except (ModelAPIError, UnexpectedModelBehavior) as exc:
                delay = self._retry_in(exc, attempt)
                failure = None if delay is not None else self._failure(exc, attempt)
                throttled = isinstance(exc, ModelHTTPError) and exc.status_code == 429
            if failure is not None:
                # Raised out here, not in the except: the SDK's error (its message may hold
                # what the provider echoed, key included) is not kept as the context.
                raise failure
            assert delay is not None
            if throttled and self._limiter is not None:
                await self._limiter.back_off(delay)  # the fleet slows down, not just this run
            attempt += 1
            await asyncio.sleep(delay)
            if self._limiter is not None:
                await self._limiter.admit_retry()  # a retry is a request too: limits hold

    def _retry_in(self, exc: Exception, attempt: int) -> float | None:
        """Seconds until the retry of a request that failed with ``exc``; None: no retry."""
        if attempt >= self._retry.max_retries or getattr(exc, "in_stream", False):
            return None
        if isinstance(exc, ModelHTTPError):
            status = exc.status_code
            if status in _RETRY_STATUS or status >= 500:
                return self._retry.delay(attempt, retry_after(exc))
            return None
        if isinstance(exc, ModelConnectionError):  # timeouts too
            return self._retry.delay(attempt, None)
        return None

    def _failure(self, exc: Exception, attempt: int) -> ModelError:
        provider = self.ref.partition(":")[0]
        tries = f" after {attempt + 1} attempts" if attempt else ""
        if isinstance(exc, UnexpectedModelBehavior):
            return ModelError(
                f"{self.ref}: malformed response from the model server: "
                f"{self._redacted(str(exc.message))}",
                provider=provider,
                model=self.ref,
            )
        status = exc.status_code if isinstance(exc, ModelHTTPError) else None
        what = f"HTTP {status}" if status is not None else type(exc).__name__
        return ModelError(
            f"{self.ref}: model request failed{tries}: {what}: "
            f"{self._redacted(provider_message(exc))}",
            provider=provider,
            model=self.ref,
            status_code=status,
            attempts=attempt + 1,
        )

    def _redacted(self, text: str) -> str:
        if self._secret is not None and self._secret in text:
            return text.replace(self._secret, "<redacted>")
        return text

    async def _acquire(self, estimate: int) -> str | None:
        return await self._limiter.acquire(estimate) if self._limiter is not None else None

    async def _release(self, lease: str | None) -> None:
        if self._limiter is not None:
            await self._limiter.release(lease)

    async def _settle(self, estimate: int, actual: int) -> None:
        if self._limiter is not None:
            await self._limiter.settle(estimate, actual)


def retry_after(exc: ModelHTTPError) -> float | None:
    """The seconds the provider asked for: pydantic-ai reads ``retry-after-ms`` and whole
    seconds or a date in ``Retry-After``; some servers send fractional seconds there."""
    if exc.retry_after is not None:
        return exc.retry_after
    raw = (exc.headers or {}).get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def provider_message(exc: Exception) -> str:
    """What the provider said: its error body's message, else the exception's own text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    said = str(getattr(exc, "message", exc))
    root = _root_cause(exc)
    if root is not exc and str(root) and str(root) not in said:
        said = f"{said} ({type(root).__name__}: {root})"  # e.g. the TLS failure under it
    return said


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while True:
        below = exc.__cause__ or exc.__context__
        if below is None or id(below) in seen:
            return exc
        seen.add(id(below))
        exc = below


def estimate_tokens(messages: list[ModelMessage], settings: ModelSettings | None) -> int:
    """A cheap upper-ish estimate of what a request over ``messages`` will use."""
    chars = sum(len(str(getattr(part, "content", ""))) for m in messages for part in m.parts)
    return estimated(chars, (settings or {}).get("max_tokens"))


def estimated(chars: int, max_tokens: int | None) -> int:
    """Tokens for ``chars`` characters of prompt (about four a token) and one answer."""
    return chars // 4 + (max_tokens or 256)
