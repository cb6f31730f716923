"""``AgentConsumer``: Celery's consumer, made to survive a Redis restart with runs in flight.

When the broker connection drops while messages are unacknowledged, Celery closes the broken
connection, and kombu's channel tries to put those messages back through that same dead
connection: it raises ``AttributeError`` (its client is already gone), and Celery stops the
worker as "unrecoverable" instead of reconnecting (celery/celery#7185, #9250). Here that close
may fail quietly: the messages stay in kombu's unacked set, their runs go on, and the ones not
acknowledged come back after the visibility timeout, where their leases drop them as done.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)


class AgentConsumer(Consumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            connection.close = _closing_quietly(connection.close)
        super().on_connection_error_after_connected(exc)


def _closing_quietly(close: Any) -> Any:
    def close_quietly() -> None:
        try:
            close()
        except Exception as exc:  # the connection was dead already: nothing left to close
            log.warning(
                "closing the lost broker connection failed (%s: %s)", type(exc).__name__, exc
            )

    return close_quietly
