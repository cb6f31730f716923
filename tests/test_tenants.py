"""Tenants: daily token budgets refused before any model call, and fleet-wide run caps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from celery_agents import (
    Agent,
    BudgetExceeded,
    OutputValidationError,
    RunHandle,
    Team,
    TeamRunError,
    UserError,
)
from celery_agents.config.manifest import AgentSpec
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.facade.bridge import on_io
from celery_agents.facade.client import get_client
from celery_agents.tasks.payload import RunPayload
from celery_agents.tenants import today
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer
from tests.support.models import Finding
from tests.support.store import all_recorded, wait_stored

pytestmark = pytest.mark.usefixtures("agents")


async def test_a_budget_is_enforced_before_the_model_call(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("spent", usage=(80, 40)))
    agent = Agent("billed", "scripted:m")
    assert (await agent.run("first", tenant="acme")).content == "spent"
    with pytest.raises(BudgetExceeded, match="tenant 'acme' has used 120 of its 100 tokens"):
        await agent.run("second", tenant="acme")
    # a message that skips the client's check is refused by the worker, still before the model
    payload = RunPayload(
        run_id=uuid.uuid4().hex,
        agent=AgentSpec(name="sneaky", model="scripted:m"),
        prompt="x",
        conversation_id="c",
        timeout=10,
        tenant="acme",
    )
    get_client().send(payload)
    with pytest.raises(BudgetExceeded, match="no model was called"):
        await RunHandle.attach(payload.run_id).result(timeout=20)
    assert scripted_model.request_count == 1


async def test_an_unknown_tenant_is_a_user_error() -> None:
    known = "acme, failing, globex, initech, northwind, ops, other, racing, small, teamco"
    with pytest.raises(UserError, match=f"unknown tenant 'nobody' \\(known: {known}\\)"):
        await Agent("a", "test:echo").run("x", tenant="nobody")


async def test_a_tenant_cap_holds_while_other_tenants_proceed(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.latency = 0.4
    capped = [
        Agent("c", "scripted:capped").run(f"c{i}", store_history=False, tenant="small")
        for i in range(6)
    ]
    others = [
        Agent("o", "scripted:others").run(f"o{i}", store_history=False, tenant="other")
        for i in range(4)
    ]
    await asyncio.gather(*capped, *others)
    small = sorted(r.received_at for r in scripted_model.requests if r.model == "capped")
    free = sorted(r.received_at for r in scripted_model.requests if r.model == "others")
    assert len(small) == 6 and len(free) == 4
    assert max(sum(1 for t in small if s <= t < s + 0.35) for s in small) <= 2
    assert free[-1] < small[-1] - 0.5  # the other tenant did not queue behind the capped one


@pytest.fixture
def four_threads(private_worker: Callable[..., WorkerProcess]) -> None:
    """A worker of 4 threads, on a queue of its own."""
    private_worker(concurrency=4)


@pytest.mark.usefixtures("four_threads")
async def test_a_capped_tenant_never_holds_the_threads_other_tenants_need(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.latency = 0.3
    capped = [
        asyncio.create_task(
            Agent("c", "scripted:capped").run(f"c{i}", store_history=False, tenant="small")
        )
        for i in range(8)
    ]
    await asyncio.to_thread(scripted_model.wait_for_requests, 2, 20)  # "small" is at its cap
    others = [
        Agent("o", "scripted:others").run(f"o{i}", store_history=False, tenant="other")
        for i in range(4)
    ]
    await asyncio.gather(*capped, *others)
    small = sorted(r.received_at for r in scripted_model.requests if r.model == "capped")
    free = sorted(r.received_at for r in scripted_model.requests if r.model == "others")
    assert free[-1] < small[4], "the other tenant waited behind the capped one's queue"


async def test_a_teams_members_spend_their_tenants_budget(
    scripted_model: ScriptedModelServer,
) -> None:
    # Both members start together: each holds part of the budget (about 260 tokens) until it
    # settles what it used (300).
    scripted_model.script(Reply("a", usage=(150, 150)), model="t1")
    scripted_model.script(Reply("b", usage=(150, 150)), model="t2")
    team = Agent("t1", "scripted:t1") & Agent("t2", "scripted:t2")
    assert (await team.run("x", tenant="teamco")).content == ["a", "b"]
    with pytest.raises(BudgetExceeded, match="tenant 'teamco' has used 600 of its 600 tokens"):
        await team.run("x", tenant="teamco")
    assert scripted_model.request_count == 2


async def test_team_members_that_never_get_a_tenant_slot_fail_the_team_not_hang_it(
    scripted_model: ScriptedModelServer, private_worker: Callable[..., WorkerProcess]
) -> None:
    private_worker(concurrency=8)
    scripted_model.script(*[Reply("held", latency=8)] * 2, model="holder")
    holders = [
        await Agent("h", "scripted:holder").submit("hold", tenant="small", timeout=30)
        for _ in range(2)
    ]
    await asyncio.to_thread(scripted_model.wait_for_requests, 2, 20)  # "small" is at its cap
    team = Team([Agent("a", "test:echo"), Agent("b", "test:echo")], name="pair")
    # Each member waits out its timeout for a slot, then fails as a member: before, it
    # raised, the chord broke, and the caller waited for its whole timeout for nothing.
    handle = await team.submit("x", tenant="small", timeout=1, store_history=False)
    with pytest.raises(TeamRunError, match="waited .* for a slot of tenant 'small'"):
        await handle.result()
    for holder in holders:
        assert (await holder.result(timeout=30)).content == "held"
    # The members that never ran are on record too, under their Team.
    team_record = await wait_stored(handle.run_id)
    assert (team_record.state, team_record.error_type) == ("failed", "TeamRunError")
    members = await all_recorded(handle.run_id, 2)
    assert sorted((m.name, m.state, m.attempt) for m in members) == [
        ("a", "timed_out", 0),
        ("b", "timed_out", 0),
    ]


async def test_tokens_a_failed_run_used_count_against_its_tenants_budget(
    scripted_model: ScriptedModelServer,
) -> None:
    # Two answers that are not the asked-for JSON: the run fails after 2,000 tokens. Before,
    # a failed run charged nothing, so failing runs could spend without limit.
    scripted_model.script(Reply("not json", usage=(500, 500)), Reply("nor this", usage=(500, 500)))
    judge = Agent("judge", "scripted:m", output_type=Finding)
    with pytest.raises(OutputValidationError):
        await judge.run("judge", tenant="failing", store_history=False)
    with pytest.raises(BudgetExceeded, match="tenant 'failing' has used 2000 of its 100 tokens"):
        await Agent("next", "scripted:m").run("x", tenant="failing", store_history=False)


async def test_runs_starting_together_cannot_all_spend_one_budget(
    scripted_model: ScriptedModelServer,
) -> None:
    # Each run holds part of the budget from its start (checked and held in one step) until
    # it settles what it used. Before, all four passed a check made before any had spent:
    # 480 tokens of a budget of 100.
    scripted_model.script(*[Reply("spent", usage=(80, 40), latency=0.5)] * 4, model="race")
    agent = Agent("racer", "scripted:race")
    outcomes = await asyncio.gather(
        *(agent.run(f"r{i}", tenant="racing", store_history=False) for i in range(4)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, BudgetExceeded) for o in outcomes) == 3, outcomes
    assert len([r for r in scripted_model.requests if r.model == "race"]) == 1


async def test_a_tenants_slot_lasts_while_its_run_goes_on_past_a_slot_lease(
    scripted_model: ScriptedModelServer, private_worker: Callable[..., WorkerProcess]
) -> None:
    # A 4 s visibility timeout makes a run's lease, and a slot's, about 2 s: each run below
    # takes 3 s. Its worker renews the slot with the run's lease; before, a slot lasted a
    # fixed time, and a run longer than that let others past the cap of 2.
    private_worker(concurrency=8, extra_env={"CELERY_AGENTS_VISIBILITY_TIMEOUT": "4"})
    scripted_model.script(*[Reply("long", latency=3)] * 4, model="long")
    agent = Agent("l", "scripted:long")
    runs = [agent.run(f"r{i}", tenant="small", store_history=False) for i in range(4)]
    assert [m.content for m in await asyncio.gather(*runs)] == ["long"] * 4
    arrived = sorted(r.received_at for r in scripted_model.requests if r.model == "long")
    assert arrived[2] - arrived[0] >= 2.5  # the third waited for a slot to be released


async def tokens_spent_today(tenant: str) -> int:
    client = get_client()
    raw = await on_io(client.redis.get(client.keys.tenant_tokens(tenant, today())))
    return int(raw or 0)


async def test_a_team_run_sync_with_a_tenant_is_charged_to_that_tenant(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("a", usage=(10, 5)), model="s1")
    scripted_model.script(Reply("b", usage=(20, 5)), model="s2")
    before = await tokens_spent_today("other")
    team = Agent("s1", "scripted:s1") & Agent("s2", "scripted:s2")
    assert team.run_sync("x", tenant="other", store_history=False).content == ["a", "b"]
    assert await tokens_spent_today("other") == before + 40
    with pytest.raises(UserError, match="unknown tenant 'nobody'"):
        team.run_sync("x", tenant="nobody", queue="elsewhere", priority=9)


async def test_an_agent_stream_with_a_tenant_is_charged_to_that_tenant(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("streamed", usage=(7, 3)))
    before = await tokens_spent_today("other")
    async with Agent("s", "scripted:m").run_stream("x", tenant="other") as stream:
        assert "".join([chunk async for chunk in stream.stream()]) == "streamed"
    assert await tokens_spent_today("other") == before + 10
    with pytest.raises(UserError, match="unknown tenant 'nobody'"):
        async with Agent("s", "scripted:m").run_stream("x", tenant="nobody"):
            pass
