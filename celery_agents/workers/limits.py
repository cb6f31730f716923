"""Fleet-wide provider limits, enforced in Redis so every worker obeys one budget.

- requests per window: a strict sliding window of *reservations*. One atomic script books the
  earliest moment at which the window has room, and the caller sleeps until then. Waiters are
  served in the order they asked, and nobody busy-waits.
- tokens per window: a token bucket that may go into debt. A request reserves its estimate,
  waits the debt away, and the actual usage settles the difference afterwards.
- max concurrent requests: expiring leases, so a worker that dies cannot leak a slot.
- a 429 with retry-after sets a shared backoff that every worker waits out before its next
  request: the whole fleet slows down, not just the run that was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import redis.asyncio as aioredis

from ..config.manifest import ProviderLimits
from ..keys import Keys

# A reservation lands this share of the window (at least 50 ms) past the window's edge: a
# request booked for the very edge may reach the provider later than one booked a window after
# it (a cold connection, a busy loop), and the provider counts arrivals.
EDGE_MARGIN = 0.05
LEASE_POLL = 0.05  # how soon a slot freed by another worker is noticed

# KEYS: reservations zset. ARGV: now, window, limit, member, ttl ms. Returns the booked time.
RESERVE_SLOT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window - 1)
local t = now
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 and tonumber(last[2]) > t then t = tonumber(last[2]) end
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local kth = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  local free = tonumber(kth[2]) + window + tonumber(ARGV[6])
  if free > t then t = free end
end
redis.call('ZADD', KEYS[1], t, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(t)
"""

# KEYS: bucket hash. ARGV: now, capacity, refill per second, cost, ttl ms.
# Returns the seconds to wait until the bucket is out of debt.
TAKE_TOKENS = """
local now, capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or ARGV[2])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[1])
level = math.min(capacity, math.min(capacity, level + (now - at) * rate) - tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if level >= 0 then return '0' end
return tostring(-level / rate)
"""

