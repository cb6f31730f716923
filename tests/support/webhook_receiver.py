"""A real webhook receiver on loopback for the delivery tests.

It records every request (headers, body, the status it answered), verifies signatures with
``standardwebhooks`` when it knows the secret (401 on a bad one), can answer 503 to the first
N requests, and can stop listening and listen again on the same port (a receiver that is
down, then back)::

    receiver = WebhookReceiver(secret=SECRET).start()
    receiver.fail_first(3)
    await receiver.wait_accepted(1)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int  # what the receiver answered


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebhookReceiver:
    def __init__(self, *, secret: str | None = None, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.requests: list[Received] = []
        self._failures_left = 0
        self._failing_status = 503
        self._status = 200
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def accepted(self) -> list[Received]:
        with self._changed:
            return [r for r in self.requests if 200 <= r.status < 300]

    def fail_first(self, n: int, status: int = 503) -> None:
        """Answer ``status`` to the next ``n`` requests."""
        with self._changed:
            self._failures_left, self._failing_status = n, status

    def always(self, status: int) -> None:
        """Answer ``status`` to every request from now on (after any ``fail_first``)."""
        with self._changed:
            self._status = status

    def start(self) -> WebhookReceiver:
        """Listen (again) on ``port``."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening (connections are refused until ``start``)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        self.close()

    async def wait_accepted(self, n: int, *, timeout: float = 5.0) -> list[Received]:
        """The accepted requests, once there are ``n`` (``AssertionError`` past ``timeout``)."""
        await self.wait_requests(lambda rs: sum(200 <= r.status < 300 for r in rs) >= n, timeout)
        return self.accepted

    async def wait_requests(
        self, check: Callable[[list[Received]], bool], timeout: float = 5.0
    ) -> None:
        """Until ``check(requests)`` holds; the receiver's thread wakes the waiter, whose loop
        stays free meanwhile (the deliverer under test runs on it)."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: check(self.requests), timeout)

        if not await asyncio.to_thread(wait):
            raise AssertionError(f"receiver: condition not met in {timeout}s: {self.requests}")

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._changed:
            if self._failures_left:
                self._failures_left -= 1
                return self._failing_status
            status = self._status
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError:
                return 401
        return status

    def _record(self, received: Received) -> None:
        with self._changed:
            self.requests.append(received)
            self._changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(headers, body)
                # Recorded before the sender hears the answer: what a test sees has arrived.
                receiver._record(Received(self.path, headers, body, status))
                self.send_response(status)
                # One request a connection: once close() returns, nothing is served.
                self.send_header("connection", "close")
                self.send_header("content-length", "0")
                self.end_headers()
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test reads ``requests``

        return Handler
