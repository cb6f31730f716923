"""``/v1/schedules``: the beat's entries (manifest schedules and background runs) by the name
``schedules list`` prints: list, show, history, pause, resume, trigger. A tenant key sees the
entries whose runs are its tenant's."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from ..errors import UserError
from ..facade.client import get_client
from ..facade.stored import schedule_history
from ..scheduler import admin
from ..scheduler.entries import Entries, Entry
from .auth import Caller, Principal
from .errors import ERROR_RESPONSES, not_found
from .models import RunView

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], responses=ERROR_RESPONSES)

Name = Annotated[str, Path(min_length=1, max_length=300)]


class ScheduleView(BaseModel):
    id: str
    name: str
    state: str
    tenant: str | None
    agent: str | None
    every: float | None
    cron: str | None
    timezone: str
    runs: int
    errors: int
    max_count: int | None
    next_run: dt.datetime | None
    in_flight: bool
    note: str | None

    @classmethod
    def of(cls, entry: Entry, due: float | None) -> ScheduleView:
        note = entry.pause_reason if entry.state == "paused" else entry.last_skip
        return cls(
            id=entry.id,
            name=entry.name,
            state=entry.state,
            tenant=tenant_of(entry),
            agent=_target_name(entry.payload),
            every=entry.interval,
            cron=entry.cron,
            timezone=entry.timezone,
            runs=entry.finished,
            errors=entry.errors,
            max_count=entry.max_count,
            next_run=None if due is None else dt.datetime.fromtimestamp(due, dt.UTC),
            in_flight=entry.inflight is not None,
            note=note,
        )


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]


class ScheduleHistory(BaseModel):
    schedule: str
    fires: list[RunView]


class ScheduleAction(BaseModel):
    id: str
    outcome: str


def tenant_of(entry: Entry) -> str | None:
    tenant = entry.payload.get("tenant")
    return str(tenant) if tenant else None


def _target_name(payload: dict[str, Any]) -> str | None:
    for part in ("agent", "node"):
        if isinstance(payload.get(part), dict):
            return str(payload[part].get("name"))
    return None


@functools.cache
def _entries(redis_url: str, prefix: str) -> Entries:
    settings = get_client().settings
    return admin.entries_of(
        settings.model_copy(update={"redis_url": redis_url, "key_prefix": prefix})
    )


def entries() -> Entries:
    settings = get_client().settings
    return _entries(settings.redis_url, settings.key_prefix)


def _due(source: Entries, entry_id: str) -> float | None:
    due = source.client.zscore(source.keys.schedule(), entry_id)
    return None if due is None else float(due)


def _find(source: Entries, name: str) -> Entry | None:
    """The live entry ``name`` stands for (None: none; a name two share is a UserError)."""
    try:
        entry = admin.resolve(source, name)
    except UserError as exc:
        if "entries are named" in exc.message:  # ambiguous: the message says which ids
            raise
        return None
    return None if entry.state == "unknown" else entry


def _visible(name: str, caller: Principal) -> tuple[Entries, Entry]:
    source = entries()
    entry = _find(source, name)
    if entry is None or not caller.sees(tenant_of(entry)):
        raise not_found(f"no schedule or background run {name!r}")
    return source, entry


@router.get("", response_model=ScheduleList)
def list_schedules(caller: Caller) -> ScheduleList:
    """The live entries (a tenant key: its tenant's)."""
    return ScheduleList(schedules=live_schedules(entries(), caller))


def live_schedules(source: Entries, caller: Principal) -> list[ScheduleView]:
    return [
        ScheduleView.of(entry, _due(source, entry.id))
        for entry in admin.live(source)
        if caller.sees(tenant_of(entry))
    ]


@router.get("/{name}", response_model=ScheduleView)
def show_schedule(name: Name, caller: Caller) -> ScheduleView:
    source, entry = _visible(name, caller)
    return ScheduleView.of(entry, _due(source, entry.id))


@router.get("/{name}/history", response_model=ScheduleHistory)
async def history(
    name: Name, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> ScheduleHistory:
    """Each fire of the entry, newest first, from the run store (also of an ended one)."""
    live = await run_in_threadpool(_find, entries(), name)
    if live is not None and not caller.sees(tenant_of(live)):
        raise not_found(f"no schedule or background run {name!r}")
    try:
        fires = await schedule_history(name, limit=limit)
    except UserError as exc:
        if "entries are named" in exc.message:
            raise
        fires = []
    seen = [f for f in fires if caller.sees(f.tenant)]
    if live is None and not seen:
        raise not_found(f"no schedule or background run {name!r}")
    schedule = live.id if live is not None else (seen[0].schedule or name)
    return ScheduleHistory(schedule=schedule, fires=[RunView.of_stored(f) for f in seen])


def _act(name: str, caller: Principal, act: Any) -> ScheduleAction:
    source, entry = _visible(name, caller)
    outcome = act(entry.id, source)
    return ScheduleAction(id=entry.id, outcome=outcome.split(": ", 1)[-1])


@router.post("/{name}/pause", response_model=ScheduleAction)
def pause(name: Name, caller: Caller) -> ScheduleAction:
    keep = get_client().settings.result_ttl
    return _act(name, caller, lambda i, s: admin.pause_or_resume(i, "pause", s, keep=keep))


@router.post("/{name}/resume", response_model=ScheduleAction)
def resume(name: Name, caller: Caller) -> ScheduleAction:
    keep = get_client().settings.result_ttl
    return _act(name, caller, lambda i, s: admin.pause_or_resume(i, "resume", s, keep=keep))


@router.post("/{name}/trigger", response_model=ScheduleAction)
def trigger(name: Name, caller: Caller) -> ScheduleAction:
    return _act(name, caller, lambda i, s: admin.trigger(i, s))
