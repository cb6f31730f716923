"""Reading the store: runs by filter, one run, usage grouped by tenant, agent, model or day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, field_validator

from ..errors import UserError
from ..messages import ChatMessage
from .database import RunStore
from .entry import RunKind
from .schema import runs as table

GroupBy = Literal["tenant", "agent", "model", "day"]
GROUPS: tuple[GroupBy, ...] = ("tenant", "agent", "model", "day")


class StoredRun(BaseModel):
    """One ended run as the store keeps it (times in UTC)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    parent_id: str | None
    kind: RunKind
    name: str
    model: str | None
    tenant: str | None
    schedule: str | None
    conversation_id: str | None
    in_history: bool = False
    state: str
    attempt: int
    worker: str | None
    error_type: str | None
    error_message: str | None
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime
    input_tokens: int
    output_tokens: int
    requests: int
    cost: float | None
    prompt: str | None
    message: ChatMessage | None

    @field_validator("queued_at", "started_at", "ended_at")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        """SQLite hands times back without their zone: they are UTC."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value

    @property
    def duration(self) -> float | None:
        """Seconds from the run's start to its end."""
        if self.started_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class UsageRow(BaseModel):
    """Totals of one group (the keys it was grouped by, the others None)."""

    tenant: str | None = None
    agent: str | None = None
    model: str | None = None
    day: dt.date | None = None
    runs: int
    errors: int
    input_tokens: int
    output_tokens: int
    requests: int
    cost: float | None


async def list_runs(
    store: RunStore,
    *,
    agent: str | None = None,
    team: str | None = None,
    tenant: str | None = None,
    schedule: str | None = None,
    state: str | None = None,
    parent: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
) -> list[StoredRun]:
    """The runs that ended in ``[since, until)``, newest first. ``agent`` and ``team`` match
    the run's name (an agent run's, or a Team/TeamRun's)."""
    query = sa.select(table).order_by(table.c.ended_at.desc(), table.c.run_id).limit(limit)
    if agent is not None:
        query = query.where(table.c.name == agent, table.c.kind == "agent")
    if team is not None:
        query = query.where(table.c.name == team, table.c.kind != "agent")
    for column, value in (
        (table.c.tenant, tenant),
        (table.c.schedule, schedule),
        (table.c.state, state),
        (table.c.parent_id, parent),
    ):
        if value is not None:
            query = query.where(column == value)
    query = _window(query, since, until)
    async with store.engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    return [StoredRun.model_validate(dict(row)) for row in rows]


async def schedules_named(store: RunStore, name: str, *, limit: int = 10) -> list[str]:
    """The ids of the schedules and background entries whose fires were named ``name`` (an
    agent's, Team's or TeamRun's name), the most recently fired first."""
    last = sa.func.max(table.c.ended_at)
    query = (
        sa.select(table.c.schedule)
        .where(table.c.name == name, table.c.schedule.is_not(None), table.c.parent_id.is_(None))
        .group_by(table.c.schedule)
        .order_by(last.desc())
        .limit(limit)
    )
    async with store.engine.connect() as connection:
        return [row[0] for row in (await connection.execute(query)).all()]


async def get_run(store: RunStore, run_id: str) -> StoredRun | None:
    query = sa.select(table).where(table.c.run_id == run_id)
    async with store.engine.connect() as connection:
        row = (await connection.execute(query)).mappings().first()
    return None if row is None else StoredRun.model_validate(dict(row))


async def usage_of(
    store: RunStore,
    *,
    group_by: Sequence[str] = ("agent",),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    tenant: str | None = None,
) -> list[UsageRow]:
    """Tokens, requests and cost of the agent runs (a Team's are its members'), grouped; a
    schedule's skipped fires are no runs."""
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise UserError(
            f"cannot group usage by {', '.join(map(repr, unknown))} "
            f"(choose from {', '.join(GROUPS)})"
        )
    keys = {
        "tenant": table.c.tenant,
        "agent": table.c.name,
        "model": table.c.model,
        "day": _day(store),
    }
    chosen = [keys[g].label(g) for g in dict.fromkeys(group_by)]
    totals = [
        sa.func.count().label("runs"),
        sa.func.sum(sa.case((table.c.state != "succeeded", 1), else_=0)).label("errors"),
        sa.func.sum(table.c.input_tokens).label("input_tokens"),
        sa.func.sum(table.c.output_tokens).label("output_tokens"),
        sa.func.sum(table.c.requests).label("requests"),
        sa.func.sum(table.c.cost).label("cost"),
    ]
    ran = sa.and_(table.c.kind == "agent", table.c.state != "skipped")  # skipped: never ran
    query = sa.select(*chosen, *totals).where(ran)
    if tenant is not None:
        query = query.where(table.c.tenant == tenant)
    query = _window(query, since, until)
    if chosen:
        query = query.group_by(*chosen).order_by(*chosen)
    async with store.engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    return [_usage_row(dict(row)) for row in rows if row["runs"]]


def _usage_row(row: dict[str, Any]) -> UsageRow:
    day = row.get("day")
    if isinstance(day, str):
        row["day"] = dt.date.fromisoformat(day)
    elif isinstance(day, dt.datetime):
        row["day"] = day.date()
    return UsageRow.model_validate(row)


def _day(store: RunStore) -> Any:
    """The UTC day a run ended on."""
    if store.engine.dialect.name == "postgresql":
        return sa.func.date(sa.func.timezone("UTC", table.c.ended_at))
    return sa.func.date(table.c.ended_at)


def _window(query: Any, since: dt.datetime | None, until: dt.datetime | None) -> Any:
    if since is not None:
        query = query.where(table.c.ended_at >= _aware(since))
    if until is not None:
        query = query.where(table.c.ended_at < _aware(until))
    return query


def _aware(value: dt.datetime) -> dt.datetime:
    """A time without a zone is taken as UTC; stored times are compared in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


async def conversation_turns(store: RunStore, conversation_id: str) -> list[StoredRun]:
    """The runs whose turns make a conversation's history, oldest first (runs kept without
    content cannot give their turn back, and are left out)."""
    query = (
        sa.select(table)
        .where(
            table.c.conversation_id == conversation_id,
            table.c.in_history.is_(True),
            table.c.prompt.is_not(None),
            table.c.message.is_not(None),
        )
        .order_by(table.c.ended_at, table.c.run_id)
    )
    async with store.engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    return [StoredRun.model_validate(dict(row)) for row in rows]


async def forget_conversation(store: RunStore, conversation_id: str) -> None:
    """Its turns are no longer its history (``clear_history``); the runs stay on record."""
    statement = (
        sa.update(table)
        .where(table.c.conversation_id == conversation_id, table.c.in_history.is_(True))
        .values(in_history=False)
    )
    async with store.engine.begin() as connection:
        await connection.execute(statement)


def as_turns(runs: Sequence[StoredRun]) -> list[tuple[str, ChatMessage, ChatMessage]]:
    """(run id, the user's message, the answer) of each stored turn."""
    turns = []
    for run in runs:
        if run.prompt is None or run.message is None:
            continue
        user = ChatMessage(
            content=run.prompt,
            role="user",
            run_id=run.run_id,
            conversation_id=run.conversation_id,
        )
        turns.append((run.run_id, user, run.message))
    return turns
