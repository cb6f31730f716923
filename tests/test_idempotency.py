"""Idempotency keys: the same key never pays for two model calls, across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from celery_agents import Agent, ChatMessage, Settings
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
