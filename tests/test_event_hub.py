"""``EventHub`` against a Redis of its own: it outlives Redis refusing it, cleans up after a
watch that never finished starting, and tells waiting readers when it closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from celery_agents import ClientClosed
from celery_agents.embedded.redis_server import RedisServer, start_redis_server
from celery_agents.events import TextDelta
from celery_agents.keys import Keys
from celery_agents.streaming.hub import EventHub
from celery_agents.streaming.publisher import EventPublisher

KEYS = Keys("hubtest")


@pytest.fixture
def server() -> AsyncIterator[RedisServer]:
    started = start_redis_server()
    yield started
    started.stop()


@pytest.fixture
async def hub(server: RedisServer) -> AsyncIterator[EventHub]:
    client = aioredis.Redis.from_url(server.url)
    made = EventHub(client, KEYS, poll_interval=3600)  # pub/sub alone: no poll to fall back on
    yield made
    await made.close()
    await client.aclose()


async def publish(url: str, run_id: str, text: str) -> None:
    async with aioredis.Redis.from_url(url) as client:
        publisher = EventPublisher(client, KEYS, log_cap=100, ttl=60)
        await publisher.publish(TextDelta(run_id=run_id, seq=0, text=text))


async def test_the_hub_reconnects_after_redis_refused_it_for_a_while(
    server: RedisServer, hub: EventHub
) -> None:
    watch = await hub.watch("r1")
    async with aioredis.Redis.from_url(server.url) as admin:
        # Refuse every new connection (AUTH required), then drop the hub's: its first
        # reconnections fail. Before, one failed reconnection ended the hub's reader for good.
        await admin.config_set("requirepass", "not-yours")
        await admin.execute_command("AUTH", "not-yours")
        await admin.client_kill_filter(_type="pubsub")
        await asyncio.sleep(0.5)  # the outage: several reconnections are refused
        await admin.config_set("requirepass", "")
    later = await asyncio.wait_for(hub.watch("r2"), 10)  # before: waited for good
    for run_id, watching in (("r1", watch), ("r2", later)):
        await publish(server.url, run_id, f"{run_id} after the outage")
        event = await asyncio.wait_for(watching.next_event(), 10)
        assert isinstance(event, TextDelta) and event.text == f"{run_id} after the outage"


async def test_a_watch_given_up_while_subscribing_leaves_nothing_behind(
    server: RedisServer, hub: EventHub
) -> None:
    await hub.start()
    async with aioredis.Redis.from_url(server.url) as admin:
        await admin.execute_command("CLIENT", "PAUSE", "1000")  # no SUBSCRIBE answered
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(hub.watch("r2"), 0.2)
    assert not hub._watches and not hub._confirm


async def test_closing_the_hub_tells_whoever_waits_on_a_watch(hub: EventHub) -> None:
    watch = await hub.watch("r3")
    waiting = asyncio.ensure_future(watch.next_event())
    await asyncio.sleep(0)
    await hub.close()
    with pytest.raises(ClientClosed, match="stopped following run r3"):
        await asyncio.wait_for(waiting, 5)
    with contextlib.suppress(Exception):
        await watch.close()


async def test_a_stream_that_starts_over_is_followed_from_its_new_start_and_flagged(
    server: RedisServer, hub: EventHub
) -> None:
    watch = await hub.watch("r3")
    for word in ("one", "two", "three"):
        await publish(server.url, "r3", word)
    seen = [await asyncio.wait_for(watch.next_event(), 10) for _ in range(3)]
    assert [e.seq for e in seen] == [1, 2, 3] and watch.gap is None
    first_epoch = seen[0].epoch
    async with aioredis.Redis.from_url(server.url) as admin:
        await admin.flushall()  # as a Redis restarted empty: the counter starts over
    for word in ("four", "five"):
        await publish(server.url, "r3", word)
    later = [await asyncio.wait_for(watch.next_event(), 10) for _ in range(2)]
    assert [(e.seq, e.text) for e in later] == [(1, "four"), (2, "five")]  # type: ignore[attr-defined]
    assert later[0].epoch not in (None, first_epoch)
    assert watch.gap is not None and "started over" in watch.gap
    watch.offer(seen[0].model_copy(update={"seq": 3}))  # a late event of the old epoch
    await publish(server.url, "r3", "six")
    after = await asyncio.wait_for(watch.next_event(), 10)  # the old one was dropped
    assert (after.seq, after.text) == (3, "six")  # type: ignore[attr-defined]
