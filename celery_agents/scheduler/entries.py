"""Background entries in Redis: create, claim, complete, cancel, pause/resume, read.

An entry is a ``run_in_background`` call or a manifest schedule: a task template (agent run or
team tree) plus an interval or a cron expression, counters, and a state (``active``,
``paused``, ``cancelled``, ``done``, ``failed``). Each of its runs is an ordinary run whose
events also reach the entry's own channel (results only), so clients follow an entry like a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import RunError
from ..events import RunDone, RunFailed
from ..keys import Keys
from ..messages import ChatMessage
from ..text import as_text
from . import scripts
from .cron import next_fire

# Infinite entries stop after this many failed runs in a row, loudly, instead of looping on.
FAILURE_LIMIT = 5


class EntryTemplate(BaseModel):
    """What an entry runs and when."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task: str
    payload: dict[str, Any]
    interval: float | None = Field(None, ge=0)
    cron: str | None = None
    timezone: str = "UTC"
    max_count: int | None = Field(None, ge=1)
    timeout: float = Field(gt=0)

    def fields(self) -> dict[str, str]:
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
        }


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

    @classmethod
    def from_hash(cls, entry_id: str, raw: dict[Any, Any]) -> Entry:
        h = {as_text(k): as_text(v) for k, v in raw.items()}
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
            started=int(h.get("started", 0)),
            finished=int(h.get("finished", 0)),
            errors=int(h.get("errors", 0)),
            inflight=h.get("inflight") or None,
            inflight_since=float(h["inflight_since"]) if h.get("inflight_since") else None,
            last=h.get("last"),
            last_error=h.get("last_error"),
        )

    def next_due(self, now: float) -> float:
        """When the run after one that ended at ``now`` is due."""
        return due_after(self.interval, self.cron, self.timezone, now)

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
        for field, value in template.fields().items():
            args += [field, value]
        return self._eval(
            scripts.CREATE, [k.background(entry_id), k.schedule(), k.background_index()], args
        )

    def claim(self, entry_id: str, now: float, run_id: str, ttl: int) -> Any:
        k = self.keys
        return self._eval(
            scripts.CLAIM, [k.background(entry_id), k.schedule()], [entry_id, now, run_id, ttl]
        )

    def unclaim(self, entry_id: str, run_id: str, due: float) -> Any:
        k = self.keys
        return self._eval(
            scripts.UNCLAIM, [k.background(entry_id), k.schedule()], [entry_id, run_id, due]
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
    ) -> Any:
        k = self.keys
        return self._eval(
            scripts.COMPLETE,
            [
                k.background(entry_id),
                k.background_done(entry_id),
                k.schedule(),
                k.background_index(),
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
            ],
        )

    def cancel(self, entry_id: str, ttl_end: int) -> Any:
        k = self.keys
        return self._eval(
            scripts.CANCEL,
            [k.background(entry_id), k.schedule(), k.background_index()],
            [entry_id, ttl_end],
        )

    def pause_resume(self, entry_id: str, action: str, now: float, ttl: int) -> Any:
        """Pause (the entry's keys then stay) or resume (they expire again, after ``ttl``)."""
        k = self.keys
        return self._eval(
            scripts.PAUSE_RESUME,
            [k.background(entry_id), k.schedule(), k.background_done(entry_id)],
            [entry_id, action, now, ttl],
        )

    def read(self, entry_id: str) -> Any:
        return self.client.hgetall(self.keys.background(entry_id))
