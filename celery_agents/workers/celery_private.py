"""Where our tasks lean on Celery's (and kombu's) internals: the one module that does.

README guarantee: a Redis restart (or a lost broker connection) with runs in flight neither
stops the worker nor loses a run; the runs go on, and their messages come back and are
dropped as done. Two Celery behaviours stand in the way (celery/celery#7185, #9250):

- ``AgentConsumer``: when the broker connection drops while messages are unacknowledged,
  Celery closes the broken connection, kombu's channel tries to put those messages back
  through that same dead connection and raises ``AttributeError``, and Celery stops the
  worker as "unrecoverable" instead of reconnecting. Here that close may fail quietly: the
  messages stay in kombu's unacked set and come back after the visibility timeout, where
  their leases drop them as done.
- ``AgentRequest`` (``AgentTask.Request``): a run that finishes while Redis restarts
  acknowledges its message on a channel that went with the connection; kombu raises from
  deep inside and Celery stops the worker. That ack is given up instead, and the message,
  made visible again (``kombu_visibility``), is redelivered and dropped as already run. It
  also refuses a malformed message body alone, as an invalid task, where Celery would stop
  the worker or hang the message's acknowledgement.

``tests/faults/test_redis_restart.py`` restarts a real Redis under running workers: it fails
if an upgrade changes either behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from .runtime import get_runtime

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


class AgentRequest(Request):  # type: ignore[misc]
    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        body = kwargs.get("body") if kwargs.get("decoded") else message.payload
        problem = _malformed(body)
        if problem:
            # Celery would stop the whole worker ("unrecoverable"), or run the task and hang
            # its acknowledgement; as an invalid task it is logged and dropped alone.
            raise InvalidTaskError(f"malformed task message body: {problem}")
        super().__init__(message, *args, **kwargs)
        # Celery acks through ``message.ack`` (on its event loop, later): guard that call.
        message.ack = _acking_quietly(message.ack, self.id, message.delivery_tag)


_EMBED_LISTS = ("callbacks", "errbacks", "chain")


def _malformed(body: Any) -> str:
    """What is wrong with a protocol-2 body ``(args, kwargs, embed)``, or ""."""
    if not isinstance(body, list | tuple) or len(body) != 3:
        return "not (args, kwargs, embed)"
    call_args, call_kwargs, embed = body
    if not isinstance(call_args, list | tuple) or not isinstance(call_kwargs, dict):
        return "args must be a list and kwargs an object"
    if embed is None:
        return ""
    if not isinstance(embed, dict):
        return "embed must be an object"
    if any(not isinstance(embed.get(k), list | type(None)) for k in _EMBED_LISTS):
        return "embed's callbacks, errbacks and chain must be lists"
    if not isinstance(embed.get("chord"), dict | type(None)):
        return "embed's chord must be an object"
    return ""


def _acking_quietly(ack: Callable[..., None], task_id: str, tag: Any) -> Callable[..., None]:
    def ack_quietly(*args: Any, **kwargs: Any) -> None:
        try:
            ack(*args, **kwargs)
        except Exception as exc:  # the channel went with the connection
            if tag is not None:
                get_runtime().leases.forget_delivery(str(tag))
            log.warning(
                "could not acknowledge task %s (%s: %s); its message will come back after the "
                "visibility timeout and be dropped as already run",
                task_id,
                type(exc).__name__,
                exc,
            )

    return ack_quietly


class AgentTask(Task):  # type: ignore[misc]
    Request = AgentRequest
