"""Fleet-wide provider limits: three workers behave as one well-mannered client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from celery_agents import Agent
from celery_agents.testing.scripted_server import Fail, ScriptedModelServer
from celery_agents.workers.limits import TAKE_TOKENS, LeasePool
from tests.conftest import Stack

pytestmark = pytest.mark.usefixtures("agents")


ARRIVAL_JITTER = 0.5  # seconds between a request's admission and its arrival, at most


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


@pytest.fixture
def three_workers(stack: Callable[..., Stack]) -> Stack:
    fleet = stack(beat=False)
    fleet.worker()
    fleet.worker()
    return fleet


async def test_three_workers_never_exceed_the_request_limit_in_any_window(
    scripted_model: ScriptedModelServer, three_workers: Stack
) -> None:
    agent = Agent("busy", "limited:m")  # 300/minute over a 2 s window: 10 per 2 s
    started = time.monotonic()
    messages = await asyncio.gather(*(agent.run(f"r{i}", store_history=False) for i in range(30)))
    assert len(messages) == 30
    times = [r.received_at for r in scripted_model.requests]
    assert len(times) == 30
    # Counted where the requests arrive, a little after the limiter let them go: a request
    # delayed on a busy machine may land next to the next window's first ones, so the window
    # checked here is shorter by that much (unlimited, all 30 land within a fraction of it).
    assert most_in_any_window(times, 2.0 - ARRIVAL_JITTER) <= 10
    assert time.monotonic() - started >= 4.0  # 30 requests at 10 per 2 s need two more windows


async def test_a_429_slows_down_every_worker(
    scripted_model: ScriptedModelServer, three_workers: Stack
) -> None:
    scripted_model.script(Fail(429, retry_after=1.5))
    first = asyncio.create_task(Agent("first", "scripted:m").run("x", store_history=False))
    throttled_at = (await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20))[0].received_at
    others = [Agent(f"other{i}", "scripted:m").run("y", store_history=False) for i in range(6)]
    await asyncio.gather(first, *others)
    later = [r.received_at - throttled_at for r in scripted_model.requests[1:]]
    assert len(later) == 7  # the retried first run and six others
    assert min(later) >= 1.4, later  # nobody asked again before the retry-after was up


async def test_max_concurrent_caps_requests_in_flight_across_workers(
    scripted_model: ScriptedModelServer, three_workers: Stack
) -> None:
    scripted_model.latency = 0.4
    agent = Agent("capped", "capped:m")
    await asyncio.gather(*(agent.run(f"r{i}", store_history=False) for i in range(6)))
    times = sorted(r.received_at for r in scripted_model.requests)
    assert most_in_any_window(times, 0.35) <= 2, [round(t - times[0], 2) for t in times]


async def test_a_refund_never_fills_the_token_bucket_past_its_size(agents_redis_url: str) -> None:
    key = f"bucket-test-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(agents_redis_url)
    try:

        async def take(now: float, cost: int) -> None:
            await client.eval(TAKE_TOKENS, 1, key, now, 1000, 1000 / 60, cost, 60_000)

        await take(1000.0, 900)  # an estimate of 900 tokens out of 1,000 a minute
        await take(1060.0, -800)  # a minute on (full again), the answer used 100: refund 800
        level = await client.hget(key, "level")
        assert level is not None and float(level) <= 1000  # before: 1,800
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_slot_renewed_outlives_its_lease_and_lapses_once_not(agents_redis_url: str) -> None:
    # A run longer than a slot's lease keeps its slot while its worker renews it; a dead
    # worker's slot lapses after one lease (before: it lasted run_timeout either way).
    key = f"slots-test-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(agents_redis_url)
    ours, theirs = LeasePool(client, key, 1, 1.0), LeasePool(client, key, 1, 1.0)
    try:
        await ours.acquire()
        for _ in range(5):  # 1.5 s: past the lease, renewed all along
            await asyncio.sleep(0.3)
            await ours.renew()
        assert await theirs.try_acquire() is None
        await asyncio.sleep(1.2)  # our worker "died": no renewal for longer than a lease
        assert await theirs.try_acquire() is not None
    finally:
        await client.delete(key)
        await client.aclose()


async def test_retries_count_against_the_request_limit(scripted_model: ScriptedModelServer) -> None:
    # Each of 10 runs meets one 503 and retries: 20 requests, 10 per 2 s at most. Before,
    # a retry went straight out: all 20 landed within a fraction of a second.
    scripted_model.script(*[Fail(503) for _ in range(10)], model="m")
    agent = Agent("busy", "limited:m")
    messages = await asyncio.gather(*(agent.run(f"r{i}", store_history=False) for i in range(10)))
    assert len(messages) == 10
    times = [r.received_at for r in scripted_model.requests]
    assert len(times) == 20
    assert most_in_any_window(times, 2.0 - ARRIVAL_JITTER) <= 10
