"""A run's durable record: every state is recorded; an unknown run is never called queued."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from celery_agents import Agent, RunCancelled, RunHandle, RunTimeout, Settings, configure
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
