"""Helpers for the run-store tests: wait for a run's record, and a private PostgreSQL
database on the machine's server (skipped when none answers, failed when CI=true)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

import celery_agents
from celery_agents import StoredRun


async def forget_stored(url: str, run_id: str) -> None:
    """Delete the run's row: as if its record still waited in Redis for a writer."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from celery_agents.store.schema import runs
    from celery_agents.store.url import store_url

    engine = create_async_engine(store_url(url))  # type: ignore[arg-type]
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.delete(runs).where(runs.c.run_id == run_id))
    finally:
        await engine.dispose()


PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, os.environ.get("PGUSER", "root")


async def wait_stored(run_id: str, *, timeout: float = 15.0) -> StoredRun:
    """The run's record, once a writer has landed it (``AssertionError`` past ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await celery_agents.run(run_id)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} was not recorded within {timeout}s")
        await asyncio.sleep(0.05)


async def all_recorded(parent: str, count: int, *, timeout: float = 10.0) -> list[StoredRun]:
    """The runs recorded under ``parent``, once there are ``count`` (or the deadline passed:
    the caller's assertion then says what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await celery_agents.runs(parent=parent)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def postgres_answers() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=0.5):
            return True
    except OSError:
        return False


def need_postgres() -> None:
    if postgres_answers():
        return
    reason = f"no PostgreSQL answers on {PG_HOST}:{PG_PORT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true needs it")
    pytest.skip(reason)


async def admin(sql: str) -> None:
    """Run ``sql`` on the server's ``test`` database (creating and dropping ours)."""
    import asyncpg

    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="test", timeout=5
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def admin_sql(sql: str) -> None:
    asyncio.run(admin(sql))


def private_database() -> Iterator[str]:
    """A database of the caller's own on the machine's PostgreSQL: its store URL (the
    ``postgres_store`` fixture)."""
    need_postgres()
    name = f"celery_agents_{uuid.uuid4().hex[:10]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
