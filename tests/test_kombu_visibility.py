"""Pins the kombu private detail ``workers/kombu_visibility.py`` relies on, on the installed
kombu and a real Redis: an unacknowledged message's tag is in the unacked index, scored with
its delivery time, and ``restore_visible`` puts back exactly the messages scored older than
the visibility timeout. If an upgrade changes that, these fail (and so would the README's
"never redelivered while its worker lives").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from kombu import Connection, Exchange, Queue

from celery_agents.workers.kombu_visibility import UNACKED_INDEX, HeldDeliveries

VISIBILITY = 60.0


@pytest.fixture
def held(agents_redis_url: str) -> Iterator[tuple[Any, Any, redis.Redis]]:
    """One message delivered and not acknowledged: (its message, the channel, Redis)."""
    queue = Queue(f"visibility-{uuid.uuid4().hex[:8]}", Exchange("", type="direct"))
    with Connection(
        agents_redis_url, transport_options={"visibility_timeout": VISIBILITY}
    ) as connection:
        channel = connection.default_channel
        producer = connection.Producer(serializer="json")
        producer.publish({"n": 1}, routing_key=queue.name, declare=[queue])
        message = queue(channel).get(no_ack=False)
        assert message is not None
        client = redis.Redis.from_url(agents_redis_url)
        try:
            yield message, channel, client
        finally:
            client.delete(queue.name)
            client.zrem(UNACKED_INDEX, message.delivery_tag)
            client.hdel("unacked", message.delivery_tag)
            client.close()


def _restored(channel: Any, client: redis.Redis, message: Any) -> bool:
    channel.qos.restore_visible(num=1000, interval=1)
    return client.zscore(UNACKED_INDEX, message.delivery_tag) is None


def test_an_unacked_message_is_in_the_index_scored_with_its_delivery_time(
    held: tuple[Any, Any, redis.Redis],
) -> None:
    message, _, client = held
    score = client.zscore(UNACKED_INDEX, message.delivery_tag)
    assert score is not None and abs(score - time.time()) < 30


def test_a_message_scored_past_the_visibility_timeout_is_restored(
    held: tuple[Any, Any, redis.Redis],
) -> None:
    message, channel, client = held
    client.zadd(UNACKED_INDEX, {message.delivery_tag: time.time() - VISIBILITY - 5})
    assert _restored(channel, client, message)


async def test_a_held_message_re_stamped_by_its_worker_is_not_restored(
    held: tuple[Any, Any, redis.Redis], agents_redis_url: str
) -> None:
    message, channel, client = held
    client.zadd(UNACKED_INDEX, {message.delivery_tag: time.time() - VISIBILITY - 5})
    broker = aioredis.Redis.from_url(agents_redis_url)
    try:
        deliveries = HeldDeliveries(broker)
        deliveries.track(message.delivery_tag)
        await deliveries.touch()
    finally:
        await broker.aclose()
    assert not _restored(channel, client, message)


async def test_an_acknowledged_message_is_forgotten_on_the_next_touch(
    held: tuple[Any, Any, redis.Redis], agents_redis_url: str
) -> None:
    message, _, client = held
    broker = aioredis.Redis.from_url(agents_redis_url)
    try:
        deliveries = HeldDeliveries(broker)
        deliveries.track(message.delivery_tag)
        message.ack()
        await deliveries.touch()
        assert client.zscore(UNACKED_INDEX, message.delivery_tag) is None  # not re-created
        assert deliveries._tags == set()
    finally:
        await broker.aclose()
