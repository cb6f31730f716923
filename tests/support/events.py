"""Celery's task events as a monitor (Flower) receives them."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery


class FlowerFeed:
    """Every Celery event the workers send, received the way Flower receives them."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self._on})
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def _on(self, event: dict[str, Any]) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, matches: Callable[[dict[str, Any]], bool], timeout: float = 20) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: any(map(matches, self.events)), timeout), (
                f"no such event among {[e.get('type') for e in self.events]}"
            )

    def __enter__(self) -> FlowerFeed:
        self._thread.start()
        self.wait_for(lambda e: True)  # subscribed: the workers' heartbeats come through
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)

    def text(self) -> str:
        with self._changed:
            return json.dumps(self.events, default=str)
