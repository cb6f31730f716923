"""``RunStore``: the store's database, opened (and migrated) once per process."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ConfigError
from .entry import RunEntry
from .migrate import upgrade
from .schema import runs
from .url import shown, store_url

CONNECT_TIMEOUT = 10.0  # seconds: an unreachable database is reported, not waited on


class RunStore:
    """Writes entries (idempotent per run id) and answers queries (``queries.py``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def url(self) -> str:
        return shown(self.engine.url)

    @classmethod
    async def open(cls, url: URL, *, migrate: bool = True) -> RunStore:
        """The store at ``url``, its schema brought up to date; ``ConfigError`` (naming the
        URL, never its password) when the database cannot be reached or migrated."""
        store: RunStore | None = None
        try:
            store = cls(_engine(url))
            if migrate:
                await upgrade(store.engine)
        except Exception as exc:  # the driver's errors are many; each is this line
            if store is not None:
                await store.aclose()
            raise ConfigError(
                f"run store {shown(url)}: cannot open it: {_reason(exc)} "
                "(CELERY_AGENTS_STORE_URL; none turns the store off)"
            ) from None
        return store

    async def write(self, entries: Sequence[RunEntry]) -> None:
        """Insert or update one row per run id: an entry replaces the row of an earlier
        attempt of its run, never a later one's. The same entry twice is one row."""
        latest: dict[str, RunEntry] = {}
        for entry in entries:  # one row per run in a statement (PostgreSQL insists)
            known = latest.get(entry.run_id)
            if known is None or entry.attempt >= known.attempt:
                latest[entry.run_id] = entry
        if not latest:
            return
        rows = [_row(entry) for entry in latest.values()]
        async with self.engine.begin() as connection:
            await connection.execute(self._upsert, rows)  # executemany: one compiled statement

    @functools.cached_property
    def _upsert(self) -> Any:
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(runs)
        columns = {c.name: statement.excluded[c.name] for c in runs.c if c.name != "run_id"}
        return statement.on_conflict_do_update(
            index_elements=[runs.c.run_id],
            set_=columns,
            where=runs.c.attempt <= statement.excluded.attempt,
        )

    async def purge(self, before: dt.datetime) -> int:
        """Delete the runs that ended before ``before``; how many."""
        async with self.engine.begin() as connection:
            result = await connection.execute(sa.delete(runs).where(runs.c.ended_at < before))
        return int(result.rowcount or 0)

    async def aclose(self) -> None:
        await self.engine.dispose()


def check_store(raw: str | None) -> None:
    """Open (and migrate) the store that ``CELERY_AGENTS_STORE_URL`` names, then let go: a
    process that starts (the beat) says at once, in one ``ConfigError``, when it is wrong."""
    url = store_url(raw)
    if url is None:
        return

    async def check() -> None:
        await (await RunStore.open(url)).aclose()

    asyncio.run(check())


def _engine(url: URL) -> AsyncEngine:
    if url.drivername.startswith("sqlite"):
        database = url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        connect_args={"timeout": CONNECT_TIMEOUT, "server_settings": {"timezone": "UTC"}},
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """Several processes write one file: WAL lets readers go on, and a writer waits its turn
    instead of failing with "database is locked"."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _row(entry: RunEntry) -> dict[str, Any]:
    row = entry.model_dump(exclude={"message", "queued_at", "started_at", "ended_at"})
    row["message"] = entry.message.model_dump(mode="json") if entry.message else None
    row["queued_at"] = when(entry.queued_at)
    row["started_at"] = when(entry.started_at)
    row["ended_at"] = when(entry.ended_at)
    return row


def when(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


def _reason(exc: BaseException) -> str:
    """The driver's own words, on one line."""
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text if len(text) <= 300 else text[:300] + "…"
