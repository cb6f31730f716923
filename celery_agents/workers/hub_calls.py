"""``HubCalls``: calls handed from other threads to the worker's consumer thread, waking it.

Celery's consumer thread runs kombu's hub: an epoll loop that sleeps up to a second when it
has nothing to read. A run that ends on the event loop must be acknowledged, and with
``acks_late`` and a full prefetch window that ack is what lets the consumer fetch the next
message: done from another thread, nothing wakes the hub to fetch it, and the next run waits
for the hub's next timer (about 0.4 s on average at 200 runs in flight, measured). A run's
ending callbacks (Celery's ack and events, a chain's next step) are handed over here instead:
the hub is woken through a pipe and runs them, on the thread that owns the broker connection
(py-amqp's channels are not thread-safe) and off the event loop (the ack is a blocking round
trip). Without a hub (not started yet, or stopped), a call runs at once in the caller's thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class HubCalls:
    def __init__(self) -> None:
        self._calls: deque[Callable[[], Any]] = deque()
        self._hub: Any = None
        self._pipe: tuple[int, int] | None = None
        self._woken = False
        self._lock = threading.Lock()  # a wake-up never goes to a pipe detach() closed

    def attach(self, hub: Any) -> None:
        """Run the calls on ``hub`` (kombu's ``Hub``), from the thread that runs it.

        Celery attaches again after the broker connection came back: its hub was reset, and
        our reader with it. Calls made in between wrote to that lost reader: the new pipe
        is woken for them, or they would wait, and every later call behind them, for good.
        """
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        with self._lock:
            self._close_pipe()
            self._pipe = read_fd, write_fd
            self._hub = hub
            hub.add_reader(read_fd, self._on_wake)
            self._woken = bool(self._calls)
            if self._woken:
                os.write(write_fd, b"!")

    def detach(self) -> None:
        """Back to calling at once; what is still waiting runs now, in this thread."""
        with self._lock:
            self._close_pipe()
            self._hub = None
            self._woken = False
        self.run_pending()

    def _close_pipe(self) -> None:
        """Close the pipe and take it off its hub, if still there (call under the lock)."""
        hub, pipe = self._hub, self._pipe
        self._pipe = None
        if pipe is None:
            return
        if hub is not None and pipe[0] in hub.readers:
            hub.remove_reader(pipe[0])
        for fd in pipe:
            os.close(fd)

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the hub's thread soon (or here and now, without a hub)."""
        self._calls.append(fn)
        if self._woken:  # one wake-up for all calls made before the hub reads it
            return
        with self._lock:
            pipe = self._pipe
            if pipe is not None:
                self._woken = True
                with contextlib.suppress(BlockingIOError):  # full of wake-ups already
                    os.write(pipe[1], b"!")
                return
        self.run_pending()

    def run_pending(self) -> None:
        while True:
            try:
                fn = self._calls.popleft()
            except IndexError:
                return
            try:
                fn()
            except Exception:
                log.exception("a run's ending callback failed")

    def _on_wake(self) -> None:
        pipe = self._pipe
        if pipe is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(pipe[0], 4096)
        self._woken = False  # before running: a call made from now on wakes the hub again
        self.run_pending()
