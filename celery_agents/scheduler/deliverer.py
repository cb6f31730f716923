"""``Deliverer``: sends ended runs' deliveries (webhook POSTs, JSON lines), retrying with backoff.

Every worker runs one; they share the pending ZSET. A deliverer claims a due delivery by
pushing its score a lease ahead, atomically, so two never send one at the same moment, and one
that dies mid-send only delays it by the lease. A failed attempt is tried again after an
exponential backoff (with jitter) until the delivery is ``max_age`` old; then it moves to the
failed ZSET, for an operator to list and retry (``deliveries.py``). A delivery never fails a
run, and at most a delivery's claim outlives a crash: delivery is at least once, and every
attempt carries the same ``webhook-id`` (the run id) for the receiver to drop repeats.

Webhook secrets are read from the environment at send time, here; they never reach Redis or
the logs (a missing or malformed one is a failed attempt that names the variable).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import redis.asyncio as aioredis
from pydantic import ValidationError
from standardwebhooks import Webhook

from ..config.deliver import FileTarget, WebhookTarget, parse_target
from ..keys import Keys
from ..text import as_text
from .delivery import DEFAULT_MAX_AGE, TOMBSTONE_TTL, hash_ttl

log = logging.getLogger(__name__)

BATCH = 50  # deliveries claimed, and sent at once, per round
CONNECTIONS = 16  # open at once per deliverer: a receiver is not flooded by one worker
LEASE = 60.0  # seconds a claim holds a delivery; longer than any one attempt can take
MAX_REDIS_BACKOFF = 30.0
USER_AGENT = "celery-agents"

# KEYS: pending, hash. ARGV: id, now, lease end. The delivery's fields, or nil if it is not
# due (another deliverer holds it) or has expired.
CLAIM = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return nil end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return nil
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return redis.call('HMGET', KEYS[2], 'run_id', 'target', 'body')
"""

# KEYS: hash, pending. ARGV: id, now, tombstone ttl. Returns the attempts made.
DELIVERED = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'delivered', 'delivered_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return attempts
"""

# KEYS: hash, pending, failed. ARGV: id, now, reason, max age, first backoff, max backoff,
# jitter factor, ttl. Returns {attempts, 'failed'} or {attempts, seconds to the next attempt},
# or nil when the delivery is gone or another deliverer got it through meanwhile.
ATTEMPT_FAILED = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'state') ~= 'pending' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return nil
end
local now = tonumber(ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[3], 'last_attempt', ARGV[2])
local expires = tonumber(redis.call('HGET', KEYS[1], 'created')) + tonumber(ARGV[4])
if now >= expires then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
  redis.call('HSET', KEYS[1], 'state', 'failed', 'failed_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  return {attempts, 'failed'}
end
local backoff = tonumber(ARGV[5]) * 2 ^ (attempts - 1)
backoff = math.min(backoff, tonumber(ARGV[6])) * tonumber(ARGV[7])
-- The last attempt is made when the delivery comes of age, not a long backoff after it.
local due = math.min(now + backoff, expires)
redis.call('ZADD', KEYS[2], due, ARGV[1])
return {attempts, tostring(due - now)}
"""


@dataclass(frozen=True)
class _Claimed:
    id: str
    run_id: str
    target: str
    body: str


