"""What ``celery-agents schedules`` shows and changes (blocking Redis calls)."""

from __future__ import annotations

import time

import redis

from ..config.settings import Settings
from ..errors import UserError
from ..keys import Keys
from ..text import as_text
from .entries import Entries, Entry, ttl_until


def _entries() -> Entries:
    settings = Settings()
    return Entries(redis.Redis.from_url(settings.redis_url), Keys(settings.key_prefix))


def _entry(entries: Entries, entry_id: str) -> Entry:
    entry = Entry.from_hash(entry_id, entries.read(entry_id))
    if entry.state == "unknown":
        raise UserError(f"no background run or schedule {entry_id!r}")
    return entry


def list_entries() -> list[tuple[str, ...]]:
    entries = _entries()
    now = time.time()
    rows: list[tuple[str, ...]] = []
    for raw_id in sorted(entries.client.smembers(entries.keys.background_index())):
        entry_id = as_text(raw_id)
        entry = Entry.from_hash(entry_id, entries.read(entry_id))
        if entry.state == "unknown":  # ended and expired: its id no longer belongs here
            entries.client.srem(entries.keys.background_index(), entry_id)
            continue
        due = entries.client.zscore(entries.keys.schedule(), entry_id)
        runs = f"{entry.finished}/{entry.max_count}" if entry.max_count else str(entry.finished)
        every = entry.cron or (f"{entry.interval:g}s" if entry.interval is not None else "")
        next_in = "running" if entry.inflight else (f"{max(due - now, 0):.1f}s" if due else "-")
        rows.append((entry_id, entry.name, entry.state, runs, str(entry.errors), every, next_in))
    return rows


def show_entry(entry_id: str) -> dict[str, object]:
    entry = _entry(_entries(), entry_id)
    return {
        "id": entry.id,
        "name": entry.name,
        "state": entry.state,
        "started": entry.started,
        "finished": entry.finished,
        "errors": entry.errors,
        "max_count": entry.max_count,
        "interval": entry.interval,
        "cron": entry.cron,
        "in_flight": entry.inflight or "-",
    }


def pause_or_resume(entry_id: str, action: str) -> str:
    entries = _entries()
    entry = _entry(entries, entry_id)
    now = time.time()
    ttl = ttl_until(now, now, entry.timeout, Settings().result_ttl)
    state = entries.pause_resume(entry_id, action, now, ttl)
    return f"{entry_id}: {as_text(state)}"
