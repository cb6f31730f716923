"""The store's writer on a real Redis and real databases: batches, idempotence, a database
that goes away, a writer that dies with records in hand, retention."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import URL

from celery_agents.keys import Keys
from celery_agents.store.database import RunStore
from celery_agents.store.entry import RunEntry
from celery_agents.store.handoff import StoreHandoff
from celery_agents.store.queries import get_run, list_runs
from celery_agents.store.url import store_url
from celery_agents.store.writer import StoreWriter
from tests.support.store import admin


def entry(
    run_id: str, *, attempt: int = 1, ended_at: float | None = None, **kw: object
) -> RunEntry:
    return RunEntry(
        run_id=run_id,
        name="w",
        state="succeeded",
        attempt=attempt,
        ended_at=ended_at or time.time(),
        prompt="p",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def keys() -> Keys:
    return Keys(f"writer-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[RunStore]:
    store = await RunStore.open(_url(str(tmp_path / "runs.db")))
    try:
        yield store
    finally:
        await store.aclose()


def _url(raw: str) -> URL:
    url = store_url(raw)
    assert url is not None
    return url


async def hand(client: aioredis.Redis, keys: Keys, store: RunStore, *entries: RunEntry) -> None:
    handoff = StoreHandoff(keys, store.engine.url, content=True, cap=10_000)
    async with client.pipeline(transaction=False) as pipe:
        for e in entries:
            handoff.queue(pipe, e)
        await pipe.execute()


def writer(client: aioredis.Redis, keys: Keys, store: RunStore, **kw: object) -> StoreWriter:
    return StoreWriter(
        client, keys, store, consumer=f"w-{uuid.uuid4().hex[:6]}", retention_days=90, **kw
    )  # type: ignore[arg-type]


async def drain(w: StoreWriter) -> int:
    total = 0
    while n := await w.drain_once(block_ms=50):
        total += n
    return total


async def test_records_land_once_each_and_a_later_attempt_wins(
    redis_client: aioredis.Redis, keys: Keys, sqlite_store: RunStore
) -> None:
    w = writer(redis_client, keys, sqlite_store)
    await w.start()
    first, second = entry("r1", worker="a"), entry("r1", attempt=2, worker="b")
    await hand(redis_client, keys, sqlite_store, first, first, entry("r2"))
    assert await drain(w) == 3
    await hand(redis_client, keys, sqlite_store, second, first)  # attempt 1 comes back late
    assert await drain(w) == 2
    rows = await list_runs(sqlite_store)
    assert sorted(r.run_id for r in rows) == ["r1", "r2"]
    kept = await get_run(sqlite_store, "r1")
    assert kept is not None and (kept.attempt, kept.worker) == (2, "b")
    assert await redis_client.xlen(w._stream) == 0  # written records leave the stream


async def test_an_unreadable_record_is_dropped_and_logged_and_the_rest_land(
    redis_client: aioredis.Redis,
    keys: Keys,
    sqlite_store: RunStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = writer(redis_client, keys, sqlite_store)
    await w.start()
    await redis_client.xadd(w._stream, {"entry": b'{"run_id": 3'})
    await hand(redis_client, keys, sqlite_store, entry("after"))
    with caplog.at_level(logging.ERROR, logger="celery_agents.store.writer"):
        assert await drain(w) == 1
    assert "dropped unreadable record" in caplog.text
    assert [r.run_id for r in await list_runs(sqlite_store)] == ["after"]


async def test_a_dead_writers_records_are_taken_over(
    redis_client: aioredis.Redis, keys: Keys, sqlite_store: RunStore
) -> None:
    dead = writer(redis_client, keys, sqlite_store)
    await dead.start()
    await hand(redis_client, keys, sqlite_store, entry("orphan"))
    # The dead writer read the record, then died before writing it.
    got = await redis_client.xreadgroup("writers", dead.consumer, {dead._stream: ">"}, count=10)
    assert got
    alive = writer(redis_client, keys, sqlite_store, claim_idle=0.2)
    assert await alive.drain_once(block_ms=10) == 0  # not idle long enough yet
    deadline = time.monotonic() + 5
    while not await alive.drain_once(block_ms=50):
        assert time.monotonic() < deadline, "the orphaned record was never taken over"
    assert await get_run(sqlite_store, "orphan") is not None


async def test_retention_purges_old_runs(
    redis_client: aioredis.Redis, keys: Keys, sqlite_store: RunStore
) -> None:
    old = time.time() - 100 * 86400
    await sqlite_store.write([entry("old", ended_at=old), entry("new")])
    w = writer(redis_client, keys, sqlite_store)
    await w._purge_if_due()
    assert [r.run_id for r in await list_runs(sqlite_store)] == ["new"]


async def test_records_wait_while_postgresql_refuses_and_land_when_it_is_back(
    redis_client: aioredis.Redis, keys: Keys, postgres_store: str
) -> None:
    store = await RunStore.open(_url(postgres_store))
    name = store.engine.url.database
    cleanups: list[Callable[[], object]] = []
    try:
        w = writer(redis_client, keys, store)
        task = asyncio.create_task(w.run_forever())
        cleanups.append(task.cancel)
        await hand(redis_client, keys, store, entry("before"))
        await _until(lambda: w.written == 1)
        # The database refuses everyone, and its sessions are cut (ours too).
        await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        await hand(redis_client, keys, store, *(entry(f"during-{i}") for i in range(50)))
        with pytest.raises(AssertionError):
            await _until(lambda: w.written > 1, timeout=1.5)
        assert await redis_client.xlen(w._stream) == 50  # waiting in Redis
        await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await _until(lambda: w.written == 51, timeout=40)
        task.cancel()
        rows = await list_runs(store, limit=100)
        assert len(rows) == len({r.run_id for r in rows}) == 51
    finally:
        for cleanup in cleanups:
            cleanup()
        await store.aclose()


async def _until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_two_processes_migrating_one_new_sqlite_file_both_open_it(tmp_path: Path) -> None:
    url = _url(str(tmp_path / "fresh.db"))
    stores = await asyncio.gather(*(RunStore.open(url) for _ in range(4)))
    try:
        await stores[0].write([entry("x")])
        assert [r.run_id for r in await list_runs(stores[3])] == ["x"]
    finally:
        for s in stores:
            await s.aclose()


async def test_a_store_made_by_an_older_release_is_upgraded_on_open(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    from celery_agents.store import migrate

    url = _url(str(tmp_path / "old.db"))
    old = await RunStore.open(url, migrate=False)
    async with old.engine.begin() as connection:  # the schema of revision 0001, with a run
        await connection.run_sync(
            lambda sync: command.upgrade(migrate._config(sync), "0001")  # type: ignore[arg-type]
        )
        await connection.execute(
            sa.text(
                "INSERT INTO runs (run_id, kind, name, state, attempt, ended_at, input_tokens,"
                " output_tokens, requests) VALUES ('kept', 'agent', 'a', 'succeeded', 1,"
                " '2026-11-01 08:00:00.000000', 1, 2, 1)"
            )
        )
    await old.aclose()
    store = await RunStore.open(url)
    try:
        kept = await get_run(store, "kept")
        assert kept is not None and kept.in_history is False
        assert kept.ended_at == dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC)
    finally:
        await store.aclose()
