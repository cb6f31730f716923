"""``AgentTask``: the base of our tasks, whose acknowledgement survives a lost broker, and
whose malformed messages are dropped alone.

A run that finishes while Redis restarts acknowledges its message on a channel that went with
the connection; kombu raises from deep inside (``AttributeError``) and Celery stops the worker
as "unrecoverable" (celery/celery#7185, #9250). That ack is given up instead: the message
comes back after the visibility timeout, and the run's lease (workers/leases.py) sees that the
run ended, drops that delivery and acknowledges it then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.request import Request

from ..workers.runtime import get_runtime

log = logging.getLogger(__name__)


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
