"""A scripted HTTP model server for tests and benchmarks: OpenAI- and Anthropic-compatible.

``ScriptedModelServer`` listens on a real TCP socket, so separate worker processes can call it
through the ordinary ``openai`` or ``anthropic`` client. Every ``POST /v1/chat/completions``
(OpenAI's Chat Completions) and every ``POST /v1/messages`` (Anthropic's Messages) consumes one
scripted :data:`Step` (FIFO) from the same queues, so one script serves either API; when nothing
is scripted the server echoes the last user message::

    with ScriptedModelServer() as server:
        server.script(Reply("hello"), Fail(429, retry_after=0.1))
        client = openai.OpenAI(base_url=server.url, api_key="test")
        claude = anthropic.Anthropic(base_url=server.anthropic_url, api_key="test")

The server runs its own asyncio event loop in a daemon thread and speaks a deliberately small
subset of HTTP/1.1 (Content-Length or chunked request bodies, keep-alive, chunked SSE
responses), which is all the clients need. Run it standalone with::

    python -m celery_agents.testing.scripted_server --port 8000 --token-delay 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import itertools
import json
import signal
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Literal, TypeAlias

from . import openai_chat
from ._wire import Answer, Dialect, ToolCall, dumps, split_text
from .anthropic_messages import Messages
from .openai_chat import ChatCompletions

__all__ = [
    "Disconnect",
    "Echo",
    "Fail",
    "Hang",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "ScriptedModelServer",
    "Step",
    "ToolCallSpec",
    "main",
]

DEFAULT_MODEL = openai_chat.DEFAULT_MODEL

# Generous enough for any realistic request head; bodies are read separately and not bound by it.
_HEAD_LIMIT = 1 << 20
_MAX_BODY = 64 << 20
# The default listen backlog (100) drops connections when hundreds of clients connect at once.
_BACKLOG = 2048
_MALFORMED_JSON = b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{"mess'
_HTML_PAGE = b"<html><body>Sign in to the proxy to continue.</body></html>\n"
_NOT_GZIP = b"\x1f\x8b not gzip at all"
_OFF_THE_WIRE = ("html", "gzip", "done-then-close", "done-then-open")
_HELD_OPEN = 3600.0  # seconds a "done-then-open" answer keeps its connection
_SECRET_HEADERS = frozenset({"authorization", "x-api-key"})

# --------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call in a scripted :class:`Reply`.

    ``arguments`` given as a dict is JSON-encoded; a str is sent verbatim, which lets tests send
    arguments that are not valid JSON. Without ``id`` the server assigns ``call_<n>``.
    """

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """A normal assistant answer.

    ``text=None`` without tool calls echoes the last user message. ``usage`` is
    ``(prompt_tokens, completion_tokens)``; by default it is estimated as the number of words in
    the request's messages and the number of streamed text pieces (at least 1). ``latency`` and
    ``token_delay`` override the server-wide values for this reply only.
    """

    text: str | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    usage: tuple[int, int] | None = None
    latency: float | None = None
    token_delay: float | None = None


@dataclass(frozen=True)
class Echo:
    """Answer with the content of the last ``user`` message (text parts joined by spaces).

    This is also what the server does when no step is queued.
    """


@dataclass(frozen=True)
class Fail:
    """Answer with HTTP ``status`` and the API's JSON error body (OpenAI's or Anthropic's).

    ``retry_after`` (seconds) is sent as a ``retry-after`` header.
    """

    status: int
    retry_after: float | None = None
    message: str = "scripted failure"

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"Fail status must be an HTTP error (400-599), got {self.status}")


@dataclass(frozen=True)
class Hang:
    """Send nothing for ``seconds`` (to exercise client timeouts), then behave like :class:`Echo`.

    A hang occupies only its own connection and is cut short when the server stops.
    """

    seconds: float


@dataclass(frozen=True)
class Malformed:
    """Answer 200 with an unparseable payload.

    ``where="body"``: the body is broken JSON (for stream requests too, served as
    ``application/json``). ``where="sse"`` on a stream request: one valid chunk, then a
    ``data: {not json`` event, then the end of the stream. ``where="error"`` on a stream
    request: one valid chunk, then an OpenAI-style ``{"error": ...}`` event (a server that
    fails mid-stream), then the end of the stream. ``where="html"``: a ``text/html`` page (a
    proxy's, say), no event at all. ``where="gzip"``: an event stream labelled
    ``content-encoding: gzip`` that is not gzip. ``where="done-then-close"`` /
    ``"done-then-open"`` on a stream request: the whole answer and ``[DONE]``, then the
    connection closes without ending the chunked body, or stays open without ending it
    (until the client lets go or the server stops).
    """

    where: Literal["body", "sse", "error", "html", "gzip", "done-then-close", "done-then-open"] = (
        "body"
    )


