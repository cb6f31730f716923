"""``StoreWriter``: drains the records stream into the database, in batches, on each worker.

Writers share the stream as one consumer group, so each record is written by one of them; a
record is acknowledged (and deleted) only once its batch is in the database, so a writer that
dies or a database that is away loses nothing: the writer tries its pending records again,
and another writer takes over a dead one's. Writes are idempotent per run id. Once a day the
writer purges runs older than the retention.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ResponseError

from ..keys import Keys
from ..text import as_text
from .database import RunStore
from .entry import RunEntry
from .handoff import FIELD
from .url import store_id

log = logging.getLogger(__name__)

GROUP = "writers"
BATCH = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000  # a writer silent this long on its records has died: take them over
CLAIM_EVERY = 15.0
PURGE_EVERY = 86_400.0
MAX_BACKOFF = 30.0
# After a batch that was not full, the writer lets records gather this long (seconds) before
# the next: a trickle of runs costs a few writes a second, not one per run.
LINGER = 0.5


class StoreWriter:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        store: RunStore,
        *,
        consumer: str,
        retention_days: float,
        batch: int = BATCH,
        claim_idle: float = CLAIM_IDLE_MS / 1000,
    ) -> None:
        self._redis = redis
        self._stream = keys.store_records(store_id(store.engine.url))
        self._store = store
        self.consumer = consumer
        self._retention = dt.timedelta(days=retention_days)
        self._batch = batch
        self._claim_idle_ms = int(claim_idle * 1000)
        self._next_claim = 0.0
        self._next_purge = 0.0
        self.written = 0  # records this writer landed (tests and bench read it)

    async def run_forever(self) -> None:
        delay = 0.0
        while True:
            try:
                await self._purge_if_due()
                if await self.drain_once() < self._batch:
                    await asyncio.sleep(LINGER)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the database away: records wait, try again
                if "NOGROUP" in str(exc):
                    await self._ensure_group()
                    continue
                delay = min(MAX_BACKOFF, max(0.5, delay * 2))
                log.warning("run store: cannot write records yet (%s); retrying", _short(exc))
                await asyncio.sleep(delay)
            else:
                if delay:
                    log.info("run store: writing records again")
                delay = 0.0

    async def drain_once(self, *, block_ms: int = BLOCK_MS) -> int:
        """Write one batch: this writer's pending records, a dead writer's, or new ones
        (waiting up to ``block_ms`` for them). How many were written."""
        batch = await self._read("0", block_ms=None)  # mine, read before an outage or crash
        if not batch and time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + min(CLAIM_EVERY, self._claim_idle_ms / 1000)
            batch = await self._claim_abandoned()
        if not batch:
            batch = await self._read(">", block_ms=block_ms)
        if not batch:
            return 0
        ids = [entry_id for entry_id, _ in batch]
        entries = [entry for _, entry in batch if entry is not None]
        await self._store.write(entries)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self._stream, GROUP, *ids)
            pipe.xdel(self._stream, *ids)
            await pipe.execute()
        self.written += len(entries)
        return len(entries)

    async def _read(self, start: str, *, block_ms: int | None) -> list[tuple[str, Any]]:
        try:
            reply = await self._redis.xreadgroup(
                GROUP, self.consumer, {self._stream: start}, count=self._batch, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()
            return []
        messages = _messages(reply)
        return [(as_text(i), _parse(as_text(i), fields)) for i, fields in messages if fields]

    async def _claim_abandoned(self) -> list[tuple[str, Any]]:
        reply = await self._redis.xautoclaim(
            self._stream, GROUP, self.consumer, self._claim_idle_ms, "0-0", count=self._batch
        )
        messages = reply[1] if reply else []
        return [(as_text(i), _parse(as_text(i), fields)) for i, fields in messages if fields]

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def start(self) -> None:
        await self._ensure_group()

    async def _purge_if_due(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        before = dt.datetime.now(dt.UTC) - self._retention
        purged = await self._store.purge(before)
        self._next_purge = time.monotonic() + PURGE_EVERY
        if purged:
            log.info("run store: purged %d runs that ended before %s", purged, f"{before:%F}")


def _messages(reply: Any) -> list[Any]:
    """The entries of one stream's XREADGROUP reply (RESP2: a list; RESP3: a dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values())))
    return list(reply[0][1])


def _parse(entry_id: str, fields: dict[Any, Any]) -> RunEntry | None:
    """A record, or None for one that cannot be read (logged, then dropped: it would stop
    every later record behind it)."""
    raw = fields.get(FIELD.encode()) or fields.get(FIELD)
    try:
        return RunEntry.model_validate_json(raw or b"")
    except ValidationError as exc:
        log.error("run store: dropped unreadable record %s: %s", entry_id, _short(exc))
        return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"
