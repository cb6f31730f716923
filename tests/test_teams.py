"""Teams (chords) and TeamRuns (chains) against real workers, real Redis and the scripted model."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest

from celery_agents import (
    Agent,
    AgentResponse,
    AgentsManifest,
    ChatMessage,
    RunHandle,
    RunTimeout,
    Settings,
    StageError,
    Talk,
    Team,
    TeamRun,
    TeamRunError,
    UserError,
    team_from_manifest,
)
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.events import MemberFailed, MessageEvent, RunDone, TalkEvent, TextDelta
from celery_agents.testing.scripted_server import Hang, Reply, ScriptedModelServer

pytestmark = pytest.mark.usefixtures("agents")


def echo(name: str) -> Agent:
    return Agent(name, "test:echo")


def failing(name: str) -> Agent:
    return Agent(name, "test:fail")


async def test_operators_build_new_teams_and_keep_nesting() -> None:
    a, b, c = echo("a"), echo("b"), echo("c")
    team = a & b & c
    assert isinstance(team, Team) and [m.name for m in team.members] == ["a", "b", "c"]
    chain = a | b
    assert isinstance(chain, TeamRun) and chain.name == "a|b"
    mixed = chain & c
    assert isinstance(mixed, Team) and mixed.members == [chain, c]  # not flattened
    assert [m.name for m in chain.members] == ["a", "b"]  # operand untouched
    named = Team([a, b], name="pair")
    assert (named & c).members == [named, c]


async def test_team_run_returns_member_outputs_in_member_order(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("slow analysis", latency=0.3), model="analyst")
    analyst = Agent("analyst", "scripted:analyst")
    team = analyst & echo("critic") & echo("summarizer")
    msg = await team.run("analyze this")
    assert msg.content == ["slow analysis", "analyze this", "analyze this"]
    assert [m.name for m in msg.associated_messages] == ["analyst", "critic", "summarizer"]
    assert msg.metadata["errors"] == {}
    assert msg.name == "analyst&critic&summarizer"
    member_usage = [m.usage for m in msg.associated_messages]
    assert msg.usage is not None and all(u is not None for u in member_usage)
    assert msg.usage.output_tokens == sum(u.output_tokens for u in member_usage if u)


async def test_team_run_iter_yields_each_member_as_it_finishes(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("late", latency=0.5), model="slow")
    team = Team([Agent("slow", "scripted:slow"), echo("fast")], name="race")
    names = [m.name async for m in team.run_iter("go")]
    assert names == ["fast", "slow"]


async def test_team_run_stream_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="does not stream.*run_iter"):
        (echo("a") & echo("b")).run_stream("x")


async def test_a_failing_member_is_recorded_and_the_others_succeed() -> None:
    team = Team([echo("ok1"), failing("bad"), echo("ok2")], name="three")
    msg = await team.run("x")
    assert msg.content == ["x", "x"]
    assert list(msg.metadata["errors"]) == ["bad"]
    assert "test:fail always fails" in msg.metadata["errors"]["bad"]
    events = [e async for e in RunHandle.attach(msg.run_id or "").events()]
    failed = [e for e in events if isinstance(e, MemberFailed)]
    assert [(e.member, e.position) for e in failed] == [("bad", [1])]
    assert isinstance(events[-1], RunDone)  # the parent ends after every member
    assert sum(isinstance(e, MessageEvent) for e in events) == 2


async def test_a_team_whose_members_all_fail_raises_team_run_error() -> None:
    with pytest.raises(TeamRunError, match=r"every member of team 'f1&f2' failed: f1: .*; f2: "):
        await (failing("f1") & failing("f2")).run("x")


async def test_team_run_forwards_each_stage_and_returns_the_last_message() -> None:
    chain = TeamRun([echo("researcher"), echo("writer"), echo("editor")])
    msg = chain.run_sync("analyze this")
    assert (msg.name, msg.content) == ("editor", "analyze this")
    assert msg.forwarded_from == ["researcher", "writer"]
    assert msg.usage is not None and msg.usage.output_tokens == 3 * 2  # rolled up over stages


async def test_team_run_iter_yields_stages_in_order(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Reply("first draft"), model="first")
    scripted_model.script(Reply("second draft"), model="second")
    chain = Agent("first", "scripted:first") | Agent("second", "scripted:second") | echo("third")
    messages = [m async for m in chain.run_iter("x")]
    assert [(m.name, m.content) for m in messages] == [
        ("first", "first draft"),
        ("second", "second draft"),
        ("third", "second draft"),
    ]
    second_request = scripted_model.requests[-1].body["messages"]
    assert second_request[-1] == {"role": "user", "content": "first draft"}


async def test_execute_iter_yields_responses_and_talks() -> None:
    chain = echo("researcher") | echo("writer") | echo("editor")
    items = [item async for item in chain.execute_iter("go")]
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["AgentResponse", "Talk", "AgentResponse", "Talk", "AgentResponse"]
    talks = [i for i in items if isinstance(i, Talk)]
    assert [(t.source.name, t.targets[0].name) for t in talks] == [
        ("researcher", "writer"),
        ("writer", "editor"),
    ]
    responses = [i for i in items if isinstance(i, AgentResponse)]
    assert [(r.agent_name, r.message.content) for r in responses] == [
        ("researcher", "go"),
        ("writer", "go"),
        ("editor", "go"),
    ]
    match items[1]:
        case Talk():
            assert items[1].message == responses[0].message


async def test_a_failing_middle_stage_stops_the_chain_after_yielding_what_succeeded() -> None:
    chain = echo("one") | failing("two") | echo("three")
    items: list[AgentResponse | Talk] = []

    async def collect() -> None:
        async for item in chain.execute_iter("x"):
            items.append(item)

    expected = re.escape("stage 'two' of team run 'one|two|three' failed: test:fail always fails")
    with pytest.raises(StageError, match=expected) as info:
        await collect()
    assert [type(i).__name__ for i in items] == ["AgentResponse", "Talk"]
    assert info.value.details["stage"] == "two"
    with pytest.raises(StageError, match="stage 'two'"):
        await chain.run("x")


async def test_run_stream_of_a_team_run_tags_every_delta_with_its_agent() -> None:
    chain = echo("a") | echo("b")
    async with chain.run_stream("three word prompt") as stream:
        chunks = [chunk async for chunk in stream.stream()]
        final = await stream.get_message()
    assert [(str(c), c.agent) for c in chunks] == [
        ("three ", "a"),
        ("word ", "a"),
        ("prompt", "a"),
        ("three ", "b"),
        ("word ", "b"),
        ("prompt", "b"),
    ]
    assert final.name == "b"


async def test_nested_teams_three_deep_run_as_one_tree() -> None:
    inner = echo("x") | (echo("y") & echo("z"))  # depth 3: chain > team > agent
    tree = (inner & echo("w")) | echo("final")
    msg = await tree.run("deep")
    assert msg.name == "final" and msg.forwarded_from == [f"{inner.name}&w"]
    first_stage = msg.content  # the Team's two outputs, rendered as the next prompt
    assert "x|y&z:" in first_stage and "w:\ndeep" in first_stage
    events = [e async for e in RunHandle.attach(msg.run_id or "").events()]
    assert events  # the last stage's own stream is complete too
    team_msg = await (inner & echo("w")).run("deep")
    assert team_msg.content[0] == ["deep", "deep"]  # the chain's last stage: the y&z team


async def test_the_root_stream_sees_the_whole_tree_and_ends_last() -> None:
    tree = (echo("a") & echo("b")) | echo("c")
    async with tree.run_stream("hello") as stream:
        events = [e async for e in stream.events()]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], RunDone) and events[-1].member is None
    positions = {tuple(e.position or ()) for e in events if isinstance(e, TextDelta)}
    assert positions == {(0, 0), (0, 1), (1,)}
    talks = [e for e in events if isinstance(e, TalkEvent) and e.member is None]
    assert [(t.source.name, t.targets[0].name) for t in talks] == [("a&b", "c")]


async def test_shared_prompt_reaches_every_member_on_every_path(
    scripted_model: ScriptedModelServer,
) -> None:
    team = Team(
        [Agent("m1", "scripted:m"), Agent("m2", "scripted:m")], name="t", shared_prompt="Be brief."
    )
    await team.run("question")
    [m async for m in team.run_iter("question")]
    chain = TeamRun(
        [Agent("s1", "scripted:m"), Agent("s2", "scripted:m")], shared_prompt="Be brief."
    )
    async with chain.run_stream("question") as stream:
        await stream.get_message()
    prompts = [r.body["messages"][-1]["content"] for r in scripted_model.requests]
    assert len(prompts) == 6
    assert all(p.startswith("Be brief.\n\n") for p in prompts)


async def test_store_history_applies_to_each_members_own_conversation() -> None:
    a, b = echo("a"), echo("b")
    await (a & b).run("kept")
    assert len(await a.get_history()) == 2 and len(await b.get_history()) == 2
    await (a | b).run("not kept", store_history=False)
    assert len(await a.get_history()) == 2 and len(await b.get_history()) == 2


async def test_cost_rolls_up_over_the_team() -> None:
    team = Agent("p1", "scripted:priced") & Agent("p2", "scripted:priced")
    msg = await team.run("x")
    costs = [m.cost for m in msg.associated_messages]
    assert all(c is not None and c > 0 for c in costs)
    assert msg.cost == pytest.approx(sum(c for c in costs if c is not None))


async def test_teams_from_the_manifest(agents: Settings) -> None:
    manifest = AgentsManifest.from_yaml(agents.manifest or "")
    pipeline = team_from_manifest(manifest, "pipeline")
    assert isinstance(pipeline, TeamRun)
    reviewers = pipeline.members[0]
    assert isinstance(reviewers, Team) and reviewers.shared_prompt == "Be brief."
    assert [m.name for m in reviewers.members] == ["analyst", "critic"]
    msg = await pipeline.run("review this", model="test:echo")
    assert msg.name == "writer" and msg.forwarded_from == ["reviewers"]


async def test_a_team_of_ten_runs_in_parallel(scripted_model: ScriptedModelServer) -> None:
    scripted_model.latency = 0.3
    team = Team([Agent(f"m{i}", "scripted:m") for i in range(10)])
    started = time.monotonic()
    msg = await team.run("x", store_history=False)
    elapsed = time.monotonic() - started
    assert len(msg.content) == 10
    assert elapsed < 5 * 0.3, f"a Team of 10 took {elapsed:.2f}s (sequential would be 3s)"


async def test_teams_run_across_a_worker_restart(
    private_worker: Callable[[], WorkerProcess],
) -> None:
    worker = private_worker()
    team = echo("a") & (echo("b") | echo("c"))
    assert (await team.run("before")).content == ["before", "before"]
    worker.stop()
    private_worker()
    assert (await team.run("after")).content == ["after", "after"]


async def test_a_member_whose_worker_dies_does_not_leave_the_team_waiting_forever(
    scripted_model: ScriptedModelServer,
    private_worker: Callable[[], WorkerProcess],
) -> None:
    scripted_model.script(Hang(60), model="stuck")
    worker = private_worker()
    team = Team([echo("quick"), Agent("stuck", "scripted:stuck")], name="t")
    run = asyncio.create_task(team.run("x", timeout=2))
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20)  # the member is in flight
    worker.kill()
    started = time.monotonic()
    with pytest.raises(
        RunTimeout, match=r"still running: (quick, )?stuck"
    ):  # quick may not be done
        await run
    assert time.monotonic() - started < 10


def test_chat_messages_of_teams_round_trip() -> None:
    inner = ChatMessage(content="x", name="a")
    msg = ChatMessage(
        content=["x"], name="t", associated_messages=[inner], metadata={"errors": {"b": "boom"}}
    )
    assert ChatMessage.model_validate_json(msg.model_dump_json()) == msg


async def test_a_named_teamrun_inside_a_teamrun_hands_on_as_itself() -> None:
    # Its last stage's end used to queue the next step with that stage's own record.
    inner = TeamRun([Agent("a", "test:echo"), Agent("b", "test:echo")], name="x")
    items = [i async for i in (inner | Agent("c", "test:echo")).execute_iter("go")]
    talks = [(i.source.name, i.targets[0].name) for i in items if isinstance(i, Talk)]
    assert [i.agent_name for i in items if isinstance(i, AgentResponse)] == ["x", "c"]
    assert talks == [("x", "c")]
    failing = TeamRun([Agent("a", "test:echo"), Agent("b", "test:fail")], name="x")
    with pytest.raises(StageError) as raised:
        await (failing | Agent("c", "test:echo")).run("go")
    assert raised.value.details["stage"] == "x"
    with pytest.raises(StageError) as raised:
        await (Agent("a", "test:echo") | failing).run("go")
    assert raised.value.details["stage"] == "x"


async def test_a_teamruns_stages_share_its_timeout(scripted_model: ScriptedModelServer) -> None:
    # Each stage took 1.2 s of a 2 s TeamRun: the second runs out of the TeamRun's time, the
    # third never starts. Before, every stage had the whole 2 s: the chain went on past its
    # caller's wait, calling models for nobody.
    scripted_model.script(*[Reply("slow", latency=1.2)] * 3, model="stage")
    stages = [Agent(f"s{i}", "scripted:stage") for i in range(1, 4)]
    with pytest.raises(StageError, match="s2") as raised:
        await TeamRun(stages).run("go", timeout=2, store_history=False)
    assert "timed out" in str(raised.value)
    assert len([r for r in scripted_model.requests if r.model == "stage"]) == 2


async def test_a_team_given_a_conversation_continues_it_in_every_member() -> None:
    a, b = Agent("ca", "test:echo"), Agent("cb", "test:echo")
    conversation = f"shared-{time.monotonic_ns()}"
    await (a & b).run("in parallel", conversation_id=conversation)
    await (a | b).run("in order", conversation_id=conversation)
    history = await a.get_history(conversation)
    assert len(history) == 8  # a user and an assistant message per member run
    assert [m.content for m in history if m.role == "user"].count("in parallel") == 2
    assert await a.get_history() == [] and await b.get_history() == []
