"""Failed deliveries, for the CLI: list them, and send them back to be retried (blocking calls).

A delivery that gave up (``max_age`` of failed attempts) waits in the failed ZSET, its hash
kept a week longer. Retrying one queues it again as new: a fresh ``max_age`` of retries, its
attempt count kept for the record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis
from pydantic import ValidationError

from ..config.deliver import FileTarget, parse_target
from ..errors import UserError
from ..keys import Keys
from ..text import as_text
from .delivery import DEFAULT_MAX_AGE, hash_ttl

# KEYS: failed, hash, pending. ARGV: id, now, ttl. 1 if it moved, 0 if it was not failed.
RETRY = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'state', 'pending', 'created', ARGV[2])
redis.call('HDEL', KEYS[2], 'failed_at')
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""

_FIELDS = ("run_id", "target", "attempts", "last_error")


@dataclass(frozen=True)
class FailedDelivery:
    """One delivery that gave up. ``target``: the webhook's URL or the file's path."""

    id: str
    run_id: str
    target: str
    attempts: int
    last_error: str | None
    failed_at: float


def failed_deliveries(client: redis.Redis, keys: Keys) -> list[FailedDelivery]:
    """The failed deliveries, oldest first."""
    failed = cast(
        "list[tuple[bytes, float]]",
        client.zrange(keys.deliveries_failed(), 0, -1, withscores=True),
    )
    with client.pipeline(transaction=False) as pipe:
        for raw_id, _ in failed:
            pipe.hmget(keys.delivery(as_text(raw_id)), _FIELDS)
        rows = pipe.execute()
    found: list[FailedDelivery] = []
    for (raw_id, failed_at), row in zip(failed, rows, strict=True):
        ident = as_text(raw_id)
        run_id, target, attempts, last_error = (None if v is None else as_text(v) for v in row)
        if run_id is None or target is None:  # expired: its id no longer belongs here
            client.zrem(keys.deliveries_failed(), ident)
            continue
        found.append(
            FailedDelivery(
                id=ident,
                run_id=run_id,
                target=_shown(target),
                attempts=int(attempts or 0),
                last_error=last_error,
                failed_at=float(failed_at),
            )
        )
    return found


def retry_deliveries(
    client: redis.Redis,
    keys: Keys,
    ids: Sequence[str] | None = None,
    *,
    max_age: float = DEFAULT_MAX_AGE,
) -> int:
    """Queue failed deliveries again (``None``: every one); how many. An id that is not a
    failed delivery is a ``UserError`` (and none is retried)."""
    if ids is None:
        chosen = [as_text(i) for i in client.zrange(keys.deliveries_failed(), 0, -1)]
    else:
        chosen = list(dict.fromkeys(ids))
        with client.pipeline(transaction=False) as pipe:
            for ident in chosen:
                pipe.zscore(keys.deliveries_failed(), ident)
            scores = pipe.execute()
        unknown = [i for i, score in zip(chosen, scores, strict=True) if score is None]
        if unknown:
            raise UserError(f"no failed delivery {', '.join(map(repr, unknown))}")
    now, ttl = repr(time.time()), str(hash_ttl(max_age))
    with client.pipeline(transaction=False) as pipe:
        for ident in chosen:
            pipe.eval(
                RETRY,
                3,
                keys.deliveries_failed(),
                keys.delivery(ident),
                keys.deliveries_pending(),
                ident,
                now,
                ttl,
            )
        moved = pipe.execute()
    return sum(int(m) for m in moved)


def _shown(raw: str) -> str:
    try:
        target = parse_target(raw)
    except ValidationError:
        return "(unreadable target)"
    return target.file if isinstance(target, FileTarget) else target.webhook