@dataclass(frozen=True)
class Disconnect:
    """Drop the connection mid-answer.

    Stream requests get ``after_chunks`` valid SSE chunks (the role chunk counts) and then the
    socket closes without ``[DONE]`` or the end of the chunked body; non-stream requests get the
    socket closed without any response.
    """

    after_chunks: int = 1

    def __post_init__(self) -> None:
        if self.after_chunks < 0:
            raise ValueError("after_chunks must be >= 0")


Step: TypeAlias = Reply | Echo | Fail | Hang | Malformed | Disconnect


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it.

    ``headers`` has lower-case names and a redacted ``authorization`` value; ``body`` is the parsed
    JSON (None when the body was empty or not JSON); ``received_at`` is ``time.monotonic()``.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    model: str | None
    stream: bool
    received_at: float


# ------------------------------------------------------------------------------ HTTP plumbing


class _ProtocolError(Exception):
    """A request the HTTP parser refuses; answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


async def _read_request(reader: asyncio.StreamReader) -> _HttpRequest | None:
    """Read one request from a keep-alive connection; None when the client closed it cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _ProtocolError(400, "incomplete request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _ProtocolError(431, "request head too large") from exc

    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _ProtocolError(400, f"malformed request line {lines[0]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _ProtocolError(505, f"unsupported protocol {version!r}")

    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _ProtocolError(400, f"malformed header line {line!r}")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value

    transfer_encoding = headers.get("transfer-encoding", "").strip().lower()
    if transfer_encoding:
        if transfer_encoding != "chunked":
            raise _ProtocolError(501, f"unsupported transfer-encoding {transfer_encoding!r}")
        body = await _read_chunked_body(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            length = -1
        if length < 0:
            raise _ProtocolError(400, "invalid content-length")
        if length > _MAX_BODY:
            raise _ProtocolError(413, "request body too large")
        body = await reader.readexactly(length)
    else:
        body = b""

    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    path = target.split("?", 1)[0]
    if "://" in path:
        # absolute-form target, as sent through proxies: keep only the path
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return _HttpRequest(method.upper(), path, headers, body, keep_alive)


async def _read_chunked_body(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line[:-2].split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _ProtocolError(400, "malformed chunk size") from exc
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers carry nothing we use
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise _ProtocolError(413, "request body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _ProtocolError(400, "malformed chunk terminator")


def _status_line(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}"


def _response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [_status_line(status), "server: scripted-model-server"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _format_seconds(value: float) -> str:
    # Whole seconds are written as integers, the form HTTP prescribes; fractions keep their
    # shortest exact repr ("0.1", not "0.1000000000000000055").
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ---------------------------------------------------------------------------------- the server


class ScriptedModelServer:
    """A scripted OpenAI- and Anthropic-compatible model server on a real local socket.

    Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/messages`` (plain or SSE
    streaming), ``GET /v1/models`` and ``GET /health``. ``latency`` (seconds before an answer's
    first byte) and ``token_delay`` (seconds between streamed events) can be changed while the
    server runs. With ``tls`` (a server-side ``ssl.SSLContext``) it speaks HTTPS.

    Keys: ``/v1/messages`` wants an ``x-api-key`` (or ``authorization``) header, as Anthropic
    does; with ``api_key`` set, both APIs answer 401 unless the request carries that key
    (``x-api-key: KEY`` or ``authorization: Bearer KEY``). Recorded requests hold neither
    header's value. All public methods are thread-safe.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        token_delay: float = 0.0,
        tls: ssl.SSLContext | None = None,
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        self.api_key = api_key
        self.latency = latency
        self.token_delay = token_delay
        self._requested_port = port
        self._initial_latency = latency
        self._initial_token_delay = token_delay

        self._state_lock = threading.Lock()
        self._recorded = threading.Condition(self._state_lock)
        self._global_steps: deque[Step] = deque()
        self._model_steps: dict[str, deque[Step]] = {}
        self._requests: list[RecordedRequest] = []
        self._connections_opened = 0
        self._models_seen: dict[str, None] = {}
        self._chat = ChatCompletions()
        self._messages = Messages()
        self._tool_call_ids = itertools.count(1)

        self._lifecycle_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._bound_port: int | None = None
        # Only touched from the loop thread.
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> ScriptedModelServer:
        """Start listening (in a daemon thread) and return once the socket accepts connections.

        Calling it on a running server does nothing.
        """
        with self._lifecycle_lock:
            if self._thread is not None:
                return self
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._run_loop,
                args=(ready, failure),
                name="scripted-model-server",
                daemon=True,
            )
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                raise failure[0]
            self._thread = thread
            return self

    def stop(self) -> None:
        """Close every connection (cutting hangs short), the listening socket and the loop thread.

        Calling it on a stopped server does nothing.
        """
        with self._lifecycle_lock:
            thread, loop, shutdown = self._thread, self._loop, self._shutdown
            if thread is None:
                return
            if loop is not None and shutdown is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended on its own
                    loop.call_soon_threadsafe(shutdown.set)
            thread.join()
            self._thread = self._loop = self._shutdown = None
            self._bound_port = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on (resolved when constructed with ``port=0``)."""
        if self._bound_port is None:
            raise RuntimeError("ScriptedModelServer is not running; call start() first")
        return self._bound_port

    @property
    def url(self) -> str:
        """The OpenAI ``base_url``, e.g. ``http://127.0.0.1:PORT/v1`` (https with ``tls``)."""
        return f"{self.anthropic_url}/v1"

    @property
    def anthropic_url(self) -> str:
        """The Anthropic ``base_url``, e.g. ``http://127.0.0.1:PORT`` (its client adds ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    # ------------------------------------------------------------------------------ scripting

    def script(self, *steps: Step, model: str | None = None) -> None:
        """Queue ``steps``; each model request (either API) consumes one, first in first out.

        With ``model`` the steps are only used by requests for that model. A request whose
        model queue is empty uses the global queue, and when that is empty too, :class:`Echo`.
        """
        for step in steps:
            if not isinstance(step, Reply | Echo | Fail | Hang | Malformed | Disconnect):
                raise TypeError(f"not a scripted step: {step!r}")
        with self._state_lock:
            if model is None:
                self._global_steps.extend(steps)
            else:
                self._model_steps.setdefault(model, deque()).extend(steps)

    def reset(self) -> None:
        """Forget queued steps, recorded requests and seen models; restore the initial timings."""
        with self._state_lock:
            self._global_steps.clear()
            self._model_steps.clear()
            self._requests.clear()
            self._connections_opened = 0
            self._models_seen.clear()
            self._chat = ChatCompletions()
            self._messages = Messages()
            self._tool_call_ids = itertools.count(1)
            self.latency = self._initial_latency
            self.token_delay = self._initial_token_delay

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far (all endpoints), in arrival order."""
        with self._state_lock:
            return list(self._requests)

    @property
    def connections_opened(self) -> int:
        """How many connections clients opened so far (since the last ``reset``)."""
        with self._state_lock:
            return self._connections_opened

    @property
    def request_count(self) -> int:
        """How many requests have been received so far (all endpoints)."""
        with self._state_lock:
            return len(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests were received and return them.

        Requests are recorded on arrival, before their step runs, so this also sees requests
        that are still hanging. Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        with self._recorded:
            if not self._recorded.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} requests within {timeout}s, got {len(self._requests)}"
                )
            return list(self._requests)

    # ---------------------------------------------------------------------------- event loop

    def _run_loop(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:
            if ready.is_set():
                raise
            failure.append(exc)
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        server = await asyncio.start_server(
            self._handle_connection,
            self.host,
            self._requested_port,
            backlog=_BACKLOG,
            limit=_HEAD_LIMIT,
            ssl=self.tls,
        )
        shutdown = asyncio.Event()
        self._loop, self._shutdown = asyncio.get_running_loop(), shutdown
        self._bound_port = int(server.sockets[0].getsockname()[1])
        ready.set()
        try:
            await shutdown.wait()
        finally:
            server.close()
            # A connection accepted just before close() needs a few loop iterations (transport,
            # connection_made, first task step) before its handler registers in _connections.
            for _ in range(4):
                await asyncio.sleep(0)
            # Python 3.11's Server.close() leaves accepted connections open; end them ourselves.
            for writer in list(self._connections.values()):
                writer.transport.abort()
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        with self._state_lock:
            self._connections_opened += 1
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except _ProtocolError as exc:
                    payload = openai_chat.error_payload(exc.status, exc.message)
                    await self._send_json(writer, exc.status, payload, False)
                    break
                if request is None or not await self._dispatch(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away mid-request; there is nobody left to answer
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Ending normally matters: on 3.11 the stream
            # protocol's done-callback calls task.exception(), which logs a cancelled task as an
            # unhandled error.
            pass
        finally:
            if task is not None:
                self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ------------------------------------------------------------------------------- routing

    async def _dispatch(self, request: _HttpRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; return whether the connection may be reused."""
        body: Any = None
        valid_json = True
        if request.body:
            try:
                body = json.loads(request.body)
            except (UnicodeDecodeError, json.JSONDecodeError):
                valid_json = False
        model = body.get("model") if isinstance(body, dict) else None
        model = model if isinstance(model, str) else None
        stream = isinstance(body, dict) and body.get("stream") is True
        self._record(request, body, model, stream)

        keep_alive = request.keep_alive
        route = (request.method, request.path.rstrip("/") or "/")
        dialect: Dialect | None = None
        if route == ("POST", "/v1/chat/completions"):
            dialect = self._chat
        elif route == ("POST", "/v1/messages"):
            dialect = self._messages
        if dialect is not None:
            refusal = self._refuse(request, anthropic=dialect is self._messages)
            if refusal is not None:
                await self._send_json(writer, 401, dialect.error_payload(401, refusal), keep_alive)
                return keep_alive
            if not valid_json or not isinstance(body, dict):
                message = "request body must be a JSON object"
                await self._send_json(writer, 400, dialect.error_payload(400, message), keep_alive)
                return keep_alive
            return await self._answer(dialect, body, model, stream, keep_alive, writer)
        if route == ("GET", "/v1/models"):
            await self._send_json(writer, 200, self._models_payload(), keep_alive)
        elif route == ("GET", "/health"):
            await self._send_json(writer, 200, {"status": "ok"}, keep_alive)
        else:
            message = f"no route for {request.method} {request.path}"
            await self._send_json(writer, 404, openai_chat.error_payload(404, message), keep_alive)
        return keep_alive

    def _refuse(self, request: _HttpRequest, *, anthropic: bool) -> str | None:
        """Why a model request is refused for its key (None: it is not)."""
        sent = request.headers.get("x-api-key")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if sent is None and scheme.lower() == "bearer" and token:
            sent = token.strip()
        if sent is None:
            if anthropic:
                return "x-api-key header is required"
            return None if self.api_key is None else "an Authorization: Bearer header is required"
        if self.api_key is not None and sent != self.api_key:
            return "invalid x-api-key" if anthropic else "Incorrect API key provided"
        return None

    def _record(self, request: _HttpRequest, body: Any, model: str | None, stream: bool) -> None:
        headers = dict(request.headers)
        for secret in _SECRET_HEADERS & headers.keys():
            headers[secret] = "<redacted>"
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=headers,
            body=body,
            model=model,
            stream=stream,
            received_at=time.monotonic(),
        )
        with self._recorded:
            self._requests.append(recorded)
            if model is not None:
                self._models_seen[model] = None
            self._recorded.notify_all()

    def _models_payload(self) -> dict[str, Any]:
        with self._state_lock:
            names = dict.fromkeys([DEFAULT_MODEL, *self._models_seen])
        data = [{"id": name, "object": "model", "owned_by": "scripted"} for name in names]
        return {"object": "list", "data": data}

    def _next_step(self, model: str | None) -> Step:
        with self._state_lock:
            queue = self._model_steps.get(model) if model is not None else None
            if queue:
                return queue.popleft()
            if self._global_steps:
                return self._global_steps.popleft()
        return Echo()

    # ------------------------------------------------------------------------------ answers

    async def _answer(
        self,
        dialect: Dialect,
        body: dict[str, Any],
        model: str | None,
        stream: bool,
        keep_alive: bool,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Play the next scripted step as ``dialect``'s answer; whether the connection lives on."""
        step = self._next_step(model)
        if isinstance(step, Hang):
            await asyncio.sleep(step.seconds)
            step = Echo()
        latency = self.latency
        token_delay = self.token_delay
        if isinstance(step, Reply):
            latency = step.latency if step.latency is not None else latency
            token_delay = step.token_delay if step.token_delay is not None else token_delay
        if latency > 0:
            await asyncio.sleep(latency)

        if isinstance(step, Fail):
            headers = []
            if step.retry_after is not None:
                headers.append(("retry-after", _format_seconds(step.retry_after)))
            payload = dialect.error_payload(step.status, step.message)
            await self._send_json(writer, step.status, payload, keep_alive, headers)
            return keep_alive

        if isinstance(step, Malformed) and step.where in _OFF_THE_WIRE:
            return await self._off_the_wire(dialect, step, body, model, stream, token_delay, writer)
        if isinstance(step, Malformed):
            if stream and step.where in ("sse", "error"):
                events = dialect.broken_stream(model, "sse" if step.where == "sse" else "error")
                await self._send_stream(writer, events, token_delay, keep_alive, complete=True)
            else:
                await self._send(writer, 200, _MALFORMED_JSON, "application/json", keep_alive)
            return keep_alive

        answer = self._compose(dialect, step, body)
        if isinstance(step, Disconnect):
            if stream:
                events = dialect.stream(model, answer, body, finished=False)
                await self._send_stream(
                    writer, events[: step.after_chunks], token_delay, False, complete=False
                )
            return False

        if stream:
            events = dialect.stream(model, answer, body, finished=True)
            await self._send_stream(writer, events, token_delay, keep_alive, complete=True)
        else:
            await self._send_json(writer, 200, dialect.completion(model, answer), keep_alive)
        return keep_alive

    async def _off_the_wire(
        self,
        dialect: Dialect,
        step: Malformed,
        body: dict[str, Any],
        model: str | None,
        stream: bool,
        token_delay: float,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """The answers that break HTTP or SSE rather than JSON; the connection closes after."""
        if step.where == "html":
            await self._send(writer, 200, _HTML_PAGE, "text/html", False)
        elif step.where == "gzip":
            head = _response_head(
                200,
                [
                    ("content-type", "text/event-stream"),
                    ("content-encoding", "gzip"),
                    ("content-length", str(len(_NOT_GZIP))),
                ],
            )
            writer.write(head + _NOT_GZIP)
            await writer.drain()
        elif stream:
            answer = self._compose(dialect, Echo(), body)
            events = dialect.stream(model, answer, body, finished=True)
            await self._send_stream(writer, events, token_delay, False, complete=False)
            if step.where == "done-then-open":
                await asyncio.sleep(_HELD_OPEN)  # cut short when the server stops
        return False

    def _compose(self, dialect: Dialect, step: Step, body: dict[str, Any]) -> Answer:
        if isinstance(step, Reply) and (step.text is not None or step.tool_calls):
            content = step.text
            specs = step.tool_calls
        else:
            content = dialect.last_user_text(body)
            specs = ()
        tool_calls = tuple(
            ToolCall(
                id=(
                    spec.id
                    if spec.id is not None
                    else f"{dialect.tool_id_prefix}{next(self._tool_call_ids)}"
                ),
                name=spec.name,
                arguments=(
                    spec.arguments if isinstance(spec.arguments, str) else dumps(spec.arguments)
                ),
            )
            for spec in specs
        )
        pieces = tuple(split_text(content)) if content else ()
        if isinstance(step, Reply) and step.usage is not None:
            prompt_tokens, completion_tokens = step.usage
        else:
            prompt_tokens, completion_tokens = dialect.prompt_words(body), max(1, len(pieces))
        return Answer(content, pieces, tool_calls, prompt_tokens, completion_tokens)

    # ------------------------------------------------------------------------------- writing

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        keep_alive: bool,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "keep-alive" if keep_alive else "close"),
            *extra_headers,
        ]
        writer.write(_response_head(status, headers) + body)
        await writer.drain()

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        keep_alive: bool,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        body = dumps(payload).encode()
        await self._send(writer, status, body, "application/json", keep_alive, extra_headers)

    async def _send_stream(
        self,
        writer: asyncio.StreamWriter,
        events: Sequence[bytes],
        token_delay: float,
        keep_alive: bool,
        *,
        complete: bool,
    ) -> None:
        """Send an SSE response; with ``complete=False`` the chunked body is left unterminated."""
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive" if keep_alive else "close"),
        ]
        writer.write(_response_head(status=200, headers=headers))
        for position, event in enumerate(events):
            if position and token_delay > 0:
                await asyncio.sleep(token_delay)
            writer.write(_encode_chunk(event))
            await writer.drain()
        if complete:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


# ---------------------------------------------------------------------------------------- CLI


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server standalone (echoing by default) until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m celery_agents.testing.scripted_server",
        description="Scripted OpenAI-compatible model server (echoes the last user message).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds before each answer's first byte"
    )
    parser.add_argument(
        "--token-delay", type=float, default=0.0, help="seconds between streamed chunks"
    )
    args = parser.parse_args(argv)

    # SIGTERM takes the same clean path as Ctrl-C, so the socket is closed before exiting.
    signal.signal(signal.SIGTERM, _interrupt)
    server = ScriptedModelServer(
        args.host, args.port, latency=args.latency, token_delay=args.token_delay
    )
    try:
        with server:
            print(server.url, flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
