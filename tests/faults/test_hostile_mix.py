"""Hostile messages in the same queue as real work: none of them runs anything, each one that
names a run ends that run with a clear error, and every real run completes once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celery_agents import Agent, CeleryAgentsError, RunHandle
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.errors import InvalidPayloadError, UnknownProviderError
from celery_agents.testing.scripted_server import ScriptedModelServer
from tests.test_hostile_input import MakesDirectory, publish_raw, run_payload, task_body

pytestmark = pytest.mark.faults

REAL_RUNS = 20


async def test_hostile_messages_among_real_runs_run_nothing(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    tmp_path: Path,
    fault_report: Any,
) -> None:
    private_worker(concurrency=4)
    marker = tmp_path / "pwned"
    hostile: dict[str, tuple[Any, type[CeleryAgentsError]]] = {
        "bogus field": ({"exec": "import os"}, InvalidPayloadError),
        "unknown provider": ({"agent": {"name": "x", "model": "os:system"}}, UnknownProviderError),
        "oversized prompt": ({"prompt": "p" * 200_001}, InvalidPayloadError),
        "extra kwargs": (None, InvalidPayloadError),
    }
    agent = Agent("real", "scripted:mix")
    handles: list[RunHandle] = []
    crafted: dict[str, tuple[str, type[CeleryAgentsError]]] = {}
    publish_raw(task_body(MakesDirectory(marker)), task_id=uuid.uuid4().hex, serializer="pickle")
    for i in range(REAL_RUNS):
        handles.append(await agent.submit(f"real {i}", store_history=False))
        if i % 5 == 0 and hostile:
            name, (change, error) = hostile.popitem()
            run_id = uuid.uuid4().hex
            payload = run_payload(run_id)
            if change is None:
                args, kwargs, embed = task_body(payload)
                publish_raw((args, {**kwargs, "evil": 1}, embed), task_id=run_id)
            else:
                publish_raw(task_body({**payload, **change}), task_id=run_id)
            crafted[name] = (run_id, error)

    answers = await asyncio.gather(*(h.result(timeout=30) for h in handles))
    refused: dict[str, bool] = {}
    for name, (run_id, error) in crafted.items():
        try:
            await RunHandle.attach(run_id).result(timeout=30)
            refused[name] = False
        except error:
            refused[name] = True
    real_calls = [r for r in scripted_model.requests if r.model == "mix"]
    completed = sum(a.content == f"real {i}" for i, a in enumerate(answers))
    fault_report.record(
        f"{len(crafted) + 1} hostile messages among {REAL_RUNS} runs (none ran)",
        injected=len(crafted) + 1,
        started=REAL_RUNS,
        completed=completed,
        lost=REAL_RUNS - completed,
        duplicated=max(len(real_calls) - REAL_RUNS, 0),
    )
    assert completed == REAL_RUNS
    assert refused == dict.fromkeys(crafted, True)
    assert not marker.exists()  # the pickle was never loaded
    assert len(real_calls) == REAL_RUNS  # hostile messages made no model call
    assert scripted_model.request_count == REAL_RUNS
