"""``AgentsClient``: the process's connection to Redis and the broker (lives on the I/O loop).

``configure(settings)`` points it somewhere else; otherwise it is built from ``Settings()``
(the ``CELERY_AGENTS_*`` environment) on first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from redis.commands.core import AsyncScript

from ..config.manifest import AgentsManifest
from ..config.settings import Settings
from ..errors import UserError
from ..history import ConversationStore
from ..keys import Keys
from ..messages import ChatMessage
from ..redis_pool import async_redis
from ..streaming.hub import EventHub, RunWatch
from ..streaming.publisher import EventPublisher
from ..tasks.app import create_client_app
from ..tasks.envelope import DirectSend, Push
from ..tasks.names import RUN_AGENT, RUN_TEAM
from ..tasks.payload import RunPayload
from ..tasks.tree import TreePayload

_WORKER_TOOLS_TTL = 5.0
log = logging.getLogger(__name__)
CLAIM_TTL = 60  # seconds an idempotency claim lives before its run is queued
CLIENT_CONNECTIONS = 32  # the facade's Redis pool, at most (its pub/sub has its own)
CLIENT_NAME = "celery-agents-client"  # how the facade's connections show in CLIENT LIST

# KEYS: the run's record, then (a direct send) the queue's list. ARGV: now, record ttl, then
# the task message, and the task-sent event's channel and message, if any. The record says
# "queued" unless a worker already wrote more (the send may race the run's start).
_ENQUEUE = """
redis.call('HSETNX', KEYS[1], 'state', 'queued')
redis.call('HSETNX', KEYS[1], 'queued_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if KEYS[2] then redis.call('LPUSH', KEYS[2], ARGV[3]) end
if ARGV[4] then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"""


class AgentsClient:
    """Sends runs and watches their events. Use through ``get_client()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()  # a forked child makes its own: these connections are the parent's
        self.keys = Keys(settings.key_prefix)
        self.manifest = (
            AgentsManifest.from_yaml(settings.manifest) if settings.manifest else AgentsManifest()
        )
        self.app: Celery = create_client_app(settings)
        self._redis: aioredis.Redis | None = None
        self._hub: EventHub | None = None
        self._history: ConversationStore | None = None
        self._publisher: EventPublisher | None = None
        self._worker_tools: tuple[float, set[str]] = (0.0, set())
        # On a Redis broker that is our Redis, runs are sent without Celery's producer.
        self.direct = DirectSend.for_settings(self.app, self.settings)
        self._enqueue: AsyncScript | None = None

    # Everything below runs on the I/O loop.

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            # A client's commands are short (records, replay reads): a few connections serve
            # a thousand runs in flight, and each one held costs ~18 KB.
            self._redis = async_redis(
                self.settings,
                client_name=CLIENT_NAME,
                max_connections=min(self.settings.redis_max_connections, CLIENT_CONNECTIONS),
            )
        return self._redis

    @property
    def hub(self) -> EventHub:
        if self._hub is None:
            self._hub = EventHub(self.redis, self.keys)
        return self._hub

    @property
    def publisher(self) -> EventPublisher:
        if self._publisher is None:
            self._publisher = EventPublisher(
                self.redis,
                self.keys,
                log_cap=self.settings.replay_max_events,
                ttl=self.settings.result_ttl,
            )
        return self._publisher

    @property
    def history(self) -> ConversationStore:
        if self._history is None:
            self._history = ConversationStore(self.redis, self.keys, ttl=self.settings.history_ttl)
        return self._history

    def send(self, payload: RunPayload | TreePayload) -> None:
        """Queue the run's task through Celery's producer (blocking; thread-safe)."""
        self.app.send_task(
            _task_name(payload),
            kwargs={"payload": payload.model_dump(mode="json")},
            task_id=payload.run_id,
            kwargsrepr=json.dumps(payload.summary()),
            argsrepr="()",
            **payload.route.options(self.settings.broker),
        )

    def _push(self, payload: RunPayload | TreePayload) -> Push | None:
        """The run's task as our own writes (``_record_queued``), where the broker allows it."""
        direct = self.direct
        if direct is None:
            return None
        options = payload.route.options(self.settings.broker)
        queue = options.get("queue") or self.settings.queue
        if not direct.declared(queue):
            return None
        return direct.push(
            _task_name(payload),
            payload.run_id,
            {"payload": payload.model_dump(mode="json")},
            kwargsrepr=json.dumps(payload.summary()),
            queue=queue,
            priority=options["priority"],
        )

    async def enqueue(self, payload: RunPayload | TreePayload) -> None:
        """Record the run as queued and send its task: on a Redis broker one script for
        both (one command, one round trip), else the record's round trip beside Celery's
        send."""
        push = self._push(payload)
        if push is None:
            await self._enqueue_through_celery(payload)
            return
        await self._record_queued(payload.run_id, push)

    async def _record_queued(self, run_id: str, push: Push | None = None) -> None:
        """Record the run as queued; with ``push``, send it in the same call."""
        if self._enqueue is None:
            self._enqueue = self.redis.register_script(_ENQUEUE)
        keys = [self.keys.run_state(run_id)]
        args: list[str | float] = [time.time(), self.settings.result_ttl]
        if push is not None:
            keys.append(push.key)
            args += [push.message, *(push.event or ())]
        await self._enqueue(keys=keys, args=args)

    async def _enqueue_through_celery(self, payload: RunPayload | TreePayload) -> None:
        recording = asyncio.ensure_future(self._record_queued(payload.run_id))
        await asyncio.sleep(0)  # the record's command goes out before the (blocking) send
        try:
            self.send(payload)
        except BaseException:
            recording.cancel()
            raise
        try:
            await recording
        except Exception as exc:  # the task is sent: the worker's claim records the run
            log.warning("run %s was sent but not recorded as queued: %s", payload.run_id, exc)

    async def start(self, payload: RunPayload | TreePayload) -> RunWatch:
        """Subscribe to the run's channel, then send its task: no event can be missed."""
        watch = await self.hub.watch(payload.run_id, replay=False, confirmed=False)
        try:
            await self.enqueue(payload)
        except BaseException:
            await watch.close()
            raise
        return watch

    async def watch(self, run_id: str, from_seq: int = 1) -> RunWatch:
        return await self.hub.watch(run_id, from_seq)

    async def claim(self, idempotency_key: str, run_id: str) -> str:
        """The run that owns ``idempotency_key``: ``run_id`` if this call claimed it, else the
        first caller's. A claim lives briefly until its task is queued (``confirm``), so a
        client that dies in between does not block the key for long."""
        key = self.keys.idempotency(idempotency_key)
        for _ in range(3):
            if await self.redis.set(key, run_id, nx=True, ex=CLAIM_TTL):
                return run_id
            owner = await self.redis.get(key)
            if owner is not None:
                return owner.decode() if isinstance(owner, bytes) else str(owner)
        raise UserError(f"idempotency key {idempotency_key!r} keeps changing hands")

    async def confirm(self, idempotency_key: str) -> None:
        """The claimed run is queued: keep the key as long as its result is kept."""
        await self.redis.expire(self.keys.idempotency(idempotency_key), self.settings.result_ttl)

    async def cancel_run(self, run_id: str) -> None:
        """Cancel a run: refused if it has not started, stopped (between awaits) if it runs.

        No Celery ``revoke``: a worker would drop a revoked task before it is ours to refuse,
        and a caller waiting on a queued run would never hear that it was cancelled."""
        await self.redis.set(self.keys.run_cancel(run_id), "1", ex=self.settings.result_ttl)
        await self.redis.publish(self.keys.control_channel(), f"cancel {run_id}")

    async def beat_alive(self) -> bool:
        return bool(await self.redis.exists(self.keys.beat_alive()))

    async def load_history(self, conversation_id: str) -> list[ChatMessage]:
        return await self.history.load(conversation_id)

    async def clear_history(self, conversation_id: str) -> None:
        await self.history.clear(conversation_id)

    async def worker_tools(self) -> set[str]:
        """Tool names live workers advertise (cached for a few seconds)."""
        fetched_at, tools = self._worker_tools
        if time.monotonic() - fetched_at < _WORKER_TOOLS_TTL and tools:
            return tools
        tools = set()
        async for key in self.redis.scan_iter(match=self.keys.worker_pattern(), count=100):
            raw = await self.redis.get(key)
            if raw:
                tools.update(_tools_of(raw))
        self._worker_tools = (time.monotonic(), tools)
        return tools

    async def aclose(self) -> None:
        if self._hub is not None:
            await self._hub.close()
        if self._redis is not None:
            await self._redis.aclose()
        self._hub = self._redis = self._history = self._publisher = None
        self._enqueue = None


def _task_name(payload: RunPayload | TreePayload) -> str:
    return RUN_AGENT if isinstance(payload, RunPayload) else RUN_TEAM


def _tools_of(raw: bytes | str) -> list[str]:
    try:
        info: dict[str, Any] = json.loads(raw)
        return [str(t) for t in info.get("tools", [])]
    except (ValueError, AttributeError):
        return []


_lock = threading.Lock()
_client: AgentsClient | None = None
_settings: Settings | None = None


def configure(settings: Settings | None = None, **overrides: Any) -> Settings:
    """Point the facade at a Redis/broker: ``configure(Settings(...))`` or keyword overrides."""
    global _settings
    base = settings or Settings()
    if overrides:
        base = base.model_copy(update=overrides)
    shutdown()
    with _lock:
        _settings = base
    return base


def shutdown() -> None:
    """Close the facade's connections (the next call opens new ones)."""
    global _client
    with _lock:
        old, _client = _client, None
    if old is not None:
        from .bridge import run_sync

        run_sync(old.aclose())


def get_client() -> AgentsClient:
    global _client
    with _lock:
        if _client is None or _client.pid != os.getpid():
            _client = AgentsClient(_settings or Settings())
        return _client
