"""Bring the store's schema to the newest Alembic revision, on start (workers, beat, CLI).

Processes that start together take turns: a PostgreSQL advisory lock, or a lock file beside
the SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_PG_LOCK = 0x63_61_67  # "cag": the advisory lock key of the store's migrations


def _config(connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Any) -> None:
    command.upgrade(_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    async with _migration_lock(engine), engine.begin() as connection:
        await _lock_postgres(connection)
        await connection.run_sync(_upgrade)


async def _lock_postgres(connection: AsyncConnection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})


@contextlib.asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock = await asyncio.to_thread(_lock_beside, Path(database))
    try:
        yield
    finally:
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        lock.close()


def _lock_beside(database: Path) -> IO[bytes]:
    """Take (waiting for it) the lock file next to a SQLite database."""
    database.parent.mkdir(parents=True, exist_ok=True)
    lock = open(f"{database}.lock", "a+b")  # noqa: SIM115  (held past this function)
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    return lock
