"""Urgent runs overtake bulk ones, on the Redis broker and on RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from celery_agents import Agent, RunTimeout, Settings, Team, UserError, configure
from celery_agents.embedded.worker import start_worker
from celery_agents.testing.plugin import TEST_WORKER_ENV
from celery_agents.testing.scripted_server import ScriptedModelServer
from tests.support.brokers import AMQP_URL, rabbitmq_answers


@pytest.fixture(params=["redis", "amqp"])
def busy_worker(
    request: pytest.FixtureRequest,
    agents: Settings,
    agents_redis_url: str,
    celery_agents_manifest_path: Path,
) -> Iterator[Settings]:
    """A worker of 4 threads on a queue of its own, on either broker."""
    if request.param == "amqp" and not rabbitmq_answers():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    broker = AMQP_URL if request.param == "amqp" else agents_redis_url
    queue = f"prio-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        agents_redis_url,
        manifest=celery_agents_manifest_path,
        concurrency=4,
        extra_env={
            **TEST_WORKER_ENV,
            "CELERY_AGENTS_QUEUE": queue,
            "CELERY_AGENTS_BROKER_URL": broker,
        },
    )
    settings = agents.model_copy(update={"queue": queue, "broker_url": broker})
    configure(settings)
    try:
        yield settings
    finally:
        worker.stop()
        configure(agents)
        if request.param == "amqp":
            with Connection(AMQP_URL) as connection:
                connection.default_channel.queue_delete(queue)


async def test_an_urgent_run_overtakes_200_bulk_runs(
    scripted_model: ScriptedModelServer, busy_worker: Settings
) -> None:
    scripted_model.latency = 0.02
    bulk_agent, urgent_agent = Agent("bulk", "scripted:m"), Agent("urgent", "scripted:m")
    bulk = [
        await bulk_agent.submit(f"bulk {i}", store_history=False, priority=0) for i in range(200)
    ]
    urgent = await urgent_agent.submit("urgent", store_history=False, priority=9)
    urgent_msg = await urgent.result(timeout=60)
    bulk_msgs = await asyncio.gather(*(h.result(timeout=120) for h in bulk))
    later = sum(m.timestamp > urgent_msg.timestamp for m in bulk_msgs)
    assert later > 150, f"only {later} of 200 bulk runs finished after the urgent one"


async def test_a_bad_priority_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="priority: Input should be less than or equal to 9"):
        await Agent("a", "test:echo").submit("x", priority=10)


async def test_a_team_run_takes_a_queue_and_a_priority(agents: Settings) -> None:
    team = Team([Agent("a", "test:echo")])
    # The session's worker consumes its own queue: a run routed to "nowhere" must wait there.
    with pytest.raises(RunTimeout, match="is a worker running"):
        await team.run("x", queue="nowhere", priority=9, timeout=0.2)
    assert (await team.run("x", priority=9)).content == ["x"]
