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
  or a 200 answer in JSON where a stream was asked for.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import openai
from openai import AsyncOpenAI

from .sse import SseDecoder

_EXCERPT = 200  # characters of an unexpected answer quoted in the error


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

    async def stream(self, body: dict[str, Any], timeout: float) -> AsyncIterator[dict[str, Any]]:
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
            async for chunk in _chunks(response):
                yield chunk
        except _HTTP.TransportError as exc:  # a read timed out or the connection broke
            raise openai.APIConnectionError(message=str(exc), request=request) from exc
        finally:
            await response.aclose()


async def _send(http: Any, request: Any) -> Any:
    try:
        return await http.send(request, stream=True)
    except _HTTP.TimeoutException as exc:
        raise openai.APITimeoutError(request=request) from exc
    except _HTTP.TransportError as exc:
        raise openai.APIConnectionError(message=str(exc), request=request) from exc


async def _chunks(response: Any) -> AsyncIterator[dict[str, Any]]:
    """The stream's JSON chunks up to ``[DONE]``; the body is read to its end either way, so
    the connection goes back to the pool (one left unread is closed instead)."""
    decoder = SseDecoder()
    finished = False
    async for data in response.aiter_bytes():
        if finished:
            continue
        for event in decoder.feed(data):
            if event.data.startswith("[DONE]"):
                finished = True
                break
            yield _chunk(event.data, response)
    if not finished:
        for event in decoder.close():
            if event.data.startswith("[DONE]"):
                return
            yield _chunk(event.data, response)


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
    return openai.APIStatusError(
        f"Error code: {response.status_code} - {body}", response=response, body=body
    )
