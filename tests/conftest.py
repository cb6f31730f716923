from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from celery_agents import Settings, configure
from celery_agents.embedded.worker import WorkerProcess, start_beat, start_worker
from celery_agents.testing.plugin import TEST_WORKER_ENV
from celery_agents.testing.scripted_server import ScriptedModelServer
from tests.support.store import private_database

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


@pytest.fixture(scope="session")
def celery_agents_manifest(_scripted_model_server: ScriptedModelServer) -> dict[str, Any]:
    return {
        "providers": {
            "scripted": {"base_url": _scripted_model_server.url, "prices": {"priced": PRICE}},
            "scripted_tools": {"base_url": _scripted_model_server.url, "structured_output": "tool"},
            "keyed": {"base_url": _scripted_model_server.url, "api_key_env": "KEYED_API_KEY"},
            "limited": {
                "base_url": _scripted_model_server.url,
                "limits": {"requests_per_minute": 300, "window_seconds": 2},
            },
            "capped": {"base_url": _scripted_model_server.url, "limits": {"max_concurrent": 2}},
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
            "pause": "tests.support.tools:pause",
            "probe": "tests.support.signals:probe",
            "charge": "tests.support.tools:charge",
            "stuck_charge": "tests.support.tools:stuck_charge",
            "stuck_lookup": "tests.support.tools:stuck_lookup",
        },
        "agents": {
            "analyst": {"model": "scripted:analyst", "system_prompt": "You analyse."},
            "critic": {"model": "test:echo", "system_prompt": "You criticise."},
            "writer": {"model": "test:echo"},
        },
        "tenants": {
            "acme": {"daily_token_budget": 100},
            "small": {"max_concurrent_runs": 2},
            "other": {},
            # the HTTP API's tenants (tests/test_http_api.py)
            "northwind": {},
            "globex": {},
            "initech": {},
            "ops": {},
            "teamco": {"daily_token_budget": 600},
            "failing": {"daily_token_budget": 100},
            "racing": {"daily_token_budget": 100},
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
async def redis_client(agents_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client of the session's Redis, closed after the test."""
    client = aioredis.Redis.from_url(agents_redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def postgres_store() -> Iterator[str]:
    """A database of this test's own on the machine's PostgreSQL (skipped without one,
    failed when CI=true): its store URL."""
    yield from private_database()


@pytest.fixture
def private_worker(agents: Settings) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on a queue of this test's own (the facade is pointed at it), so a test
    can stop, kill or reconfigure them without touching the session's worker.

    ``start(concurrency=, extra_env=, broker=, args=, key_prefix=)``; ``broker`` and
    ``key_prefix`` move the facade there too (a prefix of its own keeps the session's worker
    out: its deliverer, say, would take this test's deliveries), ``args`` are more options of
    ``celery-agents worker``.
    """
    queue = f"private-{uuid.uuid4().hex[:8]}"
    started: list[WorkerProcess] = []

    def start(
        *,
        concurrency: int = 16,
        extra_env: dict[str, str] | None = None,
        broker: str | None = None,
        args: Sequence[str] = (),
        key_prefix: str | None = None,
    ) -> WorkerProcess:
        env = {**TEST_WORKER_ENV, "CELERY_AGENTS_QUEUE": queue, **(extra_env or {})}
        broker = broker or agents.broker_url
        if broker:
            env["CELERY_AGENTS_BROKER_URL"] = broker
        worker = start_worker(
            agents.redis_url,
            manifest=agents.manifest,
            concurrency=concurrency,
            extra_env=env,
            args=args,
            key_prefix=key_prefix or agents.key_prefix,
        )
        started.append(worker)
        update = {
            "queue": queue,
            "broker_url": broker,
            "key_prefix": key_prefix or agents.key_prefix,
        }
        configure(agents.model_copy(update=update))
        return worker

    configure(agents.model_copy(update={"queue": queue}))
    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
        configure(agents)


class Stack:
    """A worker and beats of one test's own (own key prefix and queue), so a test can kill
    or double the beat without touching the session's."""

    def __init__(self, redis_url: str, manifest: Path, env: dict[str, str] | None = None) -> None:
        self.prefix = f"stack-{uuid.uuid4().hex[:8]}"
        self.redis_url = redis_url
        self.manifest = manifest
        self.env = {
            **TEST_WORKER_ENV,
            "CELERY_AGENTS_QUEUE": self.prefix,
            "CELERY_AGENTS_RESULT_TTL": "30",
            **(env or {}),
        }
        self.processes: list[WorkerProcess] = []
        self.settings = Settings(
            redis_url=redis_url,
            manifest=manifest,
            key_prefix=self.prefix,
            queue=self.prefix,
            result_ttl=30,
        )

    def worker(self) -> WorkerProcess:
        worker = start_worker(
            self.redis_url, manifest=self.manifest, extra_env=self.env, key_prefix=self.prefix
        )
        self.processes.append(worker)
        return worker

    def beat(self, *, wait: bool = True) -> WorkerProcess:
        beat = start_beat(
            self.redis_url,
            manifest=self.manifest,
            extra_env=self.env,
            key_prefix=self.prefix,
            wait=wait,
        )
        self.processes.append(beat)
        return beat


def make_stack(
    redis_url: str,
    manifest: Path,
    tmp: Path,
    *,
    schedules: dict[str, Any] | None = None,
    agents: dict[str, Any] | None = None,
    beat: bool = True,
    env: dict[str, str] | None = None,
) -> Stack:
    if schedules or agents:
        data = yaml.safe_load(manifest.read_text())
        data = {**data, "agents": {**data["agents"], **(agents or {})}}
        manifest = tmp / f"schedules-{uuid.uuid4().hex[:6]}.yaml"
        manifest.write_text(yaml.safe_dump({**data, "schedules": schedules or {}}))
    made = Stack(redis_url, manifest, env)
    try:
        made.worker()
        if beat:
            made.beat()
    except BaseException:  # a beat that did not start leaves no worker behind
        end_stack(made)
        raise
    return made


def end_stack(made: Stack) -> None:
    for process in made.processes:
        process.kill()


@pytest.fixture
def stack(
    agents_redis_url: str, celery_agents_manifest_path: Path, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    """``stack(schedules=..., agents=..., env=...)``: a private worker + beat setup (its
    manifest with those schedules and more agents, more environment for both), the facade
    pointed at it."""
    made: list[Stack] = []

    def make(
        *,
        schedules: dict[str, Any] | None = None,
        agents: dict[str, Any] | None = None,
        beat: bool = True,
        env: dict[str, str] | None = None,
    ) -> Stack:
        s = make_stack(
            agents_redis_url,
            celery_agents_manifest_path,
            tmp_path,
            schedules=schedules,
            agents=agents,
            beat=beat,
            env=env,
        )
        made.append(s)
        configure(s.settings)
        return s

    try:
        yield make
    finally:
        for s in made:
            end_stack(s)
        configure(Settings(redis_url=agents_redis_url, manifest=celery_agents_manifest_path))


@pytest.fixture(scope="module")
def _module_stack(
    agents_redis_url: str,
    celery_agents_manifest_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    made = make_stack(
        agents_redis_url, celery_agents_manifest_path, tmp_path_factory.mktemp("stack")
    )
    try:
        yield made
    finally:
        end_stack(made)


@pytest.fixture
def shared_stack(
    _module_stack: Stack, agents_redis_url: str, celery_agents_manifest_path: Path
) -> Iterator[Stack]:
    """A private worker + beat shared by a module's tests that leave the beat alone."""
    configure(_module_stack.settings)
    try:
        yield _module_stack
    finally:
        configure(Settings(redis_url=agents_redis_url, manifest=celery_agents_manifest_path))
