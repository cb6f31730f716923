"""``DirectSend``: a task message written straight into a Redis broker's queue list.

Celery's producer sends a task with a blocking LPUSH (on a ``redis.Redis`` it builds per
publish), then a blocking PUBLISH of the task-sent event. The client instead makes the same two
writes in the script that records the run as queued: one call on its own async connection, and
the I/O loop never blocks. The bytes are Celery's own: protocol 2 headers and
body from ``app.amqp.as_task_v2``, wrapped the way kombu's Redis transport wraps them, so
workers, Flower and redelivery cannot tell the difference (``tests/test_envelope.py`` compares
a direct send with a Celery send, field by field).

Only for a Redis broker that is the Redis the client already talks to; anything else (RabbitMQ,
a second Redis, kombu's ``global_keyprefix``) goes through Celery's producer.

A worker sends a TeamRun's chain (its first stage, then each next one) with ``capture``: Celery
builds and "publishes" the messages as always (canvas, routing, signals), to a producer that
keeps what kombu would have written instead of writing it; the worker writes that from its
event loop, in a round trip it makes anyway, instead of blocking on a publish.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from celery.events.event import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu.messaging import Producer
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ..config.settings import Settings

_EVENT_EXCHANGE = "celeryev"
_SENT_EVENT = "task-sent"
_SENT_ROUTING_KEY = "task.sent"  # Celery routes an event by its type, dashes as dots


@dataclass(frozen=True)
class Push:
    """What one send writes: the message onto its queue list, maybe the task-sent event."""

    key: str
    message: str
    event: tuple[str, str] | None = None  # (channel, message)


def queue_pushes(pipe: Pipeline, pushes: Sequence[Push]) -> None:
    """Queue ``pushes``' writes on ``pipe``, in order."""
    for push in pushes:
        pipe.lpush(push.key, push.message)
        if push.event is not None:
            pipe.publish(*push.event)


