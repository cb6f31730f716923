"""Delivering a run's outcome: the body each target gets, queued on the pipeline that ends the run.

A run's end queues one delivery per ``deliver`` target (a hash, and its id in the pending
ZSET) in the same round trip as its other terminal writes; the ``Deliverer`` of some worker
sends it (``deliverer.py``) and the CLI lists and retries the ones that gave up
(``deliveries.py``). The body is built and serialized here, once: every attempt sends, and
signs, the same bytes. A delivery's id is ``<run_id>:<n>`` (n: the target's index), so a run
whose end is queued twice (a redelivered task) delivers once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..config.deliver import DeliverTarget
from ..keys import Keys
from ..store.entry import RunEntry

DEFAULT_MAX_AGE = 86_400.0
# A pending or failed delivery outlives its retries by a week, for the operator to retry it.
KEEP_FAILED = 7 * 86_400
# A delivered one stays a day as a tombstone: a late redelivery of its run does not send again.
TOMBSTONE_TTL = 86_400

# KEYS: delivery hash, pending ZSET. ARGV: id, now, ttl, field, value, ...
# Only a delivery not seen before is queued: a delivered, failed or pending one stays as it is.
QUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


def hash_ttl(max_age: float) -> int:
    """Seconds a pending or failed delivery's hash is kept (refreshed as it moves)."""
    return int(max_age) + KEEP_FAILED


def delivery_id(run_id: str, n: int) -> str:
    return f"{run_id}:{n}"


def delivery_body(entry: RunEntry, *, full: bool) -> dict[str, Any]:
    """What a target gets (Standard Webhooks' ``type``/``timestamp``/``data`` envelope); ``full``
    adds the run's prompt and answer."""
    error = None
    if entry.error_type or entry.error_message:
        error = {"type": entry.error_type, "message": entry.error_message}
    data: dict[str, Any] = {
        "run_id": entry.run_id,
        "kind": entry.kind,
        "name": entry.name,
        "state": entry.state,
        "schedule": entry.schedule.removeprefix("schedule:") if entry.schedule else None,
        "tenant": entry.tenant,
        "attempt": entry.attempt,
        "usage": {
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            "requests": entry.requests,
        },
        "cost": entry.cost,
        "error": error,
    }
    if full:
        data["message"] = entry.message.model_dump(mode="json") if entry.message else None
        data["prompt"] = entry.prompt
    return {"type": f"run.{entry.state}", "timestamp": _iso(entry.ended_at), "data": data}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class DeliveryQueue:
    """Queues a run's deliveries on the pipeline of its end (no round trip of its own)."""

    def __init__(self, keys: Keys, *, max_age: float = DEFAULT_MAX_AGE) -> None:
        self._keys = keys
        self._ttl = hash_ttl(max_age)

    def queue(self, pipe: Any, entry: RunEntry, targets: Sequence[DeliverTarget]) -> None:
        """Queue one delivery per target on ``pipe`` (a redis-py pipeline, sync or asyncio;
        the caller executes it)."""
        if not targets:
            return
        now = repr(time.time())
        bodies: dict[bool, str] = {}  # thin and full, each serialized once
        for n, target in enumerate(targets):
            full = target.payload == "full"
            if full not in bodies:
                bodies[full] = json.dumps(delivery_body(entry, full=full), separators=(",", ":"))
            fields = {
                "run_id": entry.run_id,
                "n": str(n),
                "target": target.model_dump_json(exclude_defaults=True),
                "body": bodies[full],
                "created": now,
                "attempts": "0",
                "state": "pending",
            }
            ident = delivery_id(entry.run_id, n)
            args = [ident, now, str(self._ttl)]
            for name, value in fields.items():
                args += [name, value]
            pipe.eval(QUEUE, 2, self._keys.delivery(ident), self._keys.deliveries_pending(), *args)
