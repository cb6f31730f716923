"""Durable runs (issue 20): a worker killed mid-run, and its run resumed on another worker from
its step journal: no tool run twice, no journaled model call made again, no text streamed
twice, and a tool cut short by the death not run again unless it is declared retry-safe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celery_agents import Agent, ToolInterrupted
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.events import Event, RunStarted, TextDelta, ToolCallEvent, ToolResultEvent
from celery_agents.facade.handle import RunHandle
from celery_agents.messages import ChatMessage
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer, ToolCallSpec

pytestmark = pytest.mark.faults


async def _events(run_id: str) -> list[Event]:
    return [event async for event in RunHandle.attach(run_id).events(timeout=30)]


def _recovered(events: list[Event], killed: float) -> list[float]:
    return [e.ts - killed for e in events if isinstance(e, RunStarted) and e.attempt > 1]


async def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.02)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _kill_and_resume(
    doomed: WorkerProcess,
    private_worker: Callable[..., WorkerProcess],
    handle: RunHandle,
    concurrency: int = 2,
) -> tuple[ChatMessage | BaseException, list[Event], list[float]]:
    """A survivor up, then ``doomed`` killed (-9): the run's outcome, its events, and the
    seconds from the kill to each later attempt's start."""
    private_worker(concurrency=concurrency)  # alive before the other dies
    doomed.kill()
    killed = time.time()
    outcome: ChatMessage | BaseException
    try:
        outcome = await handle.result(timeout=60)
    except Exception as exc:
        outcome = exc
    events = await _events(handle.run_id)
    return outcome, events, _recovered(events, killed)


