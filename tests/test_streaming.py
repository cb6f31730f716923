"""Streaming survives a dropped pub/sub connection: every event once, in order."""

from __future__ import annotations

import asyncio

import pytest
import redis

from celery_agents import Agent, Settings
from celery_agents.events import RunDone, TextDelta
from celery_agents.facade.client import CLIENT_NAME
from celery_agents.llm.base import ModelRequest
from celery_agents.llm.offline import FunctionModel, TestModel
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer


def kill_client_pubsub(client: redis.Redis) -> int:
    killed = 0
    for conn in client.client_list(_type="pubsub"):
        if conn["name"] == CLIENT_NAME:
            killed += client.client_kill_filter(_id=conn["id"])
    return killed


@pytest.mark.usefixtures("agents")
async def test_a_dropped_pubsub_connection_loses_no_event(
    scripted_model: ScriptedModelServer, agents: Settings
) -> None:
    words = [f"w{i} " for i in range(60)]
    scripted_model.script(Reply("".join(words), token_delay=0.01))
    agent = Agent("a", "scripted:model")
    killer = redis.Redis.from_url(agents.redis_url)
    events = []
    async with agent.run_stream("long answer") as stream:
        async for event in stream.events():
            events.append(event)
            if len(events) == 10:
                # Drop our pub/sub connection mid-stream, as a network blip would. (Only ours:
                # the worker's would make Celery redeliver its in-flight runs, issue 7.)
                assert await asyncio.to_thread(kill_client_pubsub, killer) == 1
    killer.close()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], RunDone)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == events[-1].message.content == "".join(words)


async def test_the_test_model_echoes_and_streams_word_by_word() -> None:
    request = ModelRequest(messages=[{"role": "user", "content": "one two  three"}])
    items = [item async for item in TestModel("echo").stream(request)]
    *deltas, final = items
    assert "".join(deltas) == final.text == "one two  three"  # type: ignore[union-attr]
    assert len(deltas) == 3


async def test_a_function_model_may_be_async_and_wait() -> None:
    released = asyncio.Event()

    async def answer(request: ModelRequest) -> str:
        await released.wait()  # a model that waits, without holding the loop
        return "late answer"

    request = ModelRequest(messages=[{"role": "user", "content": "x"}])
    pending = asyncio.ensure_future(_collect(FunctionModel(answer, ref="test:late"), request))
    await asyncio.sleep(0)
    assert not pending.done()
    released.set()
    *deltas, final = await asyncio.wait_for(pending, 5)
    assert "".join(deltas) == final.text == "late answer"  # type: ignore[union-attr]


async def _collect(model: FunctionModel, request: ModelRequest) -> list[object]:
    return [item async for item in model.stream(request)]
