"""The single-agent run path against a real worker, real Redis and the scripted HTTP model."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from celery_agents import Agent, ChatMessage, RunHandle, Settings
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.events import RunDone, RunStarted, TextDelta, ToolCallEvent, ToolResultEvent
from celery_agents.facade.bridge import run_sync
from celery_agents.facade.client import get_client
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer, ToolCallSpec

pytestmark = pytest.mark.usefixtures("agents")


def scripted(name: str = "analyst", **kwargs: object) -> Agent:
    return Agent(name, "scripted:model", "You analyse.", **kwargs)  # type: ignore[arg-type]


async def test_run_returns_the_assistant_message(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Reply("The error rate is 2%."))
    agent = scripted()
    msg = await agent.run("analyze this")
    assert msg.content == "The error rate is 2%."
    assert (msg.role, msg.name, msg.model) == ("assistant", "analyst", "scripted:model")
    assert msg.conversation_id == agent.conversation_id
    assert msg.usage is not None and msg.usage.output_tokens > 0 and msg.usage.input_tokens > 0
    assert msg.response_time is not None and msg.response_time > 0
    assert msg.cost is None  # no price configured for scripted:model
    request = scripted_model.requests[-1].body
    assert request["messages"][0] == {"role": "system", "content": "You analyse."}
    assert request["messages"][-1] == {"role": "user", "content": "analyze this"}


async def test_cost_comes_from_the_manifest_price_table(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("priced answer", usage=(1000, 500)))
    msg = await Agent("p", "scripted:priced").run("x")
    assert msg.usage is not None and (msg.usage.input_tokens, msg.usage.output_tokens) == (
        1000,
        500,
    )
    assert msg.cost == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


def test_run_sync_works_in_plain_code(scripted_model: ScriptedModelServer) -> None:
    assert scripted().run_sync("hello sync").content == "hello sync"


async def test_run_sync_works_inside_a_running_loop(scripted_model: ScriptedModelServer) -> None:
    msg = scripted().run_sync("inside a loop")  # e.g. a notebook cell
    assert msg.content == "inside a loop"


async def test_run_iter_yields_one_message_per_prompt_and_a_str_is_one_prompt(
    scripted_model: ScriptedModelServer,
) -> None:
    agent = scripted()
    assert [m.content async for m in agent.run_iter("abc")] == ["abc"]
    assert [m.content async for m in agent.run_iter("p1", "p2", "p3")] == ["p1", "p2", "p3"]


async def test_run_stream_chunks_join_to_the_final_content(
    scripted_model: ScriptedModelServer,
) -> None:
    text = "Streaming answers arrive  word by word,\nthen the final message."
    scripted_model.script(Reply(text))
    async with scripted().run_stream("stream please") as stream:
        chunks = [chunk async for chunk in stream.stream()]
        final = await stream.get_message()
    assert len(chunks) > 3
    assert "".join(chunks) == final.content == text


async def test_run_stream_events_are_ordered_and_end_with_run_done(
    scripted_model: ScriptedModelServer,
) -> None:
    async with scripted().run_stream("one two three") as stream:
        events = [event async for event in stream.events()]
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunDone)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"


async def test_three_concurrent_runs_all_succeed(scripted_model: ScriptedModelServer) -> None:
    agent = scripted()
    prompts = [f"concurrent {i}" for i in range(3)]
    messages = await asyncio.gather(*(agent.run(p, store_history=False) for p in prompts))
    assert [m.content for m in messages] == prompts
    assert len({m.run_id for m in messages}) == 3


async def test_history_holds_two_messages_per_run_and_none_without_store_history(
    scripted_model: ScriptedModelServer,
) -> None:
    agent = scripted()
    await agent.run("first")
    assert [m.role for m in await agent.get_history()] == ["user", "assistant"]
    await agent.run("second")
    history = await agent.get_history()
    assert [m.content for m in history] == ["first", "first", "second", "second"]
    # the second call saw the first exchange
    assert [m["content"] for m in scripted_model.requests[-1].body["messages"][1:]] == [
        "first",
        "first",
        "second",
    ]

    fresh = scripted()
    await fresh.run("not kept", store_history=False)
    assert await fresh.get_history() == []


async def test_two_agents_can_share_a_conversation_by_id(
    scripted_model: ScriptedModelServer,
) -> None:
    first = scripted()
    await first.run("remember me")
    other = scripted("other", conversation_id=first.conversation_id)
    await other.run("and me")
    assert len(await first.get_history()) == 4


async def test_per_call_model_override(scripted_model: ScriptedModelServer) -> None:
    msg = await scripted().run("override", model="test:echo")
    assert msg.model == "test:echo"
    assert msg.content == "override"
    assert scripted_model.request_count == 0


async def test_tool_calls_run_on_the_worker_and_stream_their_events(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(
        Reply(
            tool_calls=(
                ToolCallSpec("add", {"a": 2, "b": 3}),
                ToolCallSpec("shout", {"text": "hi"}),
            )
        ),
        Reply("2 + 3 = 5 and HI"),
    )
    agent = scripted(tools=["add", "shout"])
    async with agent.run_stream("use tools") as stream:
        events = [e async for e in stream.events()]
    final = events[-1]
    assert isinstance(final, RunDone)
    assert final.message.content == "2 + 3 = 5 and HI"
    assert [(c.tool_name, c.result) for c in final.message.tool_calls] == [
        ("add", 5),
        ("shout", "HI"),
    ]
    assert [e.tool_name for e in events if isinstance(e, ToolCallEvent)] == ["add", "shout"]
    # The calls run at once: their results stream as each ends.
    assert sorted(map(str, (e.result for e in events if isinstance(e, ToolResultEvent)))) == [
        "5",
        "HI",
    ]
    tool_messages = [m for m in scripted_model.requests[-1].body["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["5", "HI"]
    offered = {t["function"]["name"] for t in scripted_model.requests[0].body["tools"]}
    assert offered == {"add", "shout"}


async def test_a_tool_error_goes_back_to_the_model(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Reply(tool_calls=(ToolCallSpec("broken", {}),)), Reply("recovered"))
    msg = await scripted(tools=["broken"]).run("try the broken tool")
    assert msg.content == "recovered"
    assert msg.tool_calls[0].error == "RuntimeError: the tool is broken"
    tool_message = scripted_model.requests[-1].body["messages"][-1]
    assert "RuntimeError: the tool is broken" in tool_message["content"]


async def test_submit_returns_a_handle_whose_result_and_status_are_readable(
    scripted_model: ScriptedModelServer,
) -> None:
    handle = await scripted().submit("queued work")
    msg = await handle.result(timeout=20)
    assert msg.content == "queued work"
    assert msg.run_id == handle.run_id
    assert await handle.status() == "succeeded"
    assert await RunHandle.attach("no-such-run").status() == "unknown"


async def test_a_late_attach_replays_every_event_once_in_order(
    scripted_model: ScriptedModelServer,
) -> None:
    handle = await scripted().submit("replay me please")
    await handle.result(timeout=20)
    events = [e async for e in RunHandle.attach(handle.run_id).events()]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], RunDone)
    tail = [e async for e in RunHandle.attach(handle.run_id).events(from_seq=3)]
    assert [e.seq for e in tail] == list(range(3, len(events) + 1))


async def test_run_handle_attaches_from_another_process(
    scripted_model: ScriptedModelServer, agents: Settings
) -> None:
    handle = await scripted().submit("from afar")
    script = (
        "import sys; from celery_agents import RunHandle, configure, Settings\n"
        f"configure(Settings(redis_url={agents.redis_url!r}))\n"
        f"print(RunHandle.attach({handle.run_id!r}).result_sync(timeout=20).model_dump_json())\n"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    msg = ChatMessage.model_validate_json(out.stdout.strip().splitlines()[-1])
    assert msg.content == "from afar"
    assert msg == await handle.result()


def test_chat_message_json_round_trips_exactly() -> None:
    msg = ChatMessage(
        content={"k": [1, 2]},
        name="a",
        metadata={"x": 1},
        associated_messages=[ChatMessage(content="inner", role="user")],
    )
    again = ChatMessage.model_validate_json(msg.model_dump_json())
    assert again == msg
    assert json.loads(again.model_dump_json()) == json.loads(msg.model_dump_json())


async def test_a_worker_without_task_events_runs_and_says_so_in_its_banner(
    private_worker: Callable[..., WorkerProcess],
) -> None:
    worker = private_worker(concurrency=2, extra_env={"CELERY_AGENTS_TASK_EVENTS": "false"})
    assert (await Agent("quiet", "test:echo").run("no events")).content == "no events"
    assert "task events: OFF" in worker.log_path.read_text(errors="replace")


def test_a_run_sync_interrupted_by_ctrl_c_stops_waiting(
    scripted_model: ScriptedModelServer,
) -> None:
    agent = Agent("a", "scripted:m")
    agent.run_sync("warm up", store_history=False)
    scripted_model.script(Reply("slow", latency=5))

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)  # Ctrl+C while run_sync waits
    try:
        with pytest.raises(KeyboardInterrupt):
            agent.run_sync("p", store_history=False, timeout=20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    async def watched() -> int:
        for _ in range(3):  # the cancelled wait's cleanup runs in the loop's next turns
            await asyncio.sleep(0)
        return sum(len(w) for w in get_client().hub._watches.values())

    assert run_sync(watched()) == 0  # before: the run stayed watched until it ended


def _run_in_child(results: Any) -> None:
    try:
        message = Agent("a", "test:echo").run_sync("child", store_history=False, timeout=20)
        results.put(f"ok {message.content}")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_a_forked_child_uses_the_facade_on_connections_of_its_own() -> None:
    assert Agent("a", "test:echo").run_sync("parent", store_history=False).content == "parent"
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    child = fork.Process(target=_run_in_child, args=(results,))
    child.start()
    try:
        # before: the child's calls ran on the parent's client, bound to a loop it lacks
        assert results.get(timeout=60) == "ok child"
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
