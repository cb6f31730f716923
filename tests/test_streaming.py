"""Streaming survives a dropped pub/sub connection: every event once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from celery_agents import Agent, Settings
from celery_agents.events import RunDone, TextDelta
from celery_agents.facade.client import CLIENT_NAME
from celery_agents.llm.agent_loop import run_agent
from celery_agents.llm.offline import offline_model, register_test_model
from celery_agents.testing.emitter import Collected
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
    emit = Collected()
    result = await run_agent(offline_model("echo"), "one two  three", emit=emit)
    assert "".join(emit.texts) == result.text == "one two  three"
    assert len(emit.texts) == 3


async def test_a_registered_pydantic_ai_model_may_be_async_and_wait() -> None:
    released = asyncio.Event()

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        await released.wait()  # a model that waits, without holding the loop
        yield "late answer"

    register_test_model("late", FunctionModel(stream_function=answer))
    emit = Collected()
    pending = asyncio.ensure_future(run_agent(offline_model("late"), "x", emit=emit))
    await asyncio.sleep(0)
    assert not pending.done()
    released.set()
    result = await asyncio.wait_for(pending, 5)
    assert "".join(emit.texts) == result.text == "late answer"
