"""What ``celery-agents schedules`` shows and changes (blocking Redis calls).

Every command takes an entry by the name ``schedules list`` prints (a manifest schedule's
name, a background run's agent) or by its id; a name two entries share must be given as an id.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis

from ..config.settings import Settings
from ..errors import UserError
from ..keys import Keys
from ..text import as_text
from .entries import Entries, Entry, pick, ttl_until
from .policy import day_of

BACKFILL_MAX = 1000  # fire times one backfill may ask for


def entries_of(settings: Settings | None = None) -> Entries:
    """The entries of the Redis ``settings`` name (default: the environment's)."""
    settings = settings or Settings()
    return Entries(redis.Redis.from_url(settings.redis_url), Keys(settings.key_prefix))


def live(entries: Entries) -> list[Entry]:
    """The entries that have not ended, by id (ids of expired ones leave the index)."""
    live: list[Entry] = []
    for raw_id in sorted(entries.client.smembers(entries.keys.background_index())):
        entry_id = as_text(raw_id)
        entry = Entry.from_hash(entry_id, entries.read(entry_id))
        if entry.state == "unknown":  # ended and expired: its id no longer belongs here
            entries.client.srem(entries.keys.background_index(), entry_id)
            continue
        live.append(entry)
    return live


def resolve(entries: Entries, name: str) -> Entry:
    """The entry ``name`` stands for: an entry id, a manifest schedule's name, or the name of
    the one live entry that has it."""
    entry_id = pick(name, entries.resolve(name))
    return Entry.from_hash(entry_id, entries.read(entry_id))


def entry_id_of(name: str) -> str:
    return resolve(entries_of(), name).id


def list_entries(entries: Entries | None = None) -> list[tuple[str, ...]]:
    """One row per live entry: id, name, state, runs, errors, every, next run in, note (why
    it is paused, or why its last fire was skipped)."""
    entries = entries or entries_of()
    now = time.time()
    rows: list[tuple[str, ...]] = []
    for entry in live(entries):
        due = entries.client.zscore(entries.keys.schedule(), entry.id)
        runs = f"{entry.finished}/{entry.max_count}" if entry.max_count else str(entry.finished)
        every = entry.cron or (f"{entry.interval:g}s" if entry.interval is not None else "")
        next_in = "running" if entry.inflight else (f"{max(due - now, 0):.1f}s" if due else "-")
        note = (entry.pause_reason if entry.state == "paused" else entry.last_skip) or ""
        row = (entry.id, entry.name, entry.state, runs, str(entry.errors), every, next_in, note)
        rows.append(row)
    return rows


def show_entry(name: str, entries: Entries | None = None) -> dict[str, object]:
    entries = entries or entries_of()
    entry = resolve(entries, name)
    due = entries.client.zscore(entries.keys.schedule(), entry.id)
    shown: dict[str, object] = {
        "id": entry.id,
        "name": entry.name,
        "state": entry.state,
        "started": entry.started,
        "finished": entry.finished,
        "errors": entry.errors,
        "max_count": entry.max_count,
        "interval": entry.interval,
        "cron": entry.cron,
        "in_flight": ", ".join(as_text(r) for r, _ in entries.running(entry.id)) or "-",
        "next_run": "-" if due is None else _utc(float(due)),
    }
    if entry.state == "paused":
        shown["paused"] = entry.pause_reason or "paused"
    if entry.policy is not None:
        policy = entry.policy
        shown |= {
            "timezone": entry.timezone,
            "overlap": policy.overlap,
            "skipped": entry.skipped,
            "missed": entry.missed,
            "last_skip": entry.last_skip or "-",
        }
        if policy.tokens_per_day is not None:
            today = entry.day_tokens if entry.day == day_of(time.time(), entry.timezone) else 0
            shown["budget"] = f"{today} of {policy.tokens_per_day} tokens used today"
    return shown


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pause_or_resume(
    name: str, action: str, entries: Entries | None = None, *, keep: int | None = None
) -> str:
    """Pause or resume (``action``) an entry; ``keep`` is the result TTL (default: the
    environment's)."""
    entries = entries or entries_of()
    entry = resolve(entries, name)
    now = time.time()
    due = entry.resumes_at(now)
    keep = Settings().result_ttl if keep is None else keep
    ttl = ttl_until(due, now, entry.timeout, keep)
    nominal = due if entry.policy is not None else None
    state = entries.pause_resume(entry.id, action, due, ttl, nominal)
    return f"{entry.id}: {as_text(state)}"


def trigger(name: str, entries: Entries | None = None) -> str:
    """Fire an entry once now (a schedule: following its overlap policy)."""
    entries = entries or entries_of()
    entry = resolve(entries, name)
    outcome = as_text(entries.trigger(entry.id, 1, time.time()))
    if outcome == "queued":
        return f"{entry.id}: fires now"
    if outcome == "running":
        return f"{entry.id}: a run is in flight; it runs again {entry.interval or 0:g}s after"
    raise UserError(f"{entry.id} is {outcome}: only an active entry fires")


def backfill(name: str, since: float, until: float) -> str:
    """Fire the grid times of ``[since, until]`` now, one after another, following the
    schedule's overlap policy (``skip``: while one runs, the others are skipped)."""
    entries = entries_of()
    entry = resolve(entries, name)
    if entry.policy is None:
        raise UserError(f"{entry.id} runs after each run ends: it has no fire times to backfill")
    if until < since:
        raise UserError("backfill: --to must not be before --from")
    anchor = entry.nominal if entry.nominal is not None else since
    times = entry.grid.times(since, until, anchor=anchor, cap=BACKFILL_MAX)
    if not times:
        return f"{entry.id}: no fire time between them"
    outcome = as_text(entries.trigger(entry.id, len(times), time.time()))
    if outcome != "queued":
        raise UserError(f"{entry.id} is {outcome}: only an active entry fires")
    return f"{entry.id}: {len(times)} fires queued (overlap: {entry.policy.overlap})"
