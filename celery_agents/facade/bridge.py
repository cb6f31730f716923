"""The one bridge between callers and the facade's I/O loop.

All of the facade's Redis and broker I/O runs on one event loop in a daemon thread, so a
process has one pub/sub connection whatever loops or threads its callers use (scripts,
notebooks, several ``asyncio.run`` calls). ``run_sync`` works inside a running loop too.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from ..errors import UserError

T = TypeVar("T")
_DONE = object()


class IOLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="celery-agents-io", daemon=True
        )
        self.thread.start()


_lock = threading.Lock()
_io: IOLoop | None = None


def io_loop() -> IOLoop:
    global _io
    with _lock:
        if _io is None or _io.pid != os.getpid():
            _io = IOLoop()
        return _io


def _on_io_thread() -> bool:
    return _io is not None and threading.current_thread() is _io.thread


async def on_io(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` running on the I/O loop (directly if already there)."""
    if _on_io_thread():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, io_loop().loop))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the I/O loop and block until done; fine inside a running loop."""
    if _on_io_thread():
        coro.close()
        raise UserError("run_sync() cannot be called from the facade's own I/O loop")
    future = asyncio.run_coroutine_threadsafe(coro, io_loop().loop)
    try:
        return future.result()
    except BaseException:  # Ctrl+C (or any interruption) while waiting: stop what waits
        future.cancel()
        raise


async def iterate_on_io(source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate ``source`` (which lives on the I/O loop) from the caller's loop."""
    if _on_io_thread():
        async for item in source:
            yield item
        return
    caller = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                caller.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # re-raised on the caller's side
            caller.call_soon_threadsafe(queue.put_nowait, _Raised(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            caller.call_soon_threadsafe(queue.put_nowait, _DONE)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    future = asyncio.run_coroutine_threadsafe(pump(), io_loop().loop)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        future.cancel()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error
