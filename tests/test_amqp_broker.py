"""An amqp:// broker works for the whole run path: agents, streams, teams, chains, jobs and
background runs (RabbitMQ as broker; Redis stays the result backend and pub/sub)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from celery_agents import Agent, Job, Settings, Team, TeamRun, configure
from celery_agents.embedded.worker import start_beat, start_worker
from celery_agents.testing.plugin import TEST_WORKER_ENV
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer
from tests.support.brokers import AMQP_URL, need_rabbitmq
from tests.support.models import Finding


@pytest.fixture(scope="module", autouse=True)
def _rabbitmq() -> None:  # module scope: before the module's stack starts
    need_rabbitmq()


@pytest.fixture(scope="module")
def amqp_stack(agents_redis_url: str, celery_agents_manifest_path: Path) -> Iterator[Settings]:
    """A worker and a beat on RabbitMQ, on a queue and key prefix of their own."""
    name = f"amqp-{uuid.uuid4().hex[:8]}"
    env = {**TEST_WORKER_ENV, "CELERY_AGENTS_BROKER_URL": AMQP_URL, "CELERY_AGENTS_QUEUE": name}
    worker = start_worker(
        agents_redis_url, manifest=celery_agents_manifest_path, extra_env=env, key_prefix=name
    )
    beat = start_beat(
        agents_redis_url, manifest=celery_agents_manifest_path, extra_env=env, key_prefix=name
    )
    try:
        yield Settings(
            redis_url=agents_redis_url,
            manifest=celery_agents_manifest_path,
            broker_url=AMQP_URL,
            queue=name,
            key_prefix=name,
        )
    finally:
        beat.stop()
        worker.stop()
        with Connection(AMQP_URL) as connection:
            connection.default_channel.queue_delete(name)


@pytest.fixture
def on_amqp(agents: Settings, amqp_stack: Settings) -> Iterator[Settings]:
    configure(amqp_stack)
    try:
        yield amqp_stack
    finally:
        configure(agents)


@pytest.mark.usefixtures("on_amqp")
async def test_runs_and_streams_through_a_rabbitmq_broker() -> None:
    agent = Agent("a", "test:echo")
    assert (await agent.run("over amqp")).content == "over amqp"
    async with agent.run_stream("streamed over amqp") as stream:
        assert "".join([c async for c in stream.stream()]) == "streamed over amqp"


@pytest.mark.usefixtures("on_amqp")
async def test_teams_chains_and_jobs_through_a_rabbitmq_broker(
    scripted_model: ScriptedModelServer,
) -> None:
    a, b = Agent("a", "test:echo"), Agent("b", "test:echo")
    assert (await Team([a, b]).run("team")).content == ["team", "team"]
    chain = await TeamRun([a, b, Agent("c", "test:echo")]).run("chain")
    assert chain.forwarded_from == ["a", "b"]
    scripted_model.script(Reply('{"severity": "low", "summary": "ok"}'))
    job = Job(name="triage", prompt="triage", required_return_type=Finding)
    assert (await Agent("j", "scripted:j").run_job(job)).content == Finding(
        severity="low", summary="ok"
    )


@pytest.mark.usefixtures("on_amqp")
async def test_background_runs_through_a_rabbitmq_broker() -> None:
    stats = await Agent("bg", "test:echo").run_in_background(
        "x", max_count=3, interval=0.05, block=True
    )
    assert stats.message_count == 3 and stats.errors == []
