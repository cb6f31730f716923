"""A worker killed mid-run: its runs are redelivered and complete once on another worker; a
live worker's long run is never redelivered, however short the visibility timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_agents import Agent, Team
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.events import Event, RunDone, RunStarted, TextDelta
from celery_agents.facade.handle import RunHandle
from celery_agents.keys import Keys
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer
from celery_agents.text import as_text

pytestmark = pytest.mark.faults

# Short, so the suite waits seconds, not minutes: a dead worker's runs come back ~4 s after
# its last heartbeat; live workers re-stamp theirs every ~0.7 s.
FAST_REDELIVERY = {"CELERY_AGENTS_VISIBILITY_TIMEOUT": "4"}


async def _events(run_id: str) -> list[Event]:
    return [event async for event in RunHandle.attach(run_id).events(timeout=30)]


async def _outcome(handle: RunHandle, prompt: str) -> dict[str, Any]:
    message = await handle.result(timeout=60)
    events = await _events(handle.run_id)
    status = await handle.status()
    record = await handle.record()
    return {
        "record": record,
        "content": message.content,
        "prompt": prompt,
        "starts": [e for e in events if isinstance(e, RunStarted)],
        "dones": sum(isinstance(e, RunDone) for e in events),
        "status": status,
    }


async def test_kill_9_mid_run_redelivers_and_completes_once(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    runs = 4
    doomed = private_worker(concurrency=runs, extra_env=FAST_REDELIVERY)
    # The doomed worker's calls never answer in time; the survivor's are echoed.
    scripted_model.script(*[Reply("never", latency=60)] * runs, model="slowkill")
    agent = Agent("survivor", "scripted:slowkill")
    conversation = uuid.uuid4().hex
    prompts = [f"job {i}" for i in range(runs)]
    handles = [await agent.submit(p, conversation_id=f"{conversation}-{p}") for p in prompts]
    scripted_model.wait_for_requests(runs, timeout=30)  # all four are mid model call

    private_worker(concurrency=runs, extra_env=FAST_REDELIVERY)
    doomed.kill()
    outcomes = await asyncio.gather(
        *(_outcome(h, p) for h, p in zip(handles, prompts, strict=True)), return_exceptions=True
    )

    done = [o for o in outcomes if isinstance(o, dict)]
    fault_report.record(
        "worker kill -9 mid-run (4 runs in its hands)",
        injected=1,
        started=runs,
        completed=len(done),
        lost=runs - len(done),
        duplicated=sum(max(o["dones"] - 1, 0) for o in done),
    )
    assert len(done) == runs, [o for o in outcomes if not isinstance(o, dict)]
    for outcome in done:
        assert outcome["content"] == outcome["prompt"]  # answered by the survivor's call
        assert outcome["dones"] == 1
        assert [s.attempt for s in outcome["starts"]] == [1, 2]
        assert outcome["starts"][0].worker != outcome["starts"][1].worker
        assert outcome["status"] == "succeeded"
        record = outcome["record"]
        assert (record.attempt, record.worker) == (2, outcome["starts"][1].worker)
    # History was written once per run, by the execution that finished.
    for prompt in prompts:
        history = await agent.get_history(f"{conversation}-{prompt}")
        assert [m.role for m in history] == ["user", "assistant"]


def _deliveries(worker: WorkerProcess, task_id: str) -> int:
    """How often the worker received the task's message (Celery logs each receipt)."""
    log = worker.log_path.read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "received" in line and task_id in line)


