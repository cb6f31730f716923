"""A run's durable record: its state as the client and the workers last wrote it.

``queued`` (the client sent it), ``running`` (a worker started it: attempt, worker), then one
of ``succeeded``, ``failed``, ``cancelled``, ``timed_out``. A run nobody has recorded is
``unknown``: never guessed to be queued.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from .errors import CeleryAgentsError, RunCancelled, RunTimeout
from .keys import Keys

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
