"""A run's durable record: its state as the client and the workers last wrote it.

``queued`` (the client sent it), ``running`` (a worker started it: attempt, worker), then one
of ``succeeded``, ``failed``, ``cancelled``, ``timed_out``. A run nobody has recorded is
``unknown``: never guessed to be queued.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .errors import CeleryAgentsError, RunCancelled, RunTimeout
from .keys import Keys
from .text import as_text

RunStatus = Literal["unknown", "queued", "running", "succeeded", "failed", "cancelled", "timed_out"]


def final_state(error: CeleryAgentsError | None) -> RunStatus:
    if error is None:
        return "succeeded"
    if isinstance(error, RunCancelled):
        return "cancelled"
    if isinstance(error, RunTimeout):
        return "timed_out"
    return "failed"


def write_state(
    pipe: Any, keys: Keys, run_id: str, state: RunStatus, ttl: int, **fields: str | int | float
) -> None:
    """Queue the record's update on a pipeline (it rides along with other writes)."""
    key = keys.run_state(run_id)
    pipe.hset(key, mapping={"state": state, f"{state}_at": time.time(), **fields})
    pipe.expire(key, ttl)


@dataclass(frozen=True)
class RunRecord:
    """What the record holds: the state, the attempt that runs or ran, on which worker, and
    the last heartbeat of that worker for this run (epoch seconds)."""

    run_id: str
    state: RunStatus = "unknown"
    attempt: int = 0
    worker: str | None = None
    heartbeat_at: float | None = None
    times: dict[str, float] = field(default_factory=dict)  # "queued" / "running" / ... -> when
    name: str | None = None  # the agent's, Team's or TeamRun's
    tenant: str | None = None

    @classmethod
    def from_hash(cls, run_id: str, raw: dict[Any, Any]) -> RunRecord:
        data = {as_text(k): as_text(v) for k, v in raw.items()}
        if not data:
            return cls(run_id)
        return cls(
            run_id=run_id,
            state=cast(RunStatus, data.get("state", "unknown")),
            attempt=int(data.get("attempt", 0)),
            worker=data.get("worker"),
            heartbeat_at=float(data["heartbeat_at"]) if "heartbeat_at" in data else None,
            name=data.get("name") or None,
            tenant=data.get("tenant") or None,
            times={
                k.removesuffix("_at"): float(v)
                for k, v in data.items()
                if k.endswith("_at") and k != "heartbeat_at"
            },
        )
