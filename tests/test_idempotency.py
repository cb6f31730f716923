"""Idempotency keys: the same key never pays for two model calls, across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from celery_agents import Agent, ChatMessage, Settings, UserError
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer

pytestmark = pytest.mark.usefixtures("agents")


async def test_the_same_key_from_two_processes_at_once_makes_one_model_call(
    scripted_model: ScriptedModelServer, agents: Settings
) -> None:
    scripted_model.script(Reply("the one report", latency=0.8))
    key = f"report-{uuid.uuid4().hex[:6]}"
    script = (
        "from celery_agents import Agent, Settings, configure\n"
        f"configure(Settings(redis_url={agents.redis_url!r}, manifest={str(agents.manifest)!r}, "
        f"queue={agents.queue!r}))\n"
        f"msg = Agent('reporter', 'scripted:m').run_sync('write the report', "
        f"idempotency_key={key!r})\n"
        "print(msg.model_dump_json())\n"
    )
    other = asyncio.create_task(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )
    mine = await Agent("reporter", "scripted:m").run("write the report", idempotency_key=key)
    result = await other
    assert result.returncode == 0, result.stderr
    theirs = ChatMessage.model_validate_json(result.stdout.strip().splitlines()[-1])
    assert mine == theirs and mine.content == "the one report"
    assert scripted_model.request_count == 1


async def test_a_key_used_again_later_returns_the_first_result(
    scripted_model: ScriptedModelServer,
) -> None:
    key = f"daily-{uuid.uuid4().hex[:6]}"
    agent = Agent("reporter", "scripted:m")
    first = await agent.run("one", idempotency_key=key)
    again = await agent.run("one", idempotency_key=key)
    handle = await agent.submit("one", idempotency_key=key)
    assert again == first == await handle.result()
    assert scripted_model.request_count == 1
    other = await agent.run("one", idempotency_key=key + "-b")
    assert other.run_id != first.run_id and scripted_model.request_count == 2


async def test_a_team_run_with_a_key_returns_the_same_run_for_the_same_key(
    scripted_model: ScriptedModelServer,
) -> None:
    key = f"team-{uuid.uuid4().hex[:6]}"
    team = Agent("left", "scripted:m") & Agent("right", "scripted:m")
    first = await team.run("review", idempotency_key=key)
    again = await team.run("review", idempotency_key=key)
    handle = await team.submit("review", idempotency_key=key)
    streamed = [m async for m in team.run_iter("review", idempotency_key=key)]
    assert again == first == await handle.result() and handle.run_id == first.run_id
    # run_iter yields the members as they finish, in either order
    assert {m.run_id for m in streamed} == {m.run_id for m in first.associated_messages}
    assert len(streamed) == 2 and scripted_model.request_count == 2  # one call per member, once


async def test_a_teamrun_stream_with_a_key_follows_the_first_run(
    scripted_model: ScriptedModelServer,
) -> None:
    key = f"chain-{uuid.uuid4().hex[:6]}"
    chain = Agent("first", "scripted:m") | Agent("second", "test:echo")
    handle = await chain.submit("draft", idempotency_key=key)
    done = await handle.result()
    async with chain.run_stream("draft", idempotency_key=key) as stream:
        again = await stream.get_message()
    assert stream.run_id == handle.run_id and again == done
    assert scripted_model.request_count == 1


async def test_one_key_for_several_agent_runs_is_refused() -> None:
    with pytest.raises(UserError, match="an idempotency_key names one run"):
        async for _ in Agent("a", "test:echo").run_iter("p1", "p2", idempotency_key="k"):
            pass
