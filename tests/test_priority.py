"""Urgent runs overtake bulk ones, on the Redis broker and on RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from kombu import Connection

from celery_agents import Agent, RunTimeout, Settings, Team, UserError
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.testing.scripted_server import ScriptedModelServer
from tests.support.brokers import AMQP_URL, need_rabbitmq


@pytest.fixture(params=["redis", "amqp"])
def busy_worker(
    request: pytest.FixtureRequest,
    agents_redis_url: str,
    private_worker: Callable[..., WorkerProcess],
) -> Iterator[None]:
    """A worker of 4 threads on a queue of its own, on either broker."""
    broker = need_rabbitmq() if request.param == "amqp" else agents_redis_url
    worker = private_worker(concurrency=4, broker=broker)
    yield
    if request.param == "amqp":
        worker.kill()
        with Connection(AMQP_URL) as connection:
            connection.default_channel.queue_delete(worker.env["CELERY_AGENTS_QUEUE"])


async def test_an_urgent_run_overtakes_200_bulk_runs(
    scripted_model: ScriptedModelServer, busy_worker: None
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
