from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_agents import Settings, configure
from celery_agents.embedded.worker import WorkerProcess, start_worker
from celery_agents.testing.plugin import TEST_WORKER_ENV
from celery_agents.testing.scripted_server import ScriptedModelServer

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


@pytest.fixture(scope="session")
def celery_agents_manifest(_scripted_model_server: ScriptedModelServer) -> dict[str, Any]:
    return {
        "providers": {
            "scripted": {"base_url": _scripted_model_server.url, "prices": {"priced": PRICE}},
            "scripted_tools": {"base_url": _scripted_model_server.url, "structured_output": "tool"},
            "blind": {
                "base_url": _scripted_model_server.url,
                "models": {"small": {"vision": False, "context_tokens": 2048}},
            },
        },
        "tools": {
            "add": "tests.support.tools:add",
            "shout": "tests.support.tools:shout",
            "slow_sync": "tests.support.tools:slow_sync",
            "broken": "tests.support.tools:broken",
            "fetch_logs": "tests.support.tools:fetch_logs",
            "get_metrics": "tests.support.tools:get_metrics",
            "sleepy": "tests.support.tools:sleepy",
        },
        "agents": {
            "analyst": {"model": "scripted:analyst", "system_prompt": "You analyse."},
            "critic": {"model": "test:echo", "system_prompt": "You criticise."},
            "writer": {"model": "test:echo"},
        },
        "teams": {
            "reviewers": {
                "mode": "parallel",
                "members": ["analyst", "critic"],
                "shared_prompt": "Be brief.",
            },
            "pipeline": {"mode": "sequential", "members": ["reviewers", "writer"]},
        },
    }


@pytest.fixture
def private_worker(
    agents_redis_url: str, celery_agents_manifest_path: Path
) -> Iterator[Callable[[], WorkerProcess]]:
    """Start workers on a queue of this test's own (the facade is pointed at it), so a test
    can stop or kill them without touching the session's worker."""
    queue = f"private-{uuid.uuid4().hex[:8]}"
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = start_worker(
            agents_redis_url,
            manifest=celery_agents_manifest_path,
            extra_env={**TEST_WORKER_ENV, "CELERY_AGENTS_QUEUE": queue},
        )
        started.append(worker)
        return worker

    configure(
        Settings(redis_url=agents_redis_url, manifest=celery_agents_manifest_path, queue=queue)
    )
    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
        configure(Settings(redis_url=agents_redis_url, manifest=celery_agents_manifest_path))
