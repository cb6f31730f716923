"""An amqp:// broker works too (RabbitMQ as broker, Redis for results and streaming)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection

from celery_agents import Agent, Settings, configure
from celery_agents.embedded.worker import start_worker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not rabbitmq_answers(), reason="no RabbitMQ on 127.0.0.1:5672")


@pytest.fixture
def amqp_settings(agents_redis_url: str) -> Iterator[Settings]:
    queue = f"celery-agents-test-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        agents_redis_url,
        extra_env={"CELERY_AGENTS_BROKER_URL": AMQP_URL, "CELERY_AGENTS_QUEUE": queue},
    )
    settings = Settings(redis_url=agents_redis_url, broker_url=AMQP_URL, queue=queue)
    configure(settings)
    try:
        yield settings
    finally:
        worker.stop()
        configure(Settings(redis_url=agents_redis_url))
        with Connection(AMQP_URL) as connection:
            connection.default_channel.queue_delete(queue)


async def test_runs_and_streams_through_a_rabbitmq_broker(amqp_settings: Settings) -> None:
    agent = Agent("a", "test:echo")
    assert (await agent.run("over amqp")).content == "over amqp"
    async with agent.run_stream("streamed over amqp") as stream:
        assert "".join([c async for c in stream.stream()]) == "streamed over amqp"
