"""``WorkerRuntime``: what one worker process holds for all its runs.

One event loop (``EventLoopThread``) owns the async Redis client, the event publisher, the
conversation store and the model clients; Celery's pool threads hand it coroutines. It is
created lazily per process (``get_runtime``), so it works under threads, solo and prefork.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from ..config.deliver import DeliverTarget
from ..config.manifest import AgentsManifest, ProviderLimits
from ..config.settings import Settings
from ..history import ConversationStore
from ..keys import Keys
from ..llm.providers import ModelFactory
from ..redis_pool import async_redis
from ..scheduler.deliverer import Deliverer
from ..scheduler.delivery import DeliveryQueue
from ..store.database import RunStore
from ..store.entry import RunEntry
from ..store.handoff import StoreHandoff
from ..store.url import store_url
from ..store.writer import StoreWriter
from ..streaming.publisher import EventPublisher
from ..text import as_text
from ..tools import REGISTRY, ToolRegistry
from .leases import RunLeases
from .limits import LeasePool, ProviderLimiter
from .loop import EventLoopThread
from .recovery import Recovery

log = logging.getLogger(__name__)

HEARTBEAT_TTL = 60
_RECENT_CANCELS = 1000
_RECENT_CANCEL_SECONDS = 60.0
HEARTBEAT_EVERY = 15.0


class WorkerRuntime:
    def __init__(self, settings: Settings, manifest: AgentsManifest, tools: ToolRegistry) -> None:
        self.settings = settings
        self.manifest = manifest
        self.tools = tools
        self.keys = Keys(settings.key_prefix)
        self.loop = EventLoopThread()
        self.redis: aioredis.Redis = self.loop.run(self._connect())
        self.publisher = EventPublisher(
            self.redis, self.keys, log_cap=settings.replay_max_events, ttl=settings.result_ttl
        )
        self.history = ConversationStore(self.redis, self.keys, ttl=settings.history_ttl)
        self._tenant_pools: dict[str, LeasePool] = {}
        self.hostname = f"{os.getpid()}@{socket.gethostname()}"
        self._heartbeat: concurrent.futures.Future[None] | None = None
        self.recovery: Recovery | None = None  # once the worker is ready (its hostname known)
        self._recovering: concurrent.futures.Future[None] | None = None
        # Runs executing in this process (with their ancestors' run ids), so a ``cancel`` on
        # the control channel reaches them and the members of a cancelled Team/TeamRun.
        self.inflight: dict[str, tuple[asyncio.Task[Any], tuple[str, ...]]] = {}
        self.cancelled: set[str] = set()
        self.lost: set[str] = set()  # runs whose lease lapsed under them: stopped, unreported
        self._recent_cancels: dict[str, float] = {}  # run id -> when its cancel arrived
        self._broker = self._broker_redis()
        self.leases = RunLeases(
            self.redis,
            self.keys,
            worker=self.hostname,
            every=lease_interval(settings.visibility_timeout),
            record_ttl=settings.result_ttl,
            broker=self._broker,
            on_lost=self._lease_lost,
        )
        # Every real provider gets a limiter: one without limits still honours the fleet's
        # shared backoff after a 429. Its concurrency slots last a run's lease and are
        # renewed with it, so a dead worker's slots lapse as soon as its runs' leases.
        self.limiters = {
            name: ProviderLimiter(
                self.redis,
                self.keys,
                name,
                manifest.provider(name).limits or ProviderLimits(),
                lease_seconds=self.leases.lease,
            )
            for name in sorted(manifest.provider_names - {"test"})
        }
        self.models = ModelFactory(settings, manifest, limiter=self.limiters.get)
        self._open_store()
        self._deliveries = DeliveryQueue(self.keys, max_age=settings.delivery_max_age)
        self.deliverer = Deliverer(
            self.redis,
            self.keys,
            consumer=self.hostname,
            max_age=settings.delivery_max_age,
            first_backoff=settings.delivery_first_backoff,
        )
        self._delivering = asyncio.run_coroutine_threadsafe(
            self.deliverer.run_forever(), self.loop.loop
        )
        self._control = asyncio.run_coroutine_threadsafe(self._listen_control(), self.loop.loop)
        self._renewing = asyncio.run_coroutine_threadsafe(self._renew_forever(), self.loop.loop)

    def _open_store(self) -> None:
        """The run store, migrated, and this process's writer of it (a bad or unreachable
        store URL raises ``ConfigError``: the worker does not start)."""
        url = store_url(self.settings.store_url)
        self.store: RunStore | None = None
        self._handoff: StoreHandoff | None = None
        self.store_writer: StoreWriter | None = None
        self._writing: concurrent.futures.Future[None] | None = None
        if url is None:
            return
        self.store = self.loop.run(RunStore.open(url))
        self._handoff = StoreHandoff(
            self.keys, url, content=self.settings.store_content, cap=self.settings.store_backlog_max
        )
        self.store_writer = StoreWriter(
            self.redis,
            self.keys,
            self.store,
            consumer=self.hostname,
            retention_days=self.settings.store_retention_days,
        )
        self._writing = asyncio.run_coroutine_threadsafe(
            self.store_writer.run_forever(), self.loop.loop
        )

    def _lease_lost(self, run_id: str) -> None:
        """Stop a run whose lease lapsed (another execution may own it now)."""
        self.lost.add(run_id)
        running = self.inflight.get(run_id)
        if running is not None:
            running[0].cancel()

    def record(
        self, pipe: Any, entry: Callable[[], RunEntry], deliver: Sequence[DeliverTarget] = ()
    ) -> None:
        """Queue handing ``entry()`` to the run store, and its deliveries to ``deliver``'s
        targets, on ``pipe`` (then ``deliveries_queued``, once it ran); with the store off and
        nowhere to deliver, the record is not even made."""
        if self._handoff is None and not deliver:
            return
        made = entry()
        if self._handoff is not None:
            self._handoff.queue(pipe, made)
        if deliver:
            self._deliveries.queue(pipe, made, deliver)

    def deliveries_queued(self, deliver: Sequence[DeliverTarget]) -> None:
        """A run's end with deliveries has been written: this process sends them at once."""
        if deliver:
            self.deliverer.wake()

    async def _renew_forever(self) -> None:
        """Every lease interval: the leases of the runs held here, and the tenant's and
        provider's concurrency slots held for them."""
        while True:
            await asyncio.sleep(self.leases.every)
            slots = [lim.lease_pool for lim in self.limiters.values()]
            pools = [*self._tenant_pools.values(), *(pool for pool in slots if pool)]
            for renew in (self.leases.renew, *(pool.renew for pool in pools), self._cancels):
                try:
                    await renew()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the next tick tries again
                    log.warning("could not renew leases: %s", exc)

    async def _cancels(self) -> None:
        """The cancels of runs held here whose control message did not reach this process
        (pub/sub keeps nothing for a subscriber that was away): their keys say so."""
        runs = [(r, a) for r, (_, a) in self.inflight.items() if r not in self.cancelled]
        if not runs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id, ancestors in runs:
                pipe.exists(*(self.keys.run_cancel(r) for r in (run_id, *ancestors)))
            found = await pipe.execute()
        for (run_id, _), count in zip(runs, found, strict=True):
            if count and run_id in self.inflight and run_id not in self.cancelled:
                log.info("run %s: its cancel came by its key, not the control channel", run_id)
                self.cancel_local(run_id)

    def _broker_redis(self) -> aioredis.Redis | None:
        """The broker's Redis, whose unacked index the leases keep fresh (None: not Redis)."""
        broker = self.settings.broker
        if not broker.startswith(("redis://", "rediss://")):
            return None
        if broker == self.settings.redis_url:
            return self.redis
        return async_redis(
            self.settings.model_copy(update={"redis_url": broker}),
            client_name="celery-agents-worker-broker",
        )

    async def _listen_control(self) -> None:
        """Follow the control channel: ``cancel <run_id>`` cancels that run if it runs here."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.control_channel())
                async for message in pubsub.listen():
                    command, _, run_id = as_text(message.get("data", b"")).partition(" ")
                    if command == "cancel":
                        self.cancel_local(run_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: listen again once it is back
                log.warning("control channel lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2

    def cancel_local(self, run_id: str) -> None:
        """Cancel ``run_id`` if it runs here, and every member of it that runs here."""
        self._remember_cancel(run_id)
        for member, (task, ancestors) in list(self.inflight.items()):
            if member == run_id or run_id in ancestors:
                self.cancelled.add(member)
                task.cancel()

    def _remember_cancel(self, run_id: str) -> None:
        now = time.monotonic()
        if len(self._recent_cancels) >= _RECENT_CANCELS:
            cutoff = now - _RECENT_CANCEL_SECONDS
            self._recent_cancels = {r: t for r, t in self._recent_cancels.items() if t > cutoff}
        self._recent_cancels[run_id] = now

    def inflight_ancestors(self, run_id: str) -> tuple[str, ...]:
        entry = self.inflight.get(run_id)
        return entry[1] if entry is not None else ()

    def was_cancelled(self, run_id: str, ancestors: tuple[str, ...]) -> bool:
        """A cancel for the run (or a group it belongs to) arrived on the control channel
        lately: covers a cancel that raced the run's start."""
        return any(r in self._recent_cancels for r in (run_id, *ancestors))

    def tenant_pool(self, tenant: str) -> LeasePool | None:
        """The fleet-wide cap on a tenant's concurrent runs (None: uncapped)."""
        spec = self.manifest.tenants.get(tenant)
        if spec is None or spec.max_concurrent_runs is None:
            return None
        if tenant not in self._tenant_pools:
            self._tenant_pools[tenant] = LeasePool(
                self.redis,
                self.keys.tenant_leases(tenant),
                spec.max_concurrent_runs,
                self.leases.lease,
            )
        return self._tenant_pools[tenant]

    async def _connect(self) -> aioredis.Redis:
        return async_redis(self.settings, client_name="celery-agents-worker")

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerRuntime:
        manifest = (
            AgentsManifest.from_yaml(settings.manifest) if settings.manifest else AgentsManifest()
        )
        for name, path in manifest.tools.items():
            REGISTRY.load(name, path)
        return cls(settings, manifest, REGISTRY)

    def start_heartbeat(self, hostname: str, concurrency: int) -> None:
        """Advertise this worker (and its tools) so clients can check tool names early."""
        self.hostname = hostname
        self.leases.worker = hostname
        info = {
            "hostname": hostname,
            "pid": os.getpid(),
            "concurrency": concurrency,
            "tools": sorted(self.tools.names()),
            "started": time.time(),
        }
        self._heartbeat = asyncio.run_coroutine_threadsafe(
            self._beat(json.dumps(info)), self.loop.loop
        )
        # A client of its own: however busy the runs keep the shared pool, liveness gets out.
        self._liveness = async_redis(
            self.settings, client_name="celery-agents-alive", max_connections=2
        )
        self.recovery = Recovery(
            self._liveness,
            self.keys,
            self.leases.identity,
            held=self.leases.holding,
            broker=self._broker,
            dead_after=self.settings.worker_dead_after,
        )
        self._recovering = asyncio.run_coroutine_threadsafe(
            self.recovery.run_forever(), self.loop.loop
        )

    async def _beat(self, info: str) -> None:
        key = self.keys.worker(self.hostname)
        while True:
            try:
                await self.redis.set(key, info, ex=HEARTBEAT_TTL)
            except Exception as exc:  # Redis away: keep beating, the key expires meanwhile
                log.warning("worker heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_EVERY)

    def close(self) -> None:
        self._control.cancel()
        self._renewing.cancel()
        self._delivering.cancel()
        if self._writing is not None:
            self._writing.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._recovering is not None:
            self._recovering.cancel()
        try:
            self.loop.run(self._aclose())
        finally:
            self.loop.stop()

    async def _aclose(self) -> None:
        await self.redis.delete(self.keys.worker(self.hostname))
        if self.recovery is not None:
            await self.recovery.leave()
            await self._liveness.aclose()
        await self.models.aclose()
        await self.deliverer.aclose()
        if self.store is not None:
            await self.store.aclose()
        if self._broker is not None and self._broker is not self.redis:
            await self._broker.aclose()
        await self.redis.aclose()


_lock = threading.Lock()
_runtime: WorkerRuntime | None = None
_runtime_pid: int | None = None


def get_runtime(settings: Settings | None = None) -> WorkerRuntime:
    """This process's runtime, created on first use (again after a fork)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = WorkerRuntime.from_settings(settings or Settings())
            _runtime_pid = os.getpid()
        return _runtime


def close_runtime() -> None:
    global _runtime
    with _lock:
        if _runtime is not None and _runtime_pid == os.getpid():
            _runtime.close()
        _runtime = None


def lease_interval(visibility_timeout: float) -> float:
    """How often a worker renews its run leases: several times per visibility timeout (so
    a live worker's messages never become visible), at most every 15 s."""
    return max(0.5, min(15.0, visibility_timeout / 6))
