"""The step journal on a live run (real worker, scripted model): every tool call can read its
idempotency key, and the journal is gone once the run ends. Replay after a worker's death is
in ``tests/faults/test_durable_runs.py``."""

from __future__ import annotations

import uuid
from pathlib import Path

import openai
import pytest
import redis.asyncio as aioredis
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from celery_agents import Agent, Settings
from celery_agents.keys import Keys
from celery_agents.llm.agent_loop import LoopResult, run_agent
from celery_agents.llm.journal import RunJournal
from celery_agents.messages import ToolCallInfo
from celery_agents.streaming.publisher import Fenced
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer, ToolCallSpec
from celery_agents.tools import REGISTRY
from celery_agents.workers.journal import RedisSteps, parse_journal


async def test_a_tool_reads_its_idempotency_key_and_the_journal_ends_with_the_run(
    scripted_model: ScriptedModelServer,
    tmp_path: Path,
    redis_client: aioredis.Redis,
    agents: Settings,
) -> None:
    ledger = tmp_path / "ledger"
    scripted_model.script(
        Reply(tool_calls=(ToolCallSpec("charge", {"ledger": str(ledger)}, id="call_7"),)),
        Reply("charged"),
        model="keyed",
    )
    message = await Agent("keyed", "scripted:keyed", tools=["charge"]).run("charge it")
    key = f"{message.run_id}:1.call_7"  # model turn 1, the call's id
    assert ledger.read_text().splitlines() == [key]
    assert message.tool_calls[0].result == f"charged {key}"
    assert message.content == "charged"
    assert not await redis_client.exists(Keys(agents.key_prefix).run_journal(message.run_id))


def test_outside_a_tool_call_there_is_no_idempotency_key() -> None:
    from celery_agents import idempotency_key

    assert idempotency_key() is None


class _Quiet:
    """The run's events go nowhere (what is published is the executor's business)."""

    async def text(self, delta: str) -> None: ...
    async def tool_call(self, call: ToolCallInfo) -> None: ...
    async def tool_result(self, call: ToolCallInfo) -> None: ...


async def _attempt(
    scripted: ScriptedModelServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    run_id: str,
    prompt: str,
) -> tuple[LoopResult, RunJournal]:
    """One attempt of the run on the agent core, journaled in Redis under a lease of its own."""
    owner = f"test/{uuid.uuid4().hex[:6]}"
    await redis_client.set(keys.run_lock(run_id), owner, ex=60)
    found = parse_journal(await redis_client.hgetall(keys.run_journal(run_id)))
    steps = RedisSteps(redis_client, keys, run_id, (keys.run_lock(run_id), owner), ttl=60)
    journal = RunJournal(run_id, steps, found=found)
    client = openai.AsyncOpenAI(base_url=scripted.url, api_key="test")
    model = OpenAIChatModel("replayed", provider=OpenAIProvider(openai_client=client))
    try:
        result = await run_agent(
            model, prompt, tools=[REGISTRY.get("add")], emit=_Quiet(), journal=journal
        )
    finally:
        await client.close()
    return result, journal


async def test_a_later_attempt_replays_the_journal_and_a_changed_step_ends_the_replay(
    scripted_model: ScriptedModelServer, redis_client: aioredis.Redis
) -> None:
    import tests.support.tools  # noqa: F401  (registers ``add``)

    keys, run_id = Keys(f"journal-{uuid.uuid4().hex[:8]}"), uuid.uuid4().hex
    scripted_model.script(
        Reply(tool_calls=(ToolCallSpec("add", {"a": 2, "b": 3}, id="call_1"),)),
        Reply("five"),
        Reply("a new answer"),
        model="replayed",
    )
    first, _ = await _attempt(scripted_model, redis_client, keys, run_id, "add 2 and 3")
    assert first.text == "five" and scripted_model.request_count == 2
    assert sorted(await redis_client.hkeys(keys.run_journal(run_id))) == [b"1", b"1.call_1", b"2"]

    again, journal = await _attempt(scripted_model, redis_client, keys, run_id, "add 2 and 3")
    assert scripted_model.request_count == 2  # nothing asked of the model again
    assert (again.text, journal.replayed, journal.diverged) == ("five", 3, False)
    assert [(c.tool_name, c.result) for c in again.tool_calls] == [("add", 5)]
    assert again.usage == first.usage  # the same calls, counted once each

    # The prompt changed: its first step's fingerprint differs, so it and the rest run live.
    changed, journal = await _attempt(scripted_model, redis_client, keys, run_id, "add 2 and 4")
    assert (changed.text, journal.replayed, journal.diverged) == ("a new answer", 0, True)
    assert scripted_model.request_count == 3


async def test_an_execution_that_lost_its_lease_journals_nothing(
    redis_client: aioredis.Redis,
) -> None:
    keys, run_id = Keys(f"journal-{uuid.uuid4().hex[:8]}"), uuid.uuid4().hex
    stalled = RedisSteps(redis_client, keys, run_id, (keys.run_lock(run_id), "a/1"), ttl=60)
    await redis_client.set(keys.run_lock(run_id), "b/2", ex=60)  # another execution's now
    with pytest.raises(Fenced):
        await stalled.write("1", {"fp": "x", "response": {}})
    assert not await redis_client.exists(keys.run_journal(run_id))
