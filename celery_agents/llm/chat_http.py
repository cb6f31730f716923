"""``ChatEndpoint``: one streamed chat-completions call, made straight over the provider's pool.

The ``openai`` SDK is still what configures a provider: base URL, key, organization and default
headers, and the HTTP client with its connection pool. The call itself skips the SDK's generic
request layer (a recursive transform of every parameter) and its pydantic model per SSE chunk.
On a worker those two cost more than the HTTP exchange itself: about 1.4 of 2.6 ms of CPU per
streamed call, measured here, when a worker keeps hundreds of calls in flight on one core.

Failures are raised as the SDK's own exceptions, so the retry policy reads one error tree:

- ``openai.APIStatusError``: the server answered 4xx/5xx (``body`` is its JSON error, if any);
- ``openai.APITimeoutError`` / ``openai.APIConnectionError``: no answer, or the stream broke;
- ``openai.APIError``: the server sent an ``error`` object in the stream;
- ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``): a chunk that is not JSON,
  or a 200 answer in JSON, or with no event at all, where a stream was asked for.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import openai
from openai import AsyncOpenAI

from .sse import SseDecoder

_EXCERPT = 200  # characters of an unexpected answer quoted in the error
_AFTER_DONE = 0.1  # seconds to read what follows [DONE] (the body's end) before closing


def http_library() -> ModuleType:
    """The HTTP library openai builds on (``httpx``, or ``httpx2`` in newer releases)."""
    return importlib.import_module(type(openai.DEFAULT_CONNECTION_LIMITS).__module__.split(".")[0])


_HTTP = http_library()


@dataclass(frozen=True)
class ChatEndpoint:
    """Where and how to post a chat completion; ``http`` is the SDK client's own pool."""

    http: Any  # httpx.AsyncClient (httpx2 in newer openai releases): not typed by openai
    url: str
    headers: Mapping[str, str]

    @classmethod
    def of(cls, client: AsyncOpenAI, http: Any) -> ChatEndpoint:
        """The endpoint of ``client`` (built with ``http_client=http``): its URL and headers."""
        sdk_headers = {**client.default_headers, **client.auth_headers}  # Omit() drops one
        headers = {k: v for k, v in sdk_headers.items() if isinstance(v, str)}
        headers["Accept"] = "text/event-stream"
        return cls(http, f"{client.base_url}chat/completions", headers)

    async def stream(self, body: dict[str, Any], timeout: float) -> AsyncGenerator[dict[str, Any]]:
        """The parsed chunks of one streamed completion of ``body``, up to ``[DONE]``."""
        request = self.http.build_request(
            "POST", self.url, content=json.dumps(body), headers=self.headers, timeout=timeout
        )
        response = await _send(self.http, request)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise _status_error(response)
            kind = response.headers.get("content-type", "")
            if kind.startswith("application/json"):  # one JSON body where a stream was asked
                await response.aread()
                _refuse_json_body(response)
            # Other content types are read as a stream, as the SDK does: servers label them
            # loosely; what is not an event stream fails as one.
            async with aclosing(_chunks(response)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except _HTTP.TimeoutException as exc:  # the answer stopped coming
            raise openai.APITimeoutError(request=request) from exc
        except _HTTP.RequestError as exc:  # the connection broke, or a body not decodable
            raise openai.APIConnectionError(message=str(exc), request=request) from exc
        finally:
            await response.aclose()


async def _send(http: Any, request: Any) -> Any:
    try:
        return await http.send(request, stream=True)
    except _HTTP.TimeoutException as exc:
        raise openai.APITimeoutError(request=request) from exc
    except _HTTP.RequestError as exc:
        raise openai.APIConnectionError(message=str(exc), request=request) from exc


async def _chunks(response: Any) -> AsyncGenerator[dict[str, Any]]:
    """The stream's JSON chunks up to ``[DONE]``. What follows ``[DONE]`` is read for a moment
    (``_AFTER_DONE``), so that the connection goes back to the pool; it is not the answer,
    and its errors are not the call's (a connection left unread is closed instead)."""
    decoder = SseDecoder()
    body = response.aiter_bytes()
    start = b""  # the first bytes, to quote if they were no event stream at all
    events = 0
    async for data in body:
        start = start or data[:_EXCERPT]
        for event in decoder.feed(data):
            if event.data.startswith("[DONE]"):
                await _read_rest(body)
                return
            events += 1
            yield _chunk(event.data, response)
    for event in decoder.close():
        if event.data.startswith("[DONE]"):
            return
        events += 1
        yield _chunk(event.data, response)
    if not events:
        kind = response.headers.get("content-type") or "no content type"
        raise ValueError(
            f"expected an event stream, got {kind}: {start.decode(errors='replace')!r}"
        )


async def _read_rest(body: AsyncIterator[bytes]) -> None:
    try:
        async with asyncio.timeout(_AFTER_DONE):
            async for _ in body:
                pass
    except (TimeoutError, _HTTP.HTTPError):
        pass


def _chunk(data: str, response: Any) -> dict[str, Any]:
    chunk = json.loads(data)
    if not isinstance(chunk, dict):
        raise ValueError(f"a stream chunk is not a JSON object: {data[:_EXCERPT]!r}")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        raise openai.APIError(
            f"the model server reported an error mid-stream: {message or error}",
            response.request,
            body=error,
        )
    return chunk


def _refuse_json_body(response: Any) -> None:
    """Raise for a JSON answer to a stream request: its ``error``, if it is one."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        _chunk(text, response)  # raises the server's error
    raise ValueError(f"expected an event stream, got JSON: {text[:_EXCERPT]!r}")


def _status_error(response: Any) -> openai.APIStatusError:
    text = response.text.strip()
    try:
        body: object = json.loads(text)
    except ValueError:
        body = text or None
    if isinstance(body, dict):  # {"error": {...}}: the SDK keeps the inner object, as we do
        body = body.get("error", body)
    status = response.status_code
    kind = _STATUS_ERRORS.get(status, openai.InternalServerError if status >= 500 else None)
    return (kind or openai.APIStatusError)(
        f"Error code: {status} - {body}", response=response, body=body
    )


# The SDK's subclass for each status, as its own client raises them.
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}
