"""Client disconnect (issue 7, item 4): the caller's process is killed with SIGKILL.

A client killed mid-stream loses nothing: reattaching (``RunHandle.attach``) from where it
stopped delivers the rest of the events exactly once, in order, up to ``run.done``; from
``seq`` 1 it replays them all. A run whose caller died right after queueing it still runs
once and stores its result and history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from celery_agents import Agent, RunHandle, Settings
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.events import Event, RunDone, RunStarted, TextDelta
from celery_agents.facade.client import get_client
from celery_agents.keys import Keys
from celery_agents.testing.scripted_server import RecordedRequest, Reply, ScriptedModelServer
from tests.faults.caller import MODEL
from tests.faults.conftest import FaultReport

ROOT = Path(__file__).resolve().parents[2]
SCRIPTED_MODEL = MODEL.split(":", 1)[1]
LINE_TIMEOUT = 30.0  # seconds to wait for the caller's next line (its startup included)
RUN_WAIT = 30.0  # seconds to wait for a run's events once attached


@dataclass
class Caller:
    """The caller process and the JSON lines it printed."""

    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]]

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), LINE_TIMEOUT)
        if not raw:
            raise AssertionError(f"the caller exited early:\n{await self.stderr()}")
        item: dict[str, Any] = json.loads(raw)
        self.lines.append(item)
        return item

    async def kill(self) -> float:
        """SIGKILL; collects what it printed before dying; returns the kill time."""
        self.process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), LINE_TIMEOUT)
        self.lines += [json.loads(raw) for raw in rest.splitlines() if raw.strip()]
        await asyncio.wait_for(self.process.wait(), LINE_TIMEOUT)
        assert self.process.returncode == -signal.SIGKILL, await self.stderr()
        return killed_at

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        with contextlib.suppress(TimeoutError):
            return (await asyncio.wait_for(self.process.stderr.read(), 5)).decode(errors="replace")
        return ""


@contextlib.asynccontextmanager
async def caller(settings: Settings, *args: str) -> AsyncIterator[Caller]:
    """``python -m tests.faults.caller ARGS`` pointed where ``settings`` point."""
    env = {
        **os.environ,
        "CELERY_AGENTS_REDIS_URL": settings.redis_url,
        "CELERY_AGENTS_KEY_PREFIX": settings.key_prefix,
        "CELERY_AGENTS_QUEUE": settings.queue,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": "1",
    }
    if settings.manifest is not None:
        env["CELERY_AGENTS_MANIFEST"] = str(settings.manifest)
    if settings.broker_url:
        env["CELERY_AGENTS_BROKER_URL"] = settings.broker_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.caller",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Caller(process, [])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdin is not None:
            process.stdin.close()


async def all_events(handle: RunHandle, from_seq: int = 1) -> list[Event]:
    return [event async for event in handle.events(from_seq, timeout=RUN_WAIT)]


def model_requests(server: ScriptedModelServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


def row_counts(events: list[Event], requests: int, completed: bool) -> dict[str, int]:
    """One run's row, from what was observed: starts in its event log, model calls made."""
    starts = sum(1 for e in events if isinstance(e, RunStarted) and e.member is None)
    executions = max(starts, requests)
    return {
        "injected": 1,
        "started": min(starts, 1),
        "completed": int(completed),
        "lost": int(not completed),
        "duplicated": max(executions - 1, 0),
    }


async def test_a_client_killed_mid_stream_reattaches_and_misses_nothing(
    agents: Settings, scripted_model: ScriptedModelServer, fault_report: FaultReport
) -> None:
    words = [f"w{i} " for i in range(80)]
    text = "".join(words)
    scripted_model.script(Reply(text, token_delay=0.03), model=SCRIPTED_MODEL)
    conversation = uuid.uuid4().hex

    async with caller(agents, "stream", conversation, "a long answer, please") as client:
        run_id = str((await client.line())["run_id"])
        while len(client.lines) < 1 + 5:  # the run id, then five events
            await client.line()
        killed_at = await client.kill()
    seen = client.lines[1:]
    last_seen = int(seen[-1]["seq"])
    assert [int(item["seq"]) for item in seen] == list(range(1, last_seen + 1))
    assert all(item["kind"] != "run.done" for item in seen), "killed too late: the run ended"

    # Reattach from where the dead client stopped, while the run still streams.
    handle = RunHandle.attach(run_id)
    rest = await all_events(handle, from_seq=last_seen + 1)
    # And from the start, once it has ended: the replay log alone.
    everything = await all_events(handle)
    message = await handle.result(timeout=RUN_WAIT)
    history = await Agent("caller", MODEL).get_history(conversation)
    requests = model_requests(scripted_model)

    done = everything[-1]
    completed = isinstance(done, RunDone) and message.content == text
    fault_report.record(
        "client SIGKILL mid-stream, reattach", **row_counts(everything, len(requests), completed)
    )

    assert isinstance(done, RunDone)
    assert done.ts > killed_at, "the run should still have been streaming at the kill"
    last = done.seq
    assert seqs(rest) == list(range(last_seen + 1, last + 1))
    assert seqs(everything) == list(range(1, last + 1))
    assert [(e.seq, e.kind) for e in everything[:last_seen]] == [
        (int(item["seq"]), item["kind"]) for item in seen
    ]
    assert [e.model_dump() for e in everything[last_seen:]] == [e.model_dump() for e in rest]
    assert sum(isinstance(e, RunStarted) for e in everything) == 1
    assert sum(isinstance(e, RunDone) for e in everything) == 1
    assert "".join(e.text for e in everything if isinstance(e, TextDelta)) == text
    assert done.message.content == message.content == text
    assert [(m.role, m.content) for m in history] == [
        ("user", "a long answer, please"),
        ("assistant", text),
    ]
    assert len(requests) == 1


async def test_a_run_whose_caller_vanished_still_completes(
    agents: Settings,
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    fault_report: FaultReport,
) -> None:
    # No worker consumes the private queue yet, so the caller dies before any event exists.
    settings = get_client().settings
    assert settings.queue != agents.queue
    scripted_model.script(Reply("finished without its caller"), model=SCRIPTED_MODEL)
    conversation = uuid.uuid4().hex

    async with caller(settings, "submit", conversation, "nobody waits for me") as client:
        run_id = str((await client.line())["run_id"])
        await client.kill()

    handle = RunHandle.attach(run_id)
    state = aioredis.Redis.from_url(settings.redis_url)
    try:
        assert await state.llen(Keys(settings.key_prefix).run_log(run_id)) == 0
    finally:
        await state.aclose()
    assert await handle.status() == "queued"

    private_worker(concurrency=2)
    events = await all_events(handle)
    message = await handle.result(timeout=RUN_WAIT)
    history = await Agent("caller", MODEL).get_history(conversation)
    requests = model_requests(scripted_model)

    completed = isinstance(events[-1], RunDone) and message.content == "finished without its caller"
    fault_report.record(
        "caller SIGKILL right after submit", **row_counts(events, len(requests), completed)
    )

    assert isinstance(events[-1], RunDone)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert sum(isinstance(e, RunStarted) for e in events) == 1
    assert message.content == "finished without its caller"
    assert [(m.role, m.content) for m in history] == [
        ("user", "nobody waits for me"),
        ("assistant", "finished without its caller"),
    ]
    assert len(requests) == 1