class Deliverer:
    """Attempts the due deliveries of every worker's runs; ``run_forever`` on the worker's
    loop, ``wake()`` once a run's end is written. ``deliver_due`` makes one round by itself
    (then ``aclose()``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        consumer: str,
        max_age: float = DEFAULT_MAX_AGE,
        first_backoff: float = 1.0,
        max_backoff: float = 3600.0,
        poll: float = 1.0,
        http_timeout: float = 10.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.consumer = consumer  # named in reasons ("HOOK_SECRET is not set on <consumer>")
        self._max_age = max_age
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._poll = poll
        self._http_timeout = http_timeout
        self._wake = asyncio.Event()
        self._http: httpx2.AsyncClient | None = None
        self.delivered = 0  # deliveries this deliverer got through (tests read it)
        self.failed_attempts = 0
        self.napping = False  # between rounds, until woken or the next one is due

    def wake(self) -> None:
        """Look for due deliveries now, not at the next poll (call it on the deliverer's loop
        once a run's end, with its deliveries, is written)."""
        self._wake.set()

    async def run_forever(self) -> None:
        delay = 0.0
        try:
            while True:
                self._wake.clear()  # a wake() from here on starts another round
                try:
                    claimed = await self.deliver_due()
                    nap = 0.0 if claimed == BATCH else await self._until_next_due()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: deliveries wait in it, try again
                    delay = min(MAX_REDIS_BACKOFF, max(0.5, delay * 2))
                    log.warning("deliveries: cannot reach Redis (%s); retrying", _short(exc))
                    await asyncio.sleep(delay)
                    continue
                if delay:
                    log.info("deliveries: reaching Redis again")
                    delay = 0.0
                if nap > 0:
                    await self._nap(nap)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client (``run_forever`` does, when cancelled)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def deliver_due(self) -> int:
        """Claim the due deliveries (up to a batch) and attempt them, at once. How many."""
        now = time.time()
        ids = await self._redis.zrangebyscore(
            self._keys.deliveries_pending(), "-inf", now, start=0, num=BATCH
        )
        if not ids:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for raw in ids:
                ident = as_text(raw)
                pipe.eval(
                    CLAIM,
                    2,
                    self._keys.deliveries_pending(),
                    self._keys.delivery(ident),
                    ident,
                    repr(now),
                    repr(now + LEASE),
                )
            replies = await pipe.execute()
        claimed = [
            _Claimed(as_text(i), *(as_text(v) for v in reply))
            for i, reply in zip(ids, replies, strict=True)
            if reply and None not in reply
        ]
        outcomes = await asyncio.gather(
            *(self._attempt(c) for c in claimed), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):  # its claim lapses: tried again after it
                raise outcome
        return len(ids)

    async def _attempt(self, claimed: _Claimed) -> None:
        where = "?"
        try:
            target = parse_target(claimed.target)
            where = _where(target)
            reason = await self._send(target, claimed)
        except ValidationError as exc:
            reason = f"unreadable target: {_short(exc)}"
        except Exception as exc:  # whatever the target did, it is this attempt's failure
            reason = f"{type(exc).__name__}: {_short(exc)}"
        if reason is None:
            await self._delivered(claimed, where)
        else:
            await self._failed(claimed, where, reason)

    async def _send(self, target: WebhookTarget | FileTarget, claimed: _Claimed) -> str | None:
        """Make one attempt: None if it got through, else why not (short, no secret)."""
        if isinstance(target, FileTarget):
            return await _append(target.file, claimed.body + "\n")
        return await self._post(target, claimed)

    async def _post(self, target: WebhookTarget, claimed: _Claimed) -> str | None:
        if self._http is None:  # one client for every webhook: its connections are reused
            self._http = httpx2.AsyncClient(
                timeout=self._http_timeout,
                follow_redirects=False,
                limits=httpx2.Limits(max_connections=CONNECTIONS),
            )
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": claimed.run_id,
            "webhook-timestamp": str(now),
        }
        body = claimed.body.encode()
        if target.secret_env:
            signer = self._signer(target.secret_env)
            if isinstance(signer, str):
                return signer
            headers["webhook-signature"] = signer.sign(
                claimed.run_id, datetime.fromtimestamp(now, UTC), body
            )
        try:
            response = await self._http.post(target.webhook, content=body, headers=headers)
        except httpx2.TimeoutException:
            return f"no answer within {self._http_timeout:g}s"
        except httpx2.ConnectError as exc:
            return f"cannot connect: {_short(exc)}"
        except httpx2.HTTPError as exc:
            text = _short(exc)
            name = type(exc).__name__
            return name if text == name else f"{name}: {text}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _signer(self, name: str) -> Webhook | str:
        """The signer of the secret in ``name``, or why there is none (naming the variable,
        never its value)."""
        secret = os.environ.get(name)
        if not secret:
            return f"{name} is not set on {self.consumer}"
        key = secret.removeprefix("whsec_")
        try:
            # The library skips characters that are not base64: say so rather than sign with
            # a key other than the one the receiver holds.
            valid = secret.startswith("whsec_") and bool(
                base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
            )
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            return f"{name} on {self.consumer} is not a webhook secret (whsec_ + base64)"
        return Webhook(secret)

    async def _delivered(self, claimed: _Claimed, where: str) -> None:
        attempts = await self._redis.eval(
            DELIVERED,
            2,
            self._keys.delivery(claimed.id),
            self._keys.deliveries_pending(),
            claimed.id,
            repr(time.time()),
            str(TOMBSTONE_TTL),
        )
        self.delivered += 1
        log.info("delivery %s to %s delivered (attempt %s)", claimed.id, where, attempts)

    async def _failed(self, claimed: _Claimed, where: str, reason: str) -> None:
        self.failed_attempts += 1
        reply = await self._redis.eval(
            ATTEMPT_FAILED,
            3,
            self._keys.delivery(claimed.id),
            self._keys.deliveries_pending(),
            self._keys.deliveries_failed(),
            claimed.id,
            repr(time.time()),
            reason,
            repr(self._max_age),
            repr(self._first_backoff),
            repr(self._max_backoff),
            repr(random.uniform(0.9, 1.1)),  # jitter: receivers that were down are not stampeded
            str(hash_ttl(self._max_age)),
        )
        if not reply:
            return
        attempts, then = int(reply[0]), as_text(reply[1])
        if then == "failed":
            log.warning(
                "delivery %s to %s failed (attempt %d): %s; gave up after %gs "
                "(celery-agents deliveries lists it)",
                claimed.id,
                where,
                attempts,
                reason,
                self._max_age,
            )
        else:
            log.warning(
                "delivery %s to %s failed (attempt %d): %s; next in %.1fs",
                claimed.id,
                where,
                attempts,
                reason,
                float(then),
            )

    async def _until_next_due(self) -> float:
        """Seconds to nap: until the soonest delivery is due, at most ``poll``."""
        soonest = await self._redis.zrange(self._keys.deliveries_pending(), 0, 0, withscores=True)
        if not soonest:
            return self._poll
        return min(max(float(soonest[0][1]) - time.time(), 0.0), self._poll)

    async def _nap(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that comes
        # as the wake does, and the deliverer would outlive its worker's shutdown.
        self.napping = True
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._wake.wait()
        finally:
            self.napping = False


async def _append(path: str, line: str) -> str | None:
    try:
        await asyncio.to_thread(_append_line, path, line.encode())
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or type(exc).__name__}"
    return None


def _append_line(name: str, data: bytes) -> None:
    path = Path(name).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write in append mode: lines from several workers do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write (rare on a file): the rest follows
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


def _where(target: WebhookTarget | FileTarget) -> str:
    """A target as logs show it: a webhook's host and path (a query may carry a token)."""
    if isinstance(target, FileTarget):
        return target.file
    parts = urlsplit(target.webhook)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname}{port}{parts.path or '/'}"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"
