"""Reading the run store from Python: ``await runs(...)``, ``await run(id)``, ``await usage()``.

Every run that ended is there for ``CELERY_AGENTS_STORE_RETENTION_DAYS`` (Redis forgets it after
``result_ttl``); a Team's or TeamRun's members are runs of their own, with ``parent_id`` set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ..errors import ConfigError, UserError, error_from_json
from ..messages import ChatMessage
from ..scheduler.entries import MANIFEST_PREFIX, Entries, pick
from ..store.database import RunStore
from ..store.queries import (
    StoredRun,
    UsageRow,
    get_run,
    list_runs,
    schedules_named,
    usage_of,
)
from .bridge import on_io
from .client import get_client

T = TypeVar("T")
When = dt.datetime | dt.timedelta | None


async def runs(
    *,
    agent: str | None = None,
    team: str | None = None,
    tenant: str | None = None,
    schedule: str | None = None,
    state: str | None = None,
    parent: str | None = None,
    since: When = None,
    until: When = None,
    limit: int = 50,
) -> list[StoredRun]:
    """The runs that ended in ``[since, until)`` (a datetime, or a timedelta back from now),
    newest first, at most ``limit``."""
    window = _when(since), _when(until)
    return await with_store(
        lambda store: list_runs(
            store,
            agent=agent,
            team=team,
            tenant=tenant,
            schedule=schedule,
            state=state,
            parent=parent,
            since=window[0],
            until=window[1],
            limit=limit,
        )
    )


async def schedule_history(name: str, *, limit: int = 20) -> list[StoredRun]:
    """Each fire of a schedule or background entry, newest first, at most ``limit``: when it
    ended, its state, answer, tokens and cost. ``name`` is what ``schedules list`` prints (or
    the entry's id); an entry that has ended and left Redis is found in the store the same
    way."""

    async def go() -> list[StoredRun]:
        client = get_client()
        store = await client.run_store()
        found = await Entries(client.redis, client.keys).resolve(name)
        if found:
            return await list_runs(store, schedule=pick(name, found), limit=limit)
        for entry_id in (name, f"{MANIFEST_PREFIX}{name}"):
            if fires := await list_runs(store, schedule=entry_id, limit=limit):
                return fires
        # An ended background entry, by its agent's (or Team's) name.
        entry_id = pick(name, await schedules_named(store, name))
        return await list_runs(store, schedule=entry_id, limit=limit)

    return await on_io(go())


async def run(run_id: str) -> StoredRun | None:
    """One run's record, prompt and final message (None: the store never heard of it)."""
    return await with_store(lambda store: get_run(store, run_id))


async def usage(
    *,
    group_by: Sequence[str] = ("agent",),
    since: When = None,
    until: When = None,
    tenant: str | None = None,
) -> list[UsageRow]:
    """Runs, errors, tokens, requests and cost of agent runs, grouped by any of ``tenant``,
    ``agent``, ``model`` and ``day`` (UTC)."""
    window = _when(since), _when(until)
    return await with_store(
        lambda store: usage_of(
            store, group_by=group_by, since=window[0], until=window[1], tenant=tenant
        )
    )


async def with_store(query: Callable[[RunStore], Awaitable[T]]) -> T:
    """``query`` run on the facade's store (opened on first use; ``ConfigError`` when off)."""

    async def go() -> T:
        return await query(await get_client().run_store())

    return await on_io(go())


def _when(value: When) -> dt.datetime | None:
    if isinstance(value, dt.timedelta):
        return dt.datetime.now(dt.UTC) - value
    return value


async def forgotten(run_id: str) -> StoredRun | None:
    """The store's record of a run that Redis no longer knows (None while Redis knows it, or
    when the store is off, away, or never heard of it). Runs on the I/O loop."""
    client = get_client()
    keys = client.keys
    if await client.redis.exists(keys.run_state(run_id), keys.run_log(run_id)):
        return None
    try:
        return await get_run(await client.run_store(), run_id)
    except ConfigError:
        return None


def outcome(stored: StoredRun) -> ChatMessage:
    """A stored run's final message, or its error raised."""
    if stored.state == "succeeded":
        if stored.message is None:
            raise UserError(
                f"run {stored.run_id} succeeded, but Redis has expired it and the store kept "
                "no content (CELERY_AGENTS_STORE_CONTENT=false)"
            )
        return stored.message
    raise error_from_json(
        {
            "type": stored.error_type or "RunError",
            "message": stored.error_message or stored.state,
            "details": {"run_id": stored.run_id},
        }
    )
