"""A run's progress events leave in order and in batches; the terminal one comes last."""

from __future__ import annotations

import uuid

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from celery_agents.events import RunDone, TextDelta, parse_event
from celery_agents.keys import Keys
from celery_agents.messages import ChatMessage
from celery_agents.streaming.outbox import Outbox
from celery_agents.streaming.publisher import EventPublisher
from tests.faults.test_redis_restart import Restartable

KEYS = Keys("outbox-test")


def _evalsha_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0))
    finally:
        client.close()


async def test_events_keep_their_order_and_share_round_trips(agents_redis_url: str) -> None:
    client = aioredis.Redis.from_url(agents_redis_url)
    publisher = EventPublisher(client, KEYS, log_cap=1000, ttl=60)
    await publisher.publish(TextDelta(run_id="warm-up", text="."))  # the script is loaded
    run_id = uuid.uuid4().hex
    outbox = Outbox(publisher)
    before = _evalsha_calls(agents_redis_url)
    for i in range(200):
        outbox.put([(run_id, TextDelta(run_id=run_id, text=str(i)))])
        if i % 50 == 0:
            await outbox.flush()
    done = RunDone(run_id=run_id, message=ChatMessage(content="end", role="assistant"))
    await outbox.close([(run_id, done)])
    calls = _evalsha_calls(agents_redis_url) - before

    logged = [parse_event(raw) for raw in await client.lrange(KEYS.run_log(run_id), 0, -1)]
    await client.aclose()
    assert [e.seq for e in logged] == list(range(1, 202))
    assert [e.text for e in logged[:-1] if isinstance(e, TextDelta)] == [str(i) for i in range(200)]
    assert isinstance(logged[-1], RunDone)
    assert calls <= 6, f"201 events took {calls} round trips"


async def test_a_failed_publish_fails_the_runs_next_flush(agents_redis_url: str) -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    outbox = Outbox(EventPublisher(client, KEYS, log_cap=10, ttl=60))
    outbox.put([("r", TextDelta(run_id="r", text="lost"))])
    with pytest.raises(RedisConnectionError):
        await outbox.flush()
    await client.aclose()


async def test_events_lost_with_redis_go_out_again_with_the_runs_end() -> None:
    redis_server = Restartable()
    client = aioredis.Redis.from_url(redis_server.url)  # no retries: a lost connection fails
    try:
        publisher = EventPublisher(client, KEYS, log_cap=100, ttl=60)
        await publisher.publish(TextDelta(run_id="warm-up", text="."))
        run_id = uuid.uuid4().hex
        outbox = Outbox(publisher)
        redis_server.down()
        outbox.put([(run_id, TextDelta(run_id=run_id, text="while Redis was down"))])
        with pytest.raises(RedisConnectionError):
            await outbox.flush()
        redis_server.up()
        done = RunDone(run_id=run_id, message=ChatMessage(content="end", role="assistant"))
        await outbox.close([(run_id, done)])
        logged = [parse_event(raw) for raw in await client.lrange(KEYS.run_log(run_id), 0, -1)]
    finally:
        await client.aclose()
        redis_server.stop()
    assert [e.kind for e in logged] == ["text.delta", "run.done"]
    assert [e.seq for e in logged] == [1, 2]


async def test_a_publish_sent_again_after_a_lost_reply_is_not_published_twice(
    agents_redis_url: str,
) -> None:
    # redis-py sends a command again when its connection broke before the reply came,
    # though Redis may have run it: the same call (same token) must not publish twice.
    client = aioredis.Redis.from_url(agents_redis_url)
    try:
        publisher = EventPublisher(client, KEYS, log_cap=1000, ttl=60)
        run_id = uuid.uuid4().hex
        keys, args = publisher._keys_args([(run_id, TextDelta(run_id=run_id, text="once"))])
        first = await publisher._script(keys=keys, args=args)
        again = await publisher._script(keys=keys, args=args)  # what a resend would run
        assert first == again == 1
        later = await publisher.publish(TextDelta(run_id=run_id, text="next"))
        assert later == 2  # a new call is published as always
        log = [parse_event(raw) for raw in await client.lrange(KEYS.run_log(run_id), 0, -1)]
        assert [(e.seq, e.text) for e in log] == [(1, "once"), (2, "next")]  # type: ignore[union-attr]
    finally:
        await client.aclose()
