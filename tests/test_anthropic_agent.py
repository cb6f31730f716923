"""``anthropic:`` models end to end: a real worker runs them through pydantic-ai's
``AnthropicModel`` against the scripted server's Messages API over real HTTP: a plain run, a
streamed one, a tool round trip, a typed job answered through the ``final_result`` tool, and
the key staying on the worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest

from celery_agents import Agent, ConfigError, Job, ModelError
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.events import RunDone, TextDelta, ToolCallEvent, ToolResultEvent
from celery_agents.facade.client import get_client
from celery_agents.testing.scripted_server import Fail, Reply, ScriptedModelServer, ToolCallSpec
from tests.support.events import FlowerFeed
from tests.support.models import Finding
from tests.test_hostile_input import log_of, redis_contents

pytestmark = pytest.mark.usefixtures("agents")

KEY = f"sk-ant-celery-agents-{uuid.uuid4().hex}"
MODEL = "anthropic:claude-sonnet-4-5"


@pytest.fixture(scope="module")
def _claude_server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(api_key=KEY) as server:  # 401 unless the request has the key
        yield server


@pytest.fixture
def claude(_claude_server: ScriptedModelServer) -> ScriptedModelServer:
    _claude_server.reset()
    return _claude_server


@pytest.fixture
def worker(
    private_worker: Callable[..., WorkerProcess], claude: ScriptedModelServer
) -> WorkerProcess:
    return private_worker(
        concurrency=4,
        extra_env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": claude.anthropic_url},
    )


def messages_requests(server: ScriptedModelServer) -> list[dict[str, object]]:
    return [r.body for r in server.requests if r.path == "/v1/messages"]


async def test_a_plain_run_goes_to_the_messages_api_with_the_system_prompt(
    worker: WorkerProcess, claude: ScriptedModelServer
) -> None:
    claude.script(Reply("bonjour"))
    agent = Agent("claude", MODEL, system_prompt="Answer in French.")
    msg = await agent.run("hello", timeout=30)
    assert msg.content == "bonjour"
    assert msg.usage is not None and msg.usage.output_tokens > 0
    (request,) = [r for r in claude.requests if r.path == "/v1/messages"]
    assert request.body["model"] == "claude-sonnet-4-5"
    assert "Answer in French." in json.dumps(request.body["system"])
    assert request.body["messages"][-1]["role"] == "user"
    assert request.stream  # every run streams, so its deltas can be relayed


async def test_a_streamed_run_relays_its_text_piece_by_piece(
    worker: WorkerProcess, claude: ScriptedModelServer
) -> None:
    claude.script(Reply("one two three four"))
    async with Agent("claude", MODEL).run_stream("count", timeout=30) as stream:
        events = [e async for e in stream.events()]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == "one two three four"
    assert isinstance(events[-1], RunDone)


async def test_a_tool_call_runs_on_the_worker_and_its_result_goes_back(
    worker: WorkerProcess, claude: ScriptedModelServer
) -> None:
    claude.script(Reply(tool_calls=(ToolCallSpec("add", {"a": 2, "b": 3}),)), Reply("5"))
    async with Agent("claude", MODEL, tools=["add"]).run_stream("add", timeout=30) as stream:
        events = [e async for e in stream.events()]
    done = events[-1]
    assert isinstance(done, RunDone) and done.message.content == "5"
    assert [e.tool_name for e in events if isinstance(e, ToolCallEvent)] == ["add"]
    assert [e.result for e in events if isinstance(e, ToolResultEvent)] == [5]
    first, second = messages_requests(claude)
    assert [t["name"] for t in first["tools"]] == ["add"]  # type: ignore[index]
    results = [
        block
        for message in second["messages"]  # type: ignore[attr-defined]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert len(results) == 1 and "5" in json.dumps(results[0]["content"])


async def test_a_typed_job_is_answered_through_the_final_result_tool(
    worker: WorkerProcess, claude: ScriptedModelServer
) -> None:
    claude.script(
        Reply(tool_calls=(ToolCallSpec("final_result", {"severity": "high", "summary": "down"}),))
    )
    job = Job(name="triage", prompt="Triage: {incident}", required_return_type=Finding)
    msg = await Agent("claude", MODEL).run_job(job, values={"incident": "API 500s"}, timeout=30)
    assert msg.content == Finding(severity="high", summary="down")
    (body,) = messages_requests(claude)
    assert "final_result" in [t["name"] for t in body["tools"]]  # type: ignore[index]


async def test_the_key_stays_on_the_worker_even_when_the_provider_echoes_it(
    private_worker: Callable[..., WorkerProcess], claude: ScriptedModelServer
) -> None:
    worker = private_worker(
        concurrency=2,
        extra_env={
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": claude.anthropic_url,
            "CELERY_AGENTS_TASK_EVENTS": "true",
        },
    )
    claude.script(Reply("fine"), Fail(401, message=f"invalid x-api-key: {KEY}"))
    with FlowerFeed(get_client().app) as flower:
        handle = await Agent("claude", MODEL).submit("hello", timeout=30)
        assert (await handle.result(timeout=30)).content == "fine"
        assert len(messages_requests(claude)) == 1  # with the key: this server wants it
        with pytest.raises(ModelError, match="HTTP 401") as info:
            await Agent("claude", MODEL).run("hello again", timeout=30)
        flower.wait_for(lambda e: e["type"] == "task-failed")
    seen = {
        "the error": json.dumps(info.value.to_json()),
        "Redis": redis_contents(get_client().settings.redis_url),
        "the worker's log": log_of(worker),
        "Flower's event feed": flower.text(),
    }
    assert (
        handle.run_id in seen["the worker's log"] and handle.run_id in seen["Flower's event feed"]
    )
    assert "<redacted>" in seen["the error"]
    for place, text in seen.items():
        assert KEY not in text, f"the Anthropic key leaked into {place}"


async def test_a_worker_without_the_key_says_which_variable_is_missing(
    private_worker: Callable[..., WorkerProcess], claude: ScriptedModelServer
) -> None:
    env = {"ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": claude.anthropic_url}
    private_worker(concurrency=1, extra_env=env)
    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY in the workers' environment"):
        await Agent("claude", MODEL).run("hello", timeout=30)
    assert messages_requests(claude) == []
