"""What ``celery-agents status`` reports: workers and their load, the beat, queue depths,
background entries, and each agent's runs, tokens and cost over the last hour."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from amqp.exceptions import ChannelError

from .config.settings import Settings
from .keys import Keys
from .scheduler.admin import list_entries
from .store.url import store_id, store_url
from .tasks.app import create_client_app


@dataclass
class WorkerRow:
    hostname: str
    concurrency: int
    active: int | None  # None: it did not answer the inspect call in time
    tools: int
    up_seconds: float


@dataclass
class FleetStatus:
    workers: list[WorkerRow] = field(default_factory=list)
    beat_alive: bool = False
    queues: dict[str, int | None] = field(default_factory=dict)
    entries: list[tuple[str, ...]] = field(default_factory=list)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)
    store_backlog: int = 0  # records the run store's writers have not landed yet


def gather_status(settings: Settings, *, inspect_timeout: float = 1.0) -> FleetStatus:
    keys = Keys(settings.key_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        status = FleetStatus(beat_alive=bool(client.exists(keys.beat_alive())))
        status.workers = _workers(client, keys, settings, inspect_timeout)
        status.queues = {settings.queue: _depth(settings)}
        status.entries = list_entries()
        status.usage = last_hour_usage(client, keys, time.time())
        status.store_backlog = _backlog(client, keys, settings)
        return status
    finally:
        client.close()


def _backlog(client: redis.Redis, keys: Keys, settings: Settings) -> int:
    """Records of ended runs that this settings' run store has not received yet."""
    url = store_url(settings.store_url)
    return 0 if url is None else int(client.xlen(keys.store_records(store_id(url))))


def _workers(
    client: redis.Redis, keys: Keys, settings: Settings, timeout: float
) -> list[WorkerRow]:
    beats = [
        json.loads(raw)
        for k in client.scan_iter(match=keys.worker_pattern())
        if (raw := client.get(k))
    ]
    active: dict[str, list[Any]] = {}
    if beats:
        app = create_client_app(settings)
        active = app.control.inspect(timeout=timeout).active() or {}
    now = time.time()
    return [
        WorkerRow(
            hostname=b["hostname"],
            concurrency=int(b.get("concurrency", 0)),
            active=len(active[b["hostname"]]) if b["hostname"] in active else None,
            tools=len(b.get("tools", [])),
            up_seconds=now - float(b.get("started", now)),
        )
        for b in sorted(beats, key=lambda b: str(b["hostname"]))
    ]


def _depth(settings: Settings) -> int | None:
    """Messages waiting in the run queue (None if the broker would not say)."""
    app = create_client_app(settings)
    try:
        with app.connection_for_write() as connection:
            declared = connection.default_channel.queue_declare(queue=settings.queue, passive=True)
            return int(declared.message_count)
    except ChannelError as exc:
        # An empty Redis queue has no key, and a RabbitMQ queue no worker declared yet does
        # not exist: either way nothing waits in it.
        not_found = getattr(exc, "code", None) == 404 or str(exc.args[:1]) == "('404',)"
        return 0 if not_found else None
    except Exception:
        return None


def last_hour_usage(client: redis.Redis, keys: Keys, now: float) -> dict[str, dict[str, float]]:
    """Per agent: runs, errors, input/output tokens and cost over the last 60 minutes."""
    minute = int(now // 60)
    pipe = client.pipeline(transaction=False)
    for m in range(minute - 59, minute + 1):
        pipe.hgetall(keys.usage_minute(m))
    totals: dict[str, dict[str, float]] = {}
    for bucket in pipe.execute():
        for raw_field, raw_value in bucket.items():
            agent, _, metric = raw_field.decode().rpartition("|")
            row = totals.setdefault(agent, {})
            row[metric] = row.get(metric, 0.0) + float(raw_value)
    return totals