async def test_kill_9_after_an_effectful_tool_resumes_without_paying_twice(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    doomed = private_worker(concurrency=2)
    scripted_model.script(
        Reply(tool_calls=(ToolCallSpec("charge", {"ledger": str(ledger)}, id="call_1"),)),
        Reply("never", latency=60),  # the doomed worker's second turn: it dies waiting
        Reply("charged once, done"),
        model="durable",
    )
    agent = Agent("durable", "scripted:durable", tools=["charge"])
    handle = await agent.submit("charge the customer", store_history=False)
    # The second turn was asked for: the tool ran and its result is journaled.
    await asyncio.to_thread(scripted_model.wait_for_requests, 2, 30)
    outcome, events, recovery = await _kill_and_resume(doomed, private_worker, handle)
    key = f"{handle.run_id}:1.call_1"
    turns = [r for r in scripted_model.requests if r.model == "durable"]
    effects = _lines(ledger)
    fault_report.record(
        "worker kill -9 after an effectful tool returned, before the run's end",
        injected=1,
        started=1,
        completed=int(isinstance(outcome, ChatMessage)),
        lost=int(not isinstance(outcome, ChatMessage)),
        duplicated=max(len(effects) - 1, 0),
        recovery=recovery,
    )
    assert isinstance(outcome, ChatMessage), outcome
    assert effects == [key]  # the effect happened once
    assert len(turns) == 3  # turn 1 once (replayed from the journal), turn 2 again
    assert outcome.content == "charged once, done"
    assert [(c.tool_name, c.result) for c in outcome.tool_calls] == [("charge", f"charged {key}")]
    assert [e.attempt for e in events if isinstance(e, RunStarted)] == [1, 2]
    # The caller saw the call and its result once, and no text twice.
    assert sum(isinstance(e, ToolCallEvent) for e in events) == 1
    assert sum(isinstance(e, ToolResultEvent) for e in events) == 1
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == outcome.content


async def test_kill_9_mid_stream_resumes_with_no_text_twice(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    answer = " ".join(f"w{i}" for i in range(150))
    doomed = private_worker(concurrency=2)
    scripted_model.script(
        Reply(answer, token_delay=0.1), Reply(answer, token_delay=0.0), model="midstream"
    )
    handle = await Agent("streamer", "scripted:midstream").submit("talk", store_history=False)
    seen = 0
    async for event in RunHandle.attach(handle.run_id).events(timeout=30):
        seen += isinstance(event, TextDelta)
        if seen == 20:  # a good part of the answer is out
            break
    message, events, recovery = await _kill_and_resume(doomed, private_worker, handle)
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    answered = isinstance(message, ChatMessage) and message.content == answer
    fault_report.record(
        "worker kill -9 in the middle of a streamed answer",
        injected=1,
        started=1,
        completed=int(answered),
        lost=int(not answered),
        duplicated=int(streamed != answer),
        recovery=recovery,
    )
    assert isinstance(message, ChatMessage), message
    assert message.content == answer
    assert [e.attempt for e in events if isinstance(e, RunStarted)] == [1, 2]
    assert streamed == answer  # the joined chunks are the final content: nothing twice


@pytest.mark.parametrize(("tool", "safe"), [("stuck_charge", False), ("stuck_lookup", True)])
async def test_a_tool_cut_short_by_its_workers_death_runs_again_only_if_retry_safe(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
    tmp_path: Path,
    tool: str,
    safe: bool,
) -> None:
    ledger = tmp_path / "ledger"
    doomed = private_worker(concurrency=2)
    scripted_model.script(
        Reply(tool_calls=(ToolCallSpec(tool, {"ledger": str(ledger)}, id="call_1"),)),
        Reply("after the tool"),
        model=f"cut-{tool}",
    )
    handle = await Agent("cut", f"scripted:cut-{tool}", tools=[tool]).submit(
        "use the tool", store_history=False
    )
    await _until(ledger.exists, "the tool was never entered")
    outcome, _, recovery = await _kill_and_resume(doomed, private_worker, handle)
    fault_report.record(
        f"worker kill -9 inside a {'retry-safe' if safe else 'non-retry-safe'} tool call",
        injected=1,
        started=1,
        completed=1,  # ended as it should: answered (safe) or ToolInterrupted (not safe)
        lost=0,
        duplicated=max(len(_lines(ledger)) - (2 if safe else 1), 0),
        recovery=recovery,
    )
    key = f"{handle.run_id}:1.call_1"
    if safe:
        assert isinstance(outcome, ChatMessage), outcome
        assert outcome.content == "after the tool"
        assert _lines(ledger) == [key, key]  # called again, with the same idempotency key
    else:
        assert isinstance(outcome, ToolInterrupted), outcome
        assert tool in outcome.message and "retry_safe" in outcome.message
        assert _lines(ledger) == [key]  # not called again


@pytest.mark.parametrize("shape", ["team", "teamrun"])
async def test_kill_9_of_a_members_worker_resumes_the_member_from_its_journal(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
    tmp_path: Path,
    shape: str,
) -> None:
    ledger = tmp_path / "ledger"
    doomed = private_worker(concurrency=4)
    model = f"member-{shape}"
    scripted_model.script(
        Reply(tool_calls=(ToolCallSpec("charge", {"ledger": str(ledger)}, id="call_1"),)),
        Reply("never", latency=60),
        Reply("paid"),
        model=model,
    )
    payer = Agent("payer", f"scripted:{model}", tools=["charge"])
    echoer = Agent("echoer", "test:echo")
    members = payer & echoer if shape == "team" else payer | echoer
    expected: Any = ["paid", "bill them"] if shape == "team" else "paid"
    handle = await members.submit("bill them", timeout=60, store_history=False)
    await asyncio.to_thread(scripted_model.wait_for_requests, 2, 30)
    outcome, events, recovery = await _kill_and_resume(doomed, private_worker, handle, 4)
    ok = isinstance(outcome, ChatMessage) and outcome.content == expected
    effects = _lines(ledger)
    fault_report.record(
        f"worker kill -9 in a {'Team member' if shape == 'team' else 'TeamRun stage'} "
        "after its tool's effect",
        injected=1,
        started=1,
        completed=int(ok),
        lost=int(not ok),
        duplicated=max(len(effects) - 1, 0),
        recovery=recovery,
    )
    assert isinstance(outcome, ChatMessage), outcome
    assert outcome.content == expected
    assert len(effects) == 1  # the effect happened once
    assert len([r for r in scripted_model.requests if r.model == model]) == 3
    # The member started twice, and ended once: the Team counted it once, the chain went on once.
    starts = [e for e in events if isinstance(e, RunStarted) and e.agent == "payer"]
    assert [e.attempt for e in starts] == [1, 2]
    assert sum(isinstance(e, RunStarted) and e.agent == "echoer" for e in events) == 1