# KEYS: leases zset. ARGV: now, max, member, lease expiry. 1 if the lease was granted.
TAKE_LEASE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[4]) - tonumber(ARGV[1])) * 1000))
return 1
"""


class LeasePool:
    """At most ``size`` holders at once, fleet-wide. A lease lasts ``lease_seconds`` unless
    renewed (``renew``, while its run goes on): a dead worker's leases lapse soon, and a run
    longer than a lease keeps its own."""

    def __init__(self, client: aioredis.Redis, key: str, size: int, lease_seconds: float) -> None:
        self.client = client
        self.key = key
        self.size = size
        self.lease_seconds = lease_seconds
        self._released = asyncio.Event()
        self._held: set[str] = set()

    async def acquire(self) -> str:
        lease = uuid.uuid4().hex
        while not await self._take(lease):
            # A release in this process wakes us at once; one elsewhere (or an expiry) is seen
            # on the next look, a moment later.
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LEASE_POLL):
                    await self._released.wait()
        return lease

    async def try_acquire(self) -> str | None:
        """A lease if one is free right now, else None (the caller decides how to wait)."""
        lease = uuid.uuid4().hex
        return lease if await self._take(lease) else None

    async def _take(self, lease: str) -> bool:
        now = time.time()
        granted = await self.client.eval(
            TAKE_LEASE, 1, self.key, now, self.size, lease, now + self.lease_seconds
        )
        if granted:
            self._held.add(lease)
        return bool(granted)

    async def release(self, lease: str) -> None:
        self._held.discard(lease)
        await self.client.zrem(self.key, lease)
        self._released.set()

    async def renew(self) -> None:
        """Push back the expiry of the leases this process holds (those still granted)."""
        held = list(self._held)
        if not held:
            return
        until = time.time() + self.lease_seconds
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key, dict.fromkeys(held, until), xx=True)
            pipe.pexpire(self.key, int(self.lease_seconds * 1000) + 1000)
            await pipe.execute()


BACKOFF_FRESH = 0.1  # seconds a read of the fleet's backoff is trusted


class ProviderLimiter:
    """The limits of one provider, shared through Redis by every worker."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        provider: str,
        limits: ProviderLimits,
        *,
        lease_seconds: float,
    ) -> None:
        self.client = client
        self.provider = provider
        self.limits = limits
        self.lease_seconds = lease_seconds
        base = keys.provider_limits(provider)
        self._requests_key = f"{base}:requests"
        self._tokens_key = f"{base}:tokens"
        self._leases = (
            LeasePool(client, f"{base}:leases", limits.max_concurrent, lease_seconds)
            if limits.max_concurrent is not None
            else None
        )
        self.backoff_key = f"{base}:backoff"
        # The fleet's backoff, as last read (until, read at): every request would otherwise
        # cost a round trip to learn that nobody has seen a 429.
        self._backoff: tuple[float, float] = (0.0, float("-inf"))
        self._ttl_ms = int((limits.window_seconds * 2 + 60) * 1000)
        self._refill = (limits.tokens_per_minute or 0) / 60

    async def acquire(self, estimated_tokens: int) -> str | None:
        """Wait until a request may go; returns the concurrency lease to release, if any."""
        await self._wait_backoff()
        limits = self.limits
        waits = [await self._book_request()]
        if limits.tokens is not None:
            debt = await self.client.eval(
                TAKE_TOKENS,
                1,
                self._tokens_key,
                time.time(),
                limits.tokens,
                self._refill,
                estimated_tokens,
                self._ttl_ms,
            )
            waits.append(float(debt))
        if max(waits) > 0:
            await asyncio.sleep(max(waits))
        return await self._leases.acquire() if self._leases is not None else None

    async def admit_retry(self) -> None:
        """Wait until a retry of a request may go: it is one more request to the provider
        (its tokens were booked with the first try; its concurrency lease is still held)."""
        await self._wait_backoff()
        wait = await self._book_request()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _book_request(self) -> float:
        """Book a request in the fleet's window; the seconds to wait until it is due."""
        limits = self.limits
        if limits.requests is None:
            return 0.0
        booked = await self.client.eval(
            RESERVE_SLOT,
            1,
            self._requests_key,
            time.time(),
            limits.window_seconds,
            limits.requests,
            uuid.uuid4().hex,
            self._ttl_ms,
            max(EDGE_MARGIN, EDGE_MARGIN * limits.window_seconds),
        )
        return float(booked) - time.time()

    async def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket by what the response really used."""
        if self.limits.tokens is None or actual_tokens == estimated_tokens:
            return
        await self.client.eval(
            TAKE_TOKENS,
            1,
            self._tokens_key,
            time.time(),
            self.limits.tokens,
            self._refill,
            actual_tokens - estimated_tokens,
            self._ttl_ms,
        )

    @property
    def lease_pool(self) -> LeasePool | None:
        """The pool of ``max_concurrent`` requests (None: no such cap)."""
        return self._leases

    async def release(self, lease: str | None) -> None:
        if lease is not None and self._leases is not None:
            await self._leases.release(lease)

    async def back_off(self, seconds: float) -> None:
        """The provider said 429: every worker waits ``seconds`` before its next request."""
        until = time.time() + seconds
        self._backoff = (max(until, self._backoff[0]), time.monotonic())
        current = await self.client.get(self.backoff_key)
        if current is None or float(current) < until:
            await self.client.set(self.backoff_key, repr(until), px=int(seconds * 1000) + 1)

    async def _wait_backoff(self) -> None:
        """Wait out the fleet's backoff; read from Redis at most every ``BACKOFF_FRESH``
        seconds (another worker's 429 reaches this one that much later, at most)."""
        until, read_at = self._backoff
        if time.monotonic() - read_at > BACKOFF_FRESH:
            raw = await self.client.get(self.backoff_key)
            until = max(float(raw) if raw is not None else 0.0, until)
            self._backoff = (until, time.monotonic())
        if until > time.time():
            await asyncio.sleep(until - time.time())