async def write_pushes(redis: Redis, pushes: Sequence[Push]) -> None:
    """Make ``pushes``' writes, in order, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_pushes(pipe, pushes)
        await pipe.execute()


class DirectSend:
    """Builds the writes of a task send for one Redis broker (see the module's docstring)."""

    def __init__(self, app: Celery, *, db: int, events: bool) -> None:
        self.app = app
        options = app.conf.broker_transport_options
        self._sep = str(options.get("sep", "\x06\x16"))
        self._steps: list[int] = sorted(options.get("priority_steps", [0, 3, 6, 9]))
        self._events = events
        self._event_channel = f"/{db}.{_EVENT_EXCHANGE}/{_SENT_ROUTING_KEY}"
        self._declared: set[str] = set()
        self._pid = -1
        self._origin = ""
        self._unconnected: Any = None  # the connection a capturing producer names (never opened)
        _capturable(app)

    @classmethod
    def for_settings(cls, app: Celery, settings: Settings) -> DirectSend | None:
        """A ``DirectSend`` when the broker is the client's Redis, else None."""
        broker = settings.broker
        if broker != settings.redis_url or not broker.startswith(("redis://", "rediss://")):
            return None
        if app.conf.broker_transport_options.get("global_keyprefix"):
            return None
        url = urlsplit(broker)
        if "db" in parse_qs(url.query):
            return None
        path = url.path.strip("/")
        if path and not path.isdigit():
            return None
        return cls(app, db=int(path or 0), events=settings.task_events)

    def declared(self, queue: str) -> bool:
        """Whether this process has sent to ``queue`` through Celery once (which declares it,
        as Celery's first send to a queue always does). Marks it as declared from now on."""
        if queue in self._declared:
            return True
        self._declared.add(queue)
        return False

    def push(
        self,
        name: str,
        task_id: str,
        kwargs: dict[str, Any],
        *,
        kwargsrepr: str,
        queue: str,
        priority: int,
    ) -> Push:
        origin = self._origin_now()
        message = self.app.amqp.as_task_v2(
            task_id,
            name,
            args=(),
            kwargs=kwargs,
            argsrepr="()",
            kwargsrepr=kwargsrepr,
            origin=origin,
            ignore_result=None,
            reply_to=self.app.thread_oid,
            create_sent_event=self._events,
        )
        body = json.dumps(message.body).encode()
        envelope = _envelope(
            body,
            message.headers,
            {
                **message.properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": priority,
            },
        )
        push = Push(key=self._queue_key(queue, priority), message=envelope)
        if message.sent_event is None:
            return push
        event = Event(
            _SENT_EVENT,
            hostname=origin,
            utcoffset=utcoffset(),
            pid=self._pid,
            clock=self.app.clock.forward(),
            **message.sent_event,
            queue=queue,
            exchange="",
            routing_key=queue,
        )
        event_envelope = _envelope(
            json.dumps(event).encode(),
            {"hostname": origin},
            {
                "delivery_mode": 1,
                "delivery_info": {
                    "exchange": _EVENT_EXCHANGE,
                    "routing_key": _SENT_ROUTING_KEY,
                },
                "priority": 0,
            },
        )
        return Push(push.key, push.message, (self._event_channel, event_envelope))

    def capture(self, send: Callable[[], object]) -> list[Push]:
        """What ``send()`` publishes through this app in this thread (``canvas.apply_async``),
        as writes, none made: task messages with their task-sent events, if any."""
        if self._unconnected is None:  # ~0.1 ms to build: once
            self._unconnected = self.app.connection_for_write()
        producer = _Capture(self._unconnected, auto_declare=False)
        token = _CAPTURING.set(producer)
        try:
            send()
        finally:
            _CAPTURING.reset(token)
        pushes: list[Push] = []
        for exchange, routing_key, envelope, priority in producer.kept:
            if not exchange:
                pushes.append(Push(self._queue_key(routing_key, priority), envelope))
            elif exchange == _EVENT_EXCHANGE and pushes and pushes[-1].event is None:
                channel = self._event_channel.replace(_SENT_ROUTING_KEY, routing_key)
                pushes[-1] = Push(pushes[-1].key, pushes[-1].message, (channel, envelope))
            else:
                raise ValueError(f"cannot send directly to exchange {exchange!r}")
        return pushes

    def _queue_key(self, queue: str, priority: int) -> str:
        """kombu's list for ``queue`` at ``priority`` (its ``_q_for_pri``)."""
        step = max((s for s in self._steps if s <= priority), default=self._steps[0])
        return f"{queue}{self._sep}{step}" if step else queue

    def _origin_now(self) -> str:
        """Celery's ``gen<pid>@<host>`` origin, recomputed after a fork."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._origin = anon_nodename()
        return self._origin


_CAPTURING: ContextVar[Producer | None] = ContextVar("celery_agents_capturing", default=None)


def _capturable(app: Celery) -> None:
    """Make ``app``'s sends use the capturing producer while ``capture`` runs (not every send
    takes a ``producer=``: ``chain.apply_async`` drops it). Other threads are not affected."""
    if getattr(app, "_celery_agents_capturable", False):
        return
    acquire = app.producer_or_acquire

    def producer_or_acquire(producer: Any = None) -> Any:
        capturing = _CAPTURING.get()
        if producer is None and capturing is not None:
            return nullcontext(capturing)
        return acquire(producer)

    app.producer_or_acquire = producer_or_acquire
    app._celery_agents_capturable = True


class _Capture(Producer):
    """kombu's ``Producer`` up to the wire: keeps each message as the Redis channel would
    store it (``prepare_message`` then ``basic_publish``), and sends nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.kept: list[tuple[str, str, str, int]] = []

    def _publish(  # the arguments of kombu's Producer._publish, in its order
        self,
        body: bytes | str,
        priority: int | None,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any] | None,
        properties: dict[str, Any],
        routing_key: str,
        mandatory: bool,
        immediate: bool,
        exchange: str,
        *rest: Any,
        **options: Any,
    ) -> None:
        raw = body.encode() if isinstance(body, str) else body  # kombu's str_to_bytes
        envelope = json.dumps(
            {
                "body": base64.b64encode(raw).decode(),
                "content-encoding": content_encoding,
                "content-type": content_type,
                "headers": headers or {},
                "properties": {
                    **properties,
                    "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                    "priority": priority or 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        )
        self.kept.append((exchange, routing_key, envelope, priority or 0))


def _envelope(body: bytes, headers: dict[str, Any], properties: dict[str, Any]) -> str:
    """kombu's Redis-stored message: the body base64-encoded, a fresh delivery tag."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
