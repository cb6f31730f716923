"""``AgentsClient``: the process's connection to Redis and the broker (lives on the I/O loop).

``configure(settings)`` points it somewhere else; otherwise it is built from ``Settings()``
(the ``CELERY_AGENTS_*`` environment) on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from ..errors import ClientClosed, ConfigError, UserError
from ..history import ConversationStore
from ..keys import Keys
from ..messages import ChatMessage
from ..redis_check import check_redis_async
from ..redis_pool import async_redis
from ..runstate import RunRecord
from ..store.database import RunStore
from ..store.queries import as_turns, conversation_turns, forget_conversation
from ..store.url import store_url
from ..streaming.hub import EventHub, RunWatch
from ..streaming.publisher import EventPublisher
from ..tasks.app import create_client_app
from ..tasks.names import RUN_AGENT, RUN_TEAM
from ..tasks.payload import RunPayload
from ..tasks.tree import TreePayload
from ..text import as_text

_WORKER_TOOLS_TTL = 5.0
log = logging.getLogger(__name__)
CLAIM_TTL = 60  # seconds an idempotency claim lives before its run is queued
CLIENT_CONNECTIONS = 32  # the facade's Redis pool, at most (its pub/sub has its own)
CLIENT_NAME = "celery-agents-client"  # how the facade's connections show in CLIENT LIST

# KEYS: the run's record, the recent runs. ARGV: now, record ttl, name, tenant ('' for
# none), run id. The record says "queued" unless a worker already wrote more (the send may
# race the run's start); the recent runs keep the ones whose records Redis still keeps.
_ENQUEUE = """
redis.call('HSETNX', KEYS[1], 'state', 'queued')
redis.call('HSETNX', KEYS[1], 'queued_at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'name', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSETNX', KEYS[1], 'tenant', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (ARGV[1] - ARGV[2]))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""
SENDING_THREADS = 4  # Celery's producer blocks: sends go through these, off the I/O loop


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
        self._enqueue: AsyncScript | None = None
        self._sender: concurrent.futures.ThreadPoolExecutor | None = None
        self._store: RunStore | None = None
        self._store_opening = asyncio.Lock()
        self._closed = False
        self._redis_checked = False

    # Everything below runs on the I/O loop.

    async def ready(self) -> None:
        """Once per client, before its first run: a Redis that refuses the URL (password,
        database) is a ``ConfigError`` now, not a wait that ends in a redis-py error."""
        if not self._redis_checked:
            await check_redis_async(self.redis, self.settings.redis_url)
            self._redis_checked = True

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            if self._closed:  # a task left over from before: it must not open a pool no one closes
                raise ClientClosed("the facade was shut down or configured again")
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

    async def enqueue(self, payload: RunPayload | TreePayload) -> None:
        """Record the run as queued and send its task through Celery's producer, on a
        sending thread (the send blocks; the I/O loop must not), both at once."""
        await self.ready()
        if self._sender is None:
            self._sender = concurrent.futures.ThreadPoolExecutor(
                SENDING_THREADS, thread_name_prefix="celery-agents-send"
            )
        loop = asyncio.get_running_loop()
        recording = asyncio.ensure_future(self._record_queued(payload))
        try:
            await loop.run_in_executor(self._sender, self.send, payload)
        except BaseException:
            recording.cancel()
            raise
        try:
            await recording
        except Exception as exc:  # the task is sent: the worker's claim records the run
            log.warning("run %s was sent but not recorded as queued: %s", payload.run_id, exc)

    async def _record_queued(self, payload: RunPayload | TreePayload) -> None:
        if self._enqueue is None:
            self._enqueue = self.redis.register_script(_ENQUEUE)
        name = payload.agent.name if isinstance(payload, RunPayload) else payload.node.name
        await self._enqueue(
            keys=[self.keys.run_state(payload.run_id), self.keys.recent_runs()],
            args=[
                time.time(),
                self.settings.result_ttl,
                name,
                payload.tenant or "",
                payload.run_id,
            ],
        )

    async def recent(self, limit: int) -> list[RunRecord]:
        """The records of the newest ``limit`` runs clients queued (newest first), while
        Redis keeps them."""
        ids = [
            as_text(r) for r in await self.redis.zrevrange(self.keys.recent_runs(), 0, limit - 1)
        ]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(self.keys.run_state(run_id))
            raws = await pipe.execute()
        records = [RunRecord.from_hash(run_id, raw) for run_id, raw in zip(ids, raws, strict=True)]
        return [r for r in records if r.state != "unknown"]

    async def start(self, payload: RunPayload | TreePayload) -> RunWatch:
        """Subscribe to the run's channel, then send its task: no event can be missed."""
        await self.ready()
        watch = await self.hub.watch(payload.run_id, replay=False, confirmed=False)
        try:
            await self.enqueue(payload)
        except BaseException:
            await watch.close()
            raise
        return watch

    async def watch(self, run_id: str, from_seq: int = 1) -> RunWatch:
        await self.ready()
        return await self.hub.watch(run_id, from_seq)

    async def claim(self, idempotency_key: str, run_id: str) -> str:
        """The run that owns ``idempotency_key``: ``run_id`` if this call claimed it, else the
        first caller's. A claim lives briefly until its task is queued (``confirm``), so a
        client that dies in between does not block the key for long."""
        await self.ready()
        key = self.keys.idempotency(idempotency_key)
        for _ in range(3):
            if await self.redis.set(key, run_id, nx=True, ex=CLAIM_TTL):
                return run_id
            owner = await self.redis.get(key)
            if owner is not None:
                return as_text(owner)
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
        """The conversation from Redis, else (expired there) from the run store."""
        messages = await self.history.load(conversation_id)
        if messages or store_url(self.settings.store_url) is None:
            return messages
        turns = as_turns(await conversation_turns(await self.run_store(), conversation_id))
        return [m for _, asked, answered in turns for m in (asked, answered)]

    async def clear_history(self, conversation_id: str) -> None:
        """Forget the conversation in Redis and in the run store (its runs stay on record)."""
        await self.history.clear(conversation_id)
        if store_url(self.settings.store_url) is not None:
            await forget_conversation(await self.run_store(), conversation_id)

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

    async def run_store(self) -> RunStore:
        """The run store, opened (and migrated) on first use; ``ConfigError`` when it is off
        or cannot be opened."""
        async with self._store_opening:
            if self._store is None:
                url = store_url(self.settings.store_url)
                if url is None:
                    raise ConfigError("the run store is off (CELERY_AGENTS_STORE_URL=none)")
                self._store = await RunStore.open(url)
        return self._store

    async def aclose(self) -> None:
        self._closed = True
        if self._store is not None:
            await self._store.aclose()
            self._store = None
        if self._hub is not None:
            await self._hub.close()
        if self._redis is not None:
            await self._redis.aclose()
        self._hub = self._redis = self._history = self._publisher = None
        self._enqueue = None
        if self._sender is not None:
            self._sender.shutdown(wait=False)
            self._sender = None


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
