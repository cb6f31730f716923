"""A worker told to stop (SIGTERM, as in a deploy) finishes the runs it holds, and acknowledges
them: nothing it ran comes back to run again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import redis

from celery_agents import Agent, Settings
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer

pytestmark = pytest.mark.usefixtures("agents")


async def test_a_stopping_worker_finishes_and_acknowledges_its_runs(
    agents: Settings,
    scripted_model: ScriptedModelServer,
    private_worker: Callable[..., WorkerProcess],
) -> None:
    worker = private_worker()
    scripted_model.script(*[Reply("slow answer", latency=1.5)] * 3)
    agent = Agent("patient", "scripted:m")
    handles = [await agent.submit(f"q{i}", store_history=False) for i in range(3)]
    await asyncio.to_thread(scripted_model.wait_for_requests, 3, 20)  # all three in flight
    await asyncio.to_thread(worker.stop, 30)  # SIGTERM: a warm shutdown
    assert worker.process.returncode is not None
    messages = await asyncio.gather(*(handle.result(timeout=30) for handle in handles))
    assert [m.content for m in messages] == ["slow answer"] * 3
    assert unacknowledged(agents, {handle.run_id for handle in handles}) == set()
    assert scripted_model.request_count == 3


def unacknowledged(agents: Settings, run_ids: set[str]) -> set[str]:
    """Which of ``run_ids`` still have a message in kombu's unacknowledged set."""
    broker = redis.Redis.from_url(agents.broker_url or agents.redis_url)
    try:
        held = {json.loads(raw)[0]["headers"]["id"] for raw in broker.hvals("unacked")}
    finally:
        broker.close()
    return held & run_ids
