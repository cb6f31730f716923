"""Cancellation reaches the model call and running tools, for single runs, Teams and TeamRuns:
what runs stops, what waits never starts, and the run ends ``cancelled``, promptly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from celery_agents import Agent, RunCancelled
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.facade.handle import RunHandle
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer, ToolCallSpec

pytestmark = pytest.mark.faults

SLOW = 30.0  # seconds a cancelled call would have taken: the run must end long before


async def _cancel_and_wait(handle: RunHandle) -> tuple[bool, float]:
    """Cancel; True if the run then ended cancelled, and how long that took."""
    started = time.monotonic()
    await handle.cancel()
    try:
        await handle.result(timeout=SLOW / 2)
    except RunCancelled:
        return True, time.monotonic() - started
    return False, time.monotonic() - started


def _calls(server: ScriptedModelServer, model: str) -> int:
    return sum(1 for r in server.requests if r.model == model)


async def test_cancel_stops_a_team_mid_model_call(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    private_worker(concurrency=4)
    scripted_model.script(Reply("a", latency=SLOW), model="team-a")
    scripted_model.script(Reply("b", latency=SLOW), model="team-b")
    team = Agent("a", "scripted:team-a") & Agent("b", "scripted:team-b")
    handle = await team.submit("go")
    await asyncio.to_thread(scripted_model.wait_for_requests, 2, 20)  # both mid call

    cancelled, took = await _cancel_and_wait(handle)

    fault_report.record(
        "cancel a Team mid model call",
        injected=1,
        started=2,
        completed=0,
        lost=0 if cancelled else 1,
        duplicated=max(_calls(scripted_model, "team-a") - 1, 0),
    )
    assert cancelled
    assert took < SLOW / 2
    assert await handle.status() == "cancelled"


async def test_cancel_stops_a_team_run_and_its_later_stages_never_start(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    private_worker(concurrency=4)
    scripted_model.script(Reply("first", latency=SLOW), model="stage-1")
    chain = (
        Agent("one", "scripted:stage-1")
        | Agent("two", "scripted:stage-2")
        | Agent("three", "scripted:stage-3")
    )
    handle = await chain.submit("go")
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20)

    cancelled, _ = await _cancel_and_wait(handle)

    later = _calls(scripted_model, "stage-2") + _calls(scripted_model, "stage-3")
    fault_report.record(
        "cancel a TeamRun in its first stage",
        injected=1,
        started=1,
        completed=0,
        lost=0 if cancelled else 1,
        duplicated=later,  # a later stage that ran anyway
    )
    assert cancelled
    assert later == 0
    assert await handle.status() == "cancelled"


async def test_cancel_reaches_a_running_tool(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    private_worker(concurrency=2)
    scripted_model.script(
        Reply(tool_calls=[ToolCallSpec("slow_sync", {"seconds": SLOW})]), model="tooled"
    )
    agent = Agent("tooled", "scripted:tooled", tools=["slow_sync"])
    handle = await agent.submit("use the tool")
    events = RunHandle.attach(handle.run_id).events(timeout=20)
    async for event in events:  # the tool is running once its call was announced
        if event.kind == "tool.call":
            break
    await events.aclose()

    cancelled, took = await _cancel_and_wait(handle)

    fault_report.record(
        "cancel a run inside a 30 s tool",
        injected=1,
        started=1,
        completed=0,
        lost=0 if cancelled else 1,
        duplicated=max(_calls(scripted_model, "tooled") - 1, 0),  # no second model turn
    )
    assert cancelled
    assert took < SLOW / 2
    assert _calls(scripted_model, "tooled") == 1