async def test_long_run_is_not_redelivered_while_its_worker_lives(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    workers = [private_worker(concurrency=2, extra_env=FAST_REDELIVERY) for _ in range(2)]
    # (the idle one sweeps for lost runs all along)
    # Three visibility timeouts long.
    scripted_model.script(Reply("slow but sure", latency=12), model="longrun")
    handle = await Agent("patient", "scripted:longrun").submit("take your time")
    outcome = await _outcome(handle, "take your time")

    calls = [r for r in scripted_model.requests if r.model == "longrun"]
    deliveries = sum(_deliveries(w, handle.run_id) for w in workers)
    fault_report.record(
        "run 3x longer than the visibility timeout",
        injected=1,
        started=1,
        completed=1 if outcome["dones"] else 0,
        lost=0 if outcome["dones"] else 1,
        duplicated=max(deliveries - 1, 0),
    )
    assert deliveries == 1  # the broker never handed the message out again
    assert outcome["content"] == "slow but sure"
    assert [s.attempt for s in outcome["starts"]] == [1]
    assert len(calls) == 1
    assert outcome["status"] == "succeeded"
    record = outcome["record"]
    assert record.attempt == 1
    # The worker kept beating for the run while it went (every ~0.7 s, 12 s long).
    assert record.heartbeat_at is not None
    assert record.heartbeat_at - record.times["running"] > 5


async def test_a_team_whose_member_worker_died_before_its_chord_count_still_ends(
    private_worker: Callable[..., WorkerProcess], fault_report: Any
) -> None:
    # The member's run ended (recorded, published); its worker died before Celery counted it
    # in the chord. Its redelivery found the run ended and was dropped: the Team never ended.
    inject = str(Path(__file__).parent / "inject")
    doomed = private_worker(
        concurrency=4,
        extra_env={
            **FAST_REDELIVERY,
            "CELERY_AGENTS_TEST_DIE_AT_CHORD_PART": "1",
            "PYTHONPATH": inject,
        },
    )
    team = Team([Agent("a", "test:echo"), Agent("b", "test:echo")], name="pair")
    handle = await team.submit("both", timeout=30, store_history=False)
    died = await asyncio.to_thread(doomed.process.wait, 60)
    private_worker(concurrency=4, extra_env=FAST_REDELIVERY)
    content: Any = None
    try:
        content = (await handle.result(timeout=60)).content
    finally:
        fault_report.record(
            "worker kill -9 between a member's end and its chord count",
            injected=1,
            started=1,
            completed=int(content == ["both", "both"]),
            lost=int(content != ["both", "both"]),
            duplicated=0,
        )
    assert died == 9
    assert content == ["both", "both"]


async def test_a_worker_stopped_past_its_lease_resumes_without_touching_the_run(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    agents: Any,
    fault_report: Any,
) -> None:
    if os.environ.get("CELERY_AGENTS_TEST_BROKER_URL", "").startswith("amqp"):
        pytest.skip(
            "RabbitMQ hands a stalled worker's messages to another only once it drops that "
            "worker's connection (missed heartbeats, minutes by default), not within 30 s"
        )
    stalled = private_worker(concurrency=2, extra_env=FAST_REDELIVERY)
    scripted_model.script(
        Reply("from the first execution", latency=2),
        Reply("from the second execution", latency=3),
        model="stopme",
    )
    agent = Agent("stopped", "scripted:stopme")
    conversation = uuid.uuid4().hex
    handle = await agent.submit("who answers?", conversation_id=conversation)
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 30)  # in the stalled one
    os.kill(stalled.process.pid, signal.SIGSTOP)
    survivor = private_worker(concurrency=2, extra_env=FAST_REDELIVERY)
    lock = Keys(agents.key_prefix).run_lock(handle.run_id)
    client = redis.Redis.from_url(agents.redis_url)
    try:
        deadline = time.monotonic() + 30
        while (await handle.record()).attempt < 2:  # the survivor took the run over
            assert time.monotonic() < deadline, "the run was never taken over"
            await asyncio.sleep(0.05)
        os.kill(stalled.process.pid, signal.SIGCONT)  # back while the survivor runs it
        deadline = time.monotonic() + 15
        while not any(said in stalled.log_tail(200) for said in ("lease lapsed", "was lost")):
            assert time.monotonic() < deadline, stalled.log_tail()
            await asyncio.sleep(0.05)
        holder = client.get(lock)  # the survivor's lease, untouched by the stalled one
        outcome = await _outcome(handle, "who answers?")
    finally:
        client.close()
    deltas = "".join(e.text for e in await _events(handle.run_id) if isinstance(e, TextDelta))
    fault_report.record(
        "worker SIGSTOP past its lease, then SIGCONT",
        injected=1,
        started=1,
        completed=int(outcome["dones"] >= 1),
        lost=int(outcome["dones"] == 0),
        duplicated=max(outcome["dones"] - 1, 0) + int("first" in deltas),
    )
    stalled_id, survivor_id = (w.hostname.split("@")[0] + "@" for w in (stalled, survivor))
    assert holder is not None and as_text(holder).startswith(survivor_id)
    assert outcome["content"] == "from the second execution" and outcome["dones"] == 1
    assert deltas == "from the second execution"  # nothing of the stalled one's answer
    starts = [s.worker or "" for s in outcome["starts"]]
    assert [w.split("@")[0] + "@" for w in starts] == [stalled_id, survivor_id]
    record = outcome["record"]
    assert (record.state, record.attempt) == ("succeeded", 2)
    assert (record.worker or "").startswith(survivor_id)
    history = await agent.get_history(conversation)
    assert [m.content for m in history if m.role == "assistant"] == ["from the second execution"]


async def test_a_dead_workers_runs_go_to_a_live_worker_within_seconds(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    runs = 4  # the default visibility timeout (120 s): recovery must not wait for it
    doomed = private_worker(concurrency=runs)
    scripted_model.script(*[Reply("never", latency=60)] * runs, model="takeover")
    agent = Agent("recovered", "scripted:takeover")
    handles = [await agent.submit(f"job {i}", store_history=False) for i in range(runs)]
    await asyncio.to_thread(scripted_model.wait_for_requests, runs, 30)
    private_worker(concurrency=runs)  # alive before the other dies
    doomed.kill()
    killed = time.time()
    outcomes = await asyncio.gather(
        *(_outcome(h, f"job {i}") for i, h in enumerate(handles)), return_exceptions=True
    )
    done = [o for o in outcomes if isinstance(o, dict)]
    recovery = sorted(o["starts"][-1].ts - killed for o in done if len(o["starts"]) == 2)
    fault_report.record(
        "worker kill -9 at the default visibility timeout (120 s)",
        injected=1,
        started=runs,
        completed=len(done),
        lost=runs - len(done),
        duplicated=sum(max(o["dones"] - 1, 0) for o in done),
        recovery=recovery,
    )
    assert len(done) == runs, [o for o in outcomes if not isinstance(o, dict)]
    assert all(o["content"] == o["prompt"] for o in done)
    assert len(recovery) == runs and recovery[-1] < 10, recovery
