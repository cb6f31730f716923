"""``AsyncioNetworkBackend``: httpcore's network layer on plain asyncio streams.

httpx (under the openai SDK) parses HTTP with h11 and pools connections with httpcore; for the
bytes themselves httpcore uses anyio, which on every read and write enters a cancel scope and
yields one turn of the event loop. A worker keeps hundreds of model streams in flight on one
loop, so each of those turns waits behind all the others: measured here, at 200 streams of a
1 s model, calls took 1.06-1.10 s at the median and 1.2 s at p90 through anyio, 1.005 s and
1.03 s through this backend (162-169 against 190-191 calls/s). HTTP, TLS settings, proxies
and pooling stay httpx's and httpcore's; only the socket reads and writes change.
"""

from __future__ import annotations

import asyncio
import importlib
import select
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .chat_http import http_library

# httpcore's own exception types (the module is httpcore, or httpcore2 beside httpx2)
_CORE: Any = importlib.import_module(http_library().__name__.replace("httpx", "httpcore"))
# A host with several addresses: the next one is tried after this long, beside the first
# (RFC 8305), so an address whose route drops packets does not cost the connect timeout.
_NEXT_ADDRESS_AFTER = 0.25


@contextmanager
def _mapped(timeout_as: type[Exception], error_as: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timeout_as(str(exc) or "timed out") from exc
    except OSError as exc:  # resets, refusals, TLS failures (ssl.SSLError is an OSError)
        raise error_as(str(exc)) from exc


class AsyncioNetworkStream(_CORE.AsyncNetworkStream):  # type: ignore[misc]  # untyped base
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(_CORE.ReadTimeout, _CORE.ReadError):
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(_CORE.WriteTimeout, _CORE.WriteError):
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()

    async def aclose(self) -> None:
        if self._writer.get_extra_info("ssl_object") is not None:
            # No TLS goodbye: asyncio's would hold the socket until the peer answers (up to
            # 30 s); httpcore only closes a connection it is done with, as anyio's does.
            self._writer.transport.abort()
        else:
            self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncioNetworkStream:
        try:
            with _mapped(_CORE.ConnectTimeout, _CORE.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException:
            self._writer.close()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":  # an idle pooled connection with something to read is dead
            return self._has_input()
        return None

    def _has_input(self) -> bool:
        """Whether an idle connection got data or its end: asyncio reads ahead into the
        reader's buffer, so that is looked at before the socket itself."""
        buffered: bytes | bytearray = getattr(self._reader, "_buffer", b"")
        if self._reader.at_eof() or buffered:
            return True
        sock = self._writer.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return True
        return _readable_now(sock.fileno())


class AsyncioNetworkBackend(_CORE.AsyncNetworkBackend):  # type: ignore[misc]  # untyped base
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[Any, ...]] | None = None,
    ) -> AsyncioNetworkStream:
        with _mapped(_CORE.ConnectTimeout, _CORE.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    happy_eyeballs_delay=_NEXT_ADDRESS_AFTER,
                )
            _apply(writer, socket_options)  # asyncio sets TCP_NODELAY itself
        return AsyncioNetworkStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[tuple[Any, ...]] | None = None,
    ) -> AsyncioNetworkStream:
        with _mapped(_CORE.ConnectTimeout, _CORE.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
            _apply(writer, socket_options)
        return AsyncioNetworkStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _apply(writer: asyncio.StreamWriter, options: Iterable[tuple[Any, ...]] | None) -> None:
    sock = writer.get_extra_info("socket")
    try:
        for option in options or ():
            sock.setsockopt(*option)
    except OSError:
        writer.transport.abort()
        raise


def _readable_now(fd: int) -> bool:
    """Whether ``fd`` has something to read (poll: ``select`` fails on fds from 1024 on)."""
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def use_asyncio_network(client: Any) -> bool:
    """Move ``client``'s (an httpx ``AsyncClient``'s) default connection pool onto this
    backend; False if this httpx keeps its pool elsewhere (it then stays on anyio)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        return False
    pool._network_backend = AsyncioNetworkBackend()
    return True
