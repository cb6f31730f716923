"""A run's durable record: every state is recorded; an unknown run is never called queued."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from celery_agents import Agent, RunCancelled, RunHandle, RunTimeout, Settings, configure
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.keys import Keys
from celery_agents.testing.scripted_server import Hang, Reply, ScriptedModelServer

pytestmark = pytest.mark.usefixtures("agents")


async def test_a_run_is_queued_then_succeeds(agents: Settings) -> None:
    configure(agents.model_copy(update={"queue": f"nobody-{uuid.uuid4().hex[:6]}"}))
    try:
        waiting = await Agent("a", "test:echo").submit("x")  # no worker consumes this queue
        assert await waiting.status() == "queued"
    finally:
        configure(agents)
    handle = await Agent("a", "test:echo").submit("x")
    await handle.result(timeout=20)
    assert await handle.status() == "succeeded"
    assert await RunHandle.attach(uuid.uuid4().hex).status() == "unknown"


async def test_cancelled_and_timed_out_runs_say_so(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Reply("slow", latency=10))
    cancelled = await Agent("c", "scripted:m").submit("x")
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20)
    assert await cancelled.status() == "running"
    await cancelled.cancel()
    with pytest.raises(RunCancelled):
        await cancelled.result(timeout=20)
    assert await cancelled.status() == "cancelled"

    scripted_model.script(Hang(10))
    late = await Agent("t", "scripted:m").submit("x", timeout=0.5)
    with pytest.raises(RunTimeout):
        await late.result(timeout=20)
    assert await late.status() == "timed_out"


async def test_a_run_cancelled_while_queued_tells_its_caller(
    scripted_model: ScriptedModelServer, private_worker: Callable[..., WorkerProcess]
) -> None:
    private_worker(concurrency=1)
    scripted_model.script(Reply("busy", latency=2), model="busy")
    busy = await Agent("a", "scripted:busy").submit("hold the only slot", store_history=False)
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20)
    queued = await Agent("b", "scripted:m").submit("never runs", store_history=False)
    assert await queued.status() == "queued"
    await queued.cancel()
    with pytest.raises(RunCancelled, match="cancelled before it started"):
        await queued.result(timeout=30)  # before: nothing came, and this waited it out
    assert await queued.status() == "cancelled"
    assert (await busy.result(timeout=30)).content == "busy"


async def test_a_cancel_whose_control_message_was_lost_still_stops_the_run(
    agents: Settings,
    scripted_model: ScriptedModelServer,
    private_worker: Callable[..., WorkerProcess],
    redis_client: aioredis.Redis,
) -> None:
    private_worker(extra_env={"CELERY_AGENTS_VISIBILITY_TIMEOUT": "3"})  # renews every 0.5 s
    scripted_model.script(Reply("slow", latency=30))
    handle = await Agent("c", "scripted:m").submit("x")
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20)
    # The cancel's key alone, as if its control message went out while the worker was away.
    await redis_client.set(Keys(agents.key_prefix).run_cancel(handle.run_id), "1", ex=60)
    with pytest.raises(RunCancelled):
        await handle.result(timeout=20)
    assert await handle.status() == "cancelled"
