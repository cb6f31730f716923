"""Background entries in Redis: create, claim, complete, cancel, pause/resume, read.

An entry is a ``run_in_background`` call or a manifest schedule: a task template (agent run or
team tree) plus an interval or a cron expression, counters, and a state (``active``,
``paused``, ``cancelled``, ``done``, ``failed``). Each of its runs is an ordinary run whose
events also reach the entry's own channel (results only), so clients follow an entry like a run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import RunError, UserError
from ..events import RunDone, RunFailed
from ..keys import Keys
from ..messages import ChatMessage
from ..text import as_text
from . import scripts
from .cron import next_fire
from .policy import FirePlan, Grid, Policy

MANIFEST_PREFIX = "schedule:"  # a manifest schedule's entry id is this and its name

# Infinite entries stop after this many failed runs in a row, loudly, instead of looping on.
FAILURE_LIMIT = 5


class EntryTemplate(BaseModel):
    """What an entry runs and when: after each run (``interval``, no ``policy``), or on a grid
    (``interval`` or ``cron``, with a ``policy``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task: str
    payload: dict[str, Any]
    interval: float | None = Field(None, ge=0)
    cron: str | None = None
    timezone: str = "UTC"
    max_count: int | None = Field(None, ge=1)
    timeout: float = Field(gt=0)
    policy: Policy | None = None
    # A manifest schedule's entry never expires: its counters and pause state outlive any
    # beat restart, however long no beat ran.
    persist: bool = False

    def fingerprint(self) -> str:
        """What the entry is: a schedule whose fingerprint changed is a new one."""
        data = self.model_dump(mode="json", exclude={"persist"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]

    def fields(self, due: float) -> dict[str, str]:
        """The new entry's hash, its first run due at ``due``."""
        policy = self.policy
        return {
            "name": self.name,
            "task": self.task,
            "payload": json.dumps(self.payload),
            "interval": "" if self.interval is None else repr(self.interval),
            "cron": self.cron or "",
            "timezone": self.timezone,
            "max_count": "" if self.max_count is None else str(self.max_count),
            "timeout": repr(self.timeout),
            "state": "active",
            "started": "0",
            "finished": "0",
            "errors": "0",
            "fingerprint": self.fingerprint(),
            "persist": "1" if self.persist else "0",
            "grid": "0" if policy is None else "1",
            "policy": "" if policy is None else policy.model_dump_json(),
            "overlap": "" if policy is None else policy.overlap,
            "pause_after": "0" if policy is None else str(policy.pause_after_failures),
            "nominal": repr(due),
            "grid_score": repr(due),
        }


def _float(text: str | None) -> float | None:
    return float(text) if text and text != "end" else None


@dataclass(frozen=True)
class Entry:
    """An entry as read back from Redis."""

    id: str
    name: str
    task: str
    payload: dict[str, Any]
    state: str
    interval: float | None
    cron: str | None
    timezone: str
    max_count: int | None
    timeout: float
    started: int
    finished: int
    errors: int
    inflight: str | None
    inflight_since: float | None
    last: str | None
    last_error: str | None
    fingerprint: str | None = None
    policy: Policy | None = None
    nominal: float | None = None  # a grid's next fire time (None: none left, or no grid)
    extra: int = 0
    skipped: int = 0
    missed: int = 0
    cancelled_other: int = 0
    pause_reason: str | None = None
    last_skip: str | None = None
    day: str | None = None
    day_tokens: int = 0
    last_tokens: int = 0

    @classmethod
    def from_hash(cls, entry_id: str, raw: dict[Any, Any]) -> Entry:
        h = {as_text(k): as_text(v) for k, v in raw.items()}

        def number(field: str) -> int:
            return int(h.get(field) or 0)

        return cls(
            id=entry_id,
            name=h.get("name", entry_id),
            task=h.get("task", ""),
            payload=json.loads(h.get("payload") or "{}"),
            state=h.get("state", "unknown"),
            interval=float(h["interval"]) if h.get("interval") else None,
            cron=h.get("cron") or None,
            timezone=h.get("timezone") or "UTC",
            max_count=int(h["max_count"]) if h.get("max_count") else None,
            timeout=float(h.get("timeout") or 600),
            started=number("started"),
            finished=number("finished"),
            errors=number("errors"),
            inflight=h.get("inflight") or None,
            inflight_since=_float(h.get("inflight_since")),
            last=h.get("last"),
            last_error=h.get("last_error"),
            fingerprint=h.get("fingerprint") or None,
            policy=Policy.model_validate_json(h["policy"]) if h.get("policy") else None,
            nominal=_float(h.get("nominal")),
            extra=number("extra"),
            skipped=number("skipped"),
            missed=number("missed"),
            cancelled_other=number("cancelled_other"),
            pause_reason=h.get("pause_reason") or None,
            last_skip=h.get("last_skip") or None,
            day=h.get("day") or None,
            day_tokens=number("day_tokens"),
            last_tokens=number("last_tokens"),
        )

    @property
    def grid(self) -> Grid:
        return Grid(self.interval, self.cron, self.timezone)

    def next_due(self, now: float) -> float:
        """When the run after one that ended at ``now`` is due (no grid)."""
        return due_after(self.interval, self.cron, self.timezone, now)

    def resumes_at(self, now: float) -> float:
        """The grid time a resumed entry fires next (at once without a grid): fires that
        went by while it was paused are not caught up."""
        if self.policy is None or self.nominal is None:
            return now
        return self.grid.after(now, anchor=self.nominal) if self.nominal < now else self.nominal

    def run_payload(self, run_id: str, number: int) -> dict[str, Any]:
        """The task payload of the entry's ``number``-th run (1-based)."""
        return {
            **self.payload,
            "run_id": run_id,
            "lineage": [{"run_id": self.id, "name": self.name, "results_only": True}],
            "position": [number - 1],
            "background": self.id,
        }


def end_event(entry: Entry) -> RunDone | RunFailed:
    """An ended entry's terminal event: its last good message, or why it failed."""
    if entry.state == "done" and entry.last:
        return RunDone(run_id=entry.id, message=ChatMessage.model_validate_json(entry.last))
    cause = json.loads(entry.last_error) if entry.last_error else {}
    error = RunError(
        f"background run {entry.name!r} stopped: {entry.errors} of {entry.finished} runs "
        f"failed; last error: {cause.get('message', 'unknown')}",
        entry=entry.id,
        errors=entry.errors,
        finished=entry.finished,
    )
    return RunFailed(run_id=entry.id, error=error.to_json())


def due_after(interval: float | None, cron: str | None, timezone: str, now: float) -> float:
    """Pure: the next due time after ``now`` (a run, then ``interval``; or the next cron time)."""
    if cron:
        return next_fire(cron, datetime.fromtimestamp(now, UTC), timezone).timestamp()
    return now + (interval or 0.0)


def ttl_until(due: float, now: float, timeout: float, keep: int) -> int:
    """How long an entry's keys must live: until its next run has ended, plus ``keep``."""
    return int(max(due - now, 0) + 2 * timeout + keep) + 1


class Entries:
    """The entry scripts bound to a Redis client (sync or asyncio: the calls return what the
    client returns, a value or an awaitable)."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return self.client.eval(script, len(keys), *keys, *args)

    def create(self, entry_id: str, template: EntryTemplate, due: float, ttl: int) -> Any:
        k = self.keys
        args: list[Any] = [entry_id, due, ttl]
        for field, value in template.fields(due).items():
            args += [field, value]
        return self._eval(
            scripts.CREATE, [k.background(entry_id), k.schedule(), k.background_index()], args
        )

    def claim(self, entry_id: str, now: float, run_id: str, ttl: int) -> Any:
        """Start a ``run_in_background`` entry's due run: its number, or None."""
        k = self.keys
        return self._eval(
            scripts.CLAIM,
            [k.background(entry_id), k.schedule(), k.background_running(entry_id)],
            [entry_id, now, run_id, ttl],
        )

    def fire(
        self,
        entry_id: str,
        now: float,
        run_id: str,
        ttl: int,
        *,
        extra: bool,
        plan: FirePlan | None,
        next_score: float | None,
        skip: str,
        ttl_end: int,
    ) -> Any:
        """Handle a grid entry's due fire (``scripts.FIRE``): an ``extra`` one, or the grid's
        per ``plan``."""
        k = self.keys
        following = plan.next_nominal if plan is not None else None
        return self._eval(
            scripts.FIRE,
            [
                k.background(entry_id),
                k.schedule(),
                k.background_running(entry_id),
                k.background_index(),
                k.background_done(entry_id),
            ],
            [
                entry_id,
                now,
                run_id,
                ttl,
                "extra" if extra else "grid",
                "1" if plan is None or plan.fire else "0",
                0 if plan is None else plan.missed,
                "" if following is None else repr(following),
                "" if next_score is None else repr(next_score),
                skip,
                ttl_end,
            ],
        )

    def unclaim(self, entry_id: str, run_id: str, due: float) -> Any:
        k = self.keys
        return self._eval(
            scripts.UNCLAIM,
            [k.background(entry_id), k.schedule(), k.background_running(entry_id)],
            [entry_id, run_id, due],
        )

    def complete(
        self,
        entry_id: str,
        run_id: str,
        ok: bool,
        result: str,
        next_due: float,
        ttl_active: int,
        ttl_end: int,
        *,
        now: float,
        day: str,
        reason: str = "",
    ) -> Any:
        """Count a run's end (``scripts.COMPLETE``): the tokens it used count against
        ``day``'s budget; ``reason`` is its error, in words."""
        k = self.keys
        return self._eval(
            scripts.COMPLETE,
            [
                k.background(entry_id),
                k.background_done(entry_id),
                k.schedule(),
                k.background_index(),
                k.background_running(entry_id),
                k.run_usage(entry_id),
            ],
            [
                entry_id,
                run_id,
                "1" if ok else "0",
                next_due,
                ttl_active,
                ttl_end,
                FAILURE_LIMIT,
                result,
                day,
                now,
                reason,
            ],
        )

    def cancel(self, entry_id: str, ttl_end: int, *, remember: bool = True) -> Any:
        """Cancel the entry; a manifest schedule's removal is ``remember``-ed, so the beat
        does not bring it back until its manifest entry changes. Returns ``[state before, run
        ids in flight...]`` (None: no such entry)."""
        k = self.keys
        return self._eval(
            scripts.CANCEL,
            [
                k.background(entry_id),
                k.schedule(),
                k.background_index(),
                k.schedules_removed(),
                k.background_running(entry_id),
            ],
            [entry_id, ttl_end, "1" if remember else "0"],
        )

    def pause_resume(
        self, entry_id: str, action: str, due: float, ttl: int, nominal: float | None = None
    ) -> Any:
        """Pause (the entry's keys then stay) or resume (they expire again, after ``ttl``),
        due at ``due`` (on a grid: its grid time ``nominal``)."""
        k = self.keys
        return self._eval(
            scripts.PAUSE_RESUME,
            [
                k.background(entry_id),
                k.schedule(),
                k.background_done(entry_id),
                k.background_running(entry_id),
            ],
            [entry_id, action, due, ttl, "" if nominal is None else repr(nominal)],
        )

    def trigger(self, entry_id: str, count: int, now: float) -> Any:
        """Fire the entry ``count`` more times now, following its overlap policy."""
        k = self.keys
        return self._eval(
            scripts.TRIGGER, [k.background(entry_id), k.schedule()], [entry_id, count, now]
        )

    def running(self, entry_id: str) -> Any:
        """The entry's runs in flight, with when each started."""
        return self.client.zrange(self.keys.background_running(entry_id), 0, -1, withscores=True)

    def read(self, entry_id: str) -> Any:
        return self.client.hgetall(self.keys.background(entry_id))

    def resolve(self, name: str) -> Any:
        """The ids ``name`` may stand for (see ``scripts.RESOLVE``); ``pick`` chooses."""
        return self._eval(
            scripts.RESOLVE,
            [self.keys.background_index()],
            [self.keys.background(""), name, MANIFEST_PREFIX],
        )


def pick(name: str, found: list[Any]) -> str:
    """The one entry id of ``Entries.resolve(name)``'s answer, or a ``UserError`` that says
    why there is none."""
    ids = [as_text(i) for i in found]
    if len(ids) == 1:
        return ids[0]
    if ids:
        raise UserError(
            f"{len(ids)} entries are named {name!r}; give one of their ids: {', '.join(ids)}"
        )
    raise UserError(
        f"no background run or schedule {name!r} (`celery-agents schedules list` shows them)"
    )
