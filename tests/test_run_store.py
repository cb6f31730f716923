"""The run store: every run that ends lands in the database, through Redis, on real workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

import celery_agents
from celery_agents import Agent, ModelError, RunHandle, Settings, Team
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.facade.bridge import on_io
from celery_agents.facade.client import configure, get_client
from celery_agents.testing.scripted_server import Fail, Reply, ScriptedModelServer, ToolCallSpec
from tests.conftest import Stack
from tests.support.store import all_recorded, wait_stored

pytestmark = pytest.mark.usefixtures("agents")


def scripted(name: str = "analyst", **kwargs: object) -> Agent:
    return Agent(name, "scripted:priced", "You analyse.", **kwargs)  # type: ignore[arg-type]


async def test_an_agent_run_is_recorded_with_its_usage_cost_prompt_and_answer(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(
        Reply(tool_calls=[ToolCallSpec("add", {"a": 2, "b": 3})], usage=(100, 10)),
        Reply("The sum is 5.", usage=(120, 20)),
    )
    agent = scripted(tools=["add"])
    before = time.time()
    msg = await agent.run("add 2 and 3", tenant="other")
    stored = await wait_stored(msg.run_id or "")
    assert (stored.kind, stored.name, stored.model, stored.tenant) == (
        "agent",
        "analyst",
        "scripted:priced",
        "other",
    )
    assert (stored.state, stored.attempt, stored.parent_id) == ("succeeded", 1, None)
    assert stored.conversation_id == agent.conversation_id
    assert (stored.input_tokens, stored.output_tokens, stored.requests) == (220, 30, 2)
    assert stored.cost == pytest.approx(msg.cost)
    assert stored.prompt == "add 2 and 3"
    assert stored.message is not None and stored.message.text == "The sum is 5."
    assert [c.tool_name for c in stored.message.tool_calls] == ["add"]
    assert stored.worker and stored.error_type is None
    assert stored.queued_at is not None and stored.started_at is not None
    assert before - 1 <= stored.queued_at.timestamp() <= stored.started_at.timestamp()
    assert stored.started_at <= stored.ended_at <= dt.datetime.now(dt.UTC)


async def test_a_failed_run_is_recorded_with_its_error(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Fail(400, message="no such model"))
    handle = await scripted().submit("this fails")
    with pytest.raises(ModelError):
        await handle.result()
    stored = await wait_stored(handle.run_id)
    assert (stored.state, stored.error_type) == ("failed", "ModelError")
    assert stored.error_message and "no such model" in stored.error_message
    assert stored.message is None and stored.prompt == "this fails"


async def test_a_team_and_its_members_are_recorded_as_a_tree() -> None:
    team = Team([Agent("a1", "test:echo"), Agent("a2", "test:echo")], name="pair")
    handle = await (team | Agent("closer", "test:echo")).submit("review this")
    msg = await handle.result()
    root = await wait_stored(handle.run_id)
    assert (root.kind, root.state) == ("teamrun", "succeeded")
    assert root.prompt == "review this"
    assert root.queued_at is not None and root.started_at is not None
    assert root.queued_at <= root.started_at <= root.ended_at
    assert root.message is not None and root.message.text == msg.text
    stages = await celery_agents.runs(parent=root.run_id)
    kinds = sorted((s.kind, s.name) for s in stages)
    assert kinds == [("agent", "closer"), ("team", "pair")]
    pair = next(s for s in stages if s.kind == "team")
    members = await all_recorded(pair.run_id, 2)
    assert sorted(m.name for m in members) == ["a1", "a2"]
    assert all(m.state == "succeeded" and m.kind == "agent" for m in members)
    closer = next(s for s in stages if s.kind == "agent")
    total = sum(m.input_tokens + m.output_tokens for m in [*members, closer])
    assert root.input_tokens + root.output_tokens == total > 0
    assert pair.input_tokens + pair.output_tokens == sum(
        m.input_tokens + m.output_tokens for m in members
    )


async def test_runs_filter_and_usage_groups_by_tenant_agent_model_and_day() -> None:
    u1, u2 = (f"{n}-{time.time_ns()}" for n in ("u1", "u2"))
    ids = []
    for name in (u1, u1, u2):
        ids.append((await Agent(name, "test:echo").run("count me", tenant="other")).run_id)
    for run_id in ids:
        await wait_stored(run_id or "")
    mine = await celery_agents.runs(agent=u1)
    assert sorted(r.run_id for r in mine) == sorted(ids[:2])
    assert [r.run_id for r in await celery_agents.runs(tenant="other", agent=u2)] == [ids[2]]
    assert await celery_agents.runs(tenant="acme", agent=u2) == []
    assert await celery_agents.runs(agent=u1, state="failed") == []
    assert await celery_agents.runs(agent=u1, until=dt.timedelta(hours=1)) == []
    assert len(await celery_agents.runs(agent=u1, since=dt.timedelta(hours=1))) == 2
    assert len(await celery_agents.runs(agent=u1, limit=1)) == 1
    assert await celery_agents.runs(team=u1) == []  # an agent's name is not a team's
    rows = await celery_agents.usage(group_by=["tenant", "agent", "model", "day"], tenant="other")
    today = dt.datetime.now(dt.UTC).date()
    assert [(r.tenant, r.agent, r.model, r.day, r.runs) for r in rows if r.agent in (u1, u2)] == [
        ("other", u1, "test:echo", today, 2),
        ("other", u2, "test:echo", today, 1),
    ]
    assert all(r.input_tokens > 0 and r.errors == 0 for r in rows if r.agent in (u1, u2))
    with pytest.raises(celery_agents.UserError, match="cannot group usage by 'week'"):
        await celery_agents.usage(group_by=["week"])


async def test_result_of_a_run_redis_forgot_comes_from_the_store() -> None:
    handle = await Agent("forgetful", "test:echo").submit("remember me")
    answer = await handle.result()
    await wait_stored(handle.run_id)
    client = get_client()

    async def forget() -> None:  # what the result TTL does an hour later
        keys = client.keys
        names = [keys.run_state(handle.run_id), keys.run_log(handle.run_id)]
        await client.redis.delete(*names, keys.run_seq(handle.run_id))

    await on_io(forget())
    again = await RunHandle.attach(handle.run_id).result(timeout=2)
    assert (again.text, again.run_id) == (answer.text, handle.run_id)
    assert await RunHandle.attach(handle.run_id).status() == "succeeded"


def test_metadata_only_keeps_no_prompt_or_answer(
    private_worker: Callable[..., WorkerProcess],
) -> None:
    private_worker(extra_env={"CELERY_AGENTS_STORE_CONTENT": "false"})
    msg = Agent("private", "test:echo").run_sync("my secret prompt")
    stored = asyncio.run(wait_stored(msg.run_id or ""))
    assert stored.prompt is None and stored.message is None
    assert stored.state == "succeeded" and stored.output_tokens > 0


def test_runs_cli_lists_shows_and_sums(agents: Settings) -> None:
    msg = Agent("cli-run", "test:echo").run_sync("shown by the cli")
    asyncio.run(wait_stored(msg.run_id or ""))
    env = {"CELERY_AGENTS_REDIS_URL": agents.redis_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery_agents.cli", "runs", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
            check=False,
        )

    listed = cli("list", "--agent", "cli-run", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [msg.run_id]
    table = cli("list", "--agent", "cli-run")
    assert msg.run_id in table.stdout and "succeeded" in table.stdout
    shown = cli("show", msg.run_id or "")
    assert "shown by the cli" in shown.stdout and "answer" in shown.stdout
    assert json.loads(cli("show", msg.run_id or "", "--json").stdout)["name"] == "cli-run"
    summed = json.loads(cli("usage", "--by", "agent,day", "--since", "1h", "--json").stdout)
    assert any(r["agent"] == "cli-run" and r["runs"] >= 1 for r in summed)
    missing = cli("show", "no-such-run")
    assert missing.returncode == 1 and "no run 'no-such-run' in the run store" in missing.stderr
    bad = cli("list", "--since", "last tuesday")
    assert bad.returncode == 1 and "--since 'last tuesday'" in bad.stderr


def test_runs_land_in_postgresql(
    private_worker: Callable[..., WorkerProcess], postgres_store: str
) -> None:
    private_worker(extra_env={"CELERY_AGENTS_STORE_URL": postgres_store})
    configure(get_client().settings.model_copy(update={"store_url": postgres_store}))
    msg = Agent("pg", "test:echo").run_sync("into postgres", tenant="other")
    stored = asyncio.run(wait_stored(msg.run_id or ""))
    assert (stored.name, stored.tenant, stored.state) == ("pg", "other", "succeeded")
    assert stored.message is not None and stored.message.text == msg.text
    rows = asyncio.run(celery_agents.usage(group_by=["tenant", "day"]))
    assert [(r.tenant, r.runs) for r in rows] == [("other", 1)]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://db.example/runs", "unsupported database 'mysql'"),
        ("postgresql://", "names no PostgreSQL database"),
        ("postgresql+asyncpg://nobody:hunter2@127.0.0.1:1/runs", "cannot open it"),
        ("/proc/no-such-dir/runs.db", "No such file or directory"),
    ],
)
@pytest.mark.parametrize("command", ["worker", "beat", "runs list"])
def test_a_bad_or_unreachable_store_url_is_one_line_at_start(
    agents: Settings, command: str, url: str, named: str
) -> None:
    env = {
        **os.environ,
        "CELERY_AGENTS_REDIS_URL": agents.redis_url,
        "CELERY_AGENTS_STORE_URL": url,
        "CELERY_AGENTS_QUEUE": f"bad-store-{uuid.uuid4().hex[:6]}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "celery_agents.cli", *command.split()],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ready" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if "CELERY_AGENTS_STORE_URL" in line]
    assert len(lines) == 1 and named in lines[0], done.stderr
    assert "hunter2" not in done.stdout + done.stderr


async def _forget_conversation(conversation_id: str) -> None:
    """What the history TTL does after a week: Redis no longer has the conversation."""
    client = get_client()

    async def forget() -> None:
        keys = client.keys
        await client.redis.delete(
            keys.conversation(conversation_id), keys.conversation_runs(conversation_id)
        )

    await on_io(forget())


async def test_a_named_conversation_continues_from_the_store_once_redis_forgot_it(
    scripted_model: ScriptedModelServer,
) -> None:
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    scripted_model.script(Reply("Hello Ada."), Reply("Your name is Ada."))
    first = await scripted(conversation_id=conversation).run("My name is Ada.")
    await wait_stored(first.run_id or "")
    await _forget_conversation(conversation)
    history = await scripted(conversation_id=conversation).get_history()
    assert [m.text for m in history] == ["My name is Ada.", "Hello Ada."]

    await scripted(conversation_id=conversation).run("What is my name?")
    sent = [m["content"] for m in scripted_model.requests[-1].body["messages"]]
    assert sent == ["You analyse.", "My name is Ada.", "Hello Ada.", "What is my name?"]
    # Redis holds the whole conversation again, in order.
    again = await scripted(conversation_id=conversation).get_history()
    assert [m.text for m in again] == [
        "My name is Ada.",
        "Hello Ada.",
        "What is my name?",
        "Your name is Ada.",
    ]


async def test_a_cleared_conversation_does_not_come_back_from_the_store(
    scripted_model: ScriptedModelServer,
) -> None:
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    agent = scripted(conversation_id=conversation)
    first = await agent.run("Remember the number 7.")
    await wait_stored(first.run_id or "")
    await agent.clear_history()
    assert await agent.get_history() == []
    await agent.run("Which number?")
    sent = [m["content"] for m in scripted_model.requests[-1].body["messages"]]
    assert sent == ["You analyse.", "Which number?"]
    stored = await celery_agents.run(first.run_id or "")
    assert stored is not None and stored.in_history is False  # still on record


async def test_background_fires_are_recorded_under_their_entry(shared_stack: Stack) -> None:
    configure(shared_stack.settings)
    stats = await Agent("ticker", "test:echo").run_in_background(
        "tick", max_count=2, interval=0.2, store_history=False
    )
    await stats.wait()
    run_ids = [m.run_id or "" for m in stats.messages]
    for run_id in run_ids:
        await wait_stored(run_id)
    fired = await celery_agents.runs(schedule=stats.id)
    assert sorted(r.run_id for r in fired) == sorted(run_ids) and len(run_ids) == 2
    assert all(r.parent_id is None and r.name == "ticker" for r in fired)


def test_status_shows_the_records_still_waiting_for_the_database(
    agents: Settings, agents_store_url: str
) -> None:
    import redis

    from celery_agents.keys import Keys
    from celery_agents.store.url import store_id, store_url

    prefix = f"backlog-{uuid.uuid4().hex[:6]}"  # no worker, so no writer, serves it
    url = store_url(agents_store_url)
    assert url is not None
    stream = Keys(prefix).store_records(store_id(url))
    client = redis.Redis.from_url(agents.redis_url)
    try:
        for i in range(3):
            client.xadd(stream, {"entry": json.dumps({"run_id": f"w{i}"})})
        env = {**os.environ, "CELERY_AGENTS_REDIS_URL": agents.redis_url}
        env["CELERY_AGENTS_KEY_PREFIX"] = prefix
        done = subprocess.run(
            [sys.executable, "-m", "celery_agents.cli", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "run store: 3 records waiting for the database" in done.stdout
    finally:
        client.delete(stream)
        client.close()


async def test_an_agents_own_conversation_continues_from_the_store_once_redis_forgot_it(
    scripted_model: ScriptedModelServer,
) -> None:
    agent = scripted()  # its own conversation, not named
    scripted_model.script(Reply("Noted: blue."), Reply("Blue."))
    first = await agent.run("My colour is blue.")
    await wait_stored(first.run_id or "")
    await _forget_conversation(agent.conversation_id)  # a week later
    await agent.run("Which colour?")
    sent = [m["content"] for m in scripted_model.requests[-1].body["messages"]]
    assert sent == ["You analyse.", "My colour is blue.", "Noted: blue.", "Which colour?"]


def test_with_the_store_off_runs_and_teams_work_and_nothing_is_recorded(
    private_worker: Callable[..., WorkerProcess], agents_store_url: str
) -> None:
    private_worker(extra_env={"CELERY_AGENTS_STORE_URL": "none"})
    configure(get_client().settings.model_copy(update={"store_url": "none"}))
    assert Agent("off", "test:echo").run_sync("not recorded").text == "not recorded"
    team = Team([Agent("o1", "test:echo"), Agent("o2", "test:echo")], name="offs")
    assert team.run_sync("nor this").content == ["nor this", "nor this"]
    with pytest.raises(celery_agents.ConfigError, match="the run store is off"):
        asyncio.run(celery_agents.runs())
    configure(get_client().settings.model_copy(update={"store_url": agents_store_url}))
    assert asyncio.run(celery_agents.runs(agent="off")) == []
    assert asyncio.run(celery_agents.runs(team="offs")) == []
