"""Our side of a part: a private Redis, a manifest, celery-agents workers and the facade
pointed at them; and the scripted model server (in this process or in its own)."""

from __future__ import annotations

import asyncio
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from celery_agents import Agent, Settings, configure
from celery_agents.embedded.redis_server import RedisServer, start_redis_server
from celery_agents.embedded.worker import WorkerProcess, start_worker
from celery_agents.facade.client import shutdown
from celery_agents.testing.scripted_server import ScriptedModelServer


@dataclass
class Stack:
    redis: RedisServer
    manifest: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.redis.url


def our_pool() -> str:
    """The pool our workers run (the project's default, ``Settings.worker_pool``)."""
    return Settings().worker_pool


@contextmanager
def agents_stack(
    *,
    workers: int = 1,
    concurrency: int = 8,
    providers: dict[str, dict[str, Any]] | None = None,
    tools: dict[str, str] | None = None,
    worker_env: dict[str, str] | None = None,
    manifest_extra: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Stack]:
    """A private Redis, ``workers`` threads-pool workers and the facade configured on them
    (``settings``: extra ``Settings`` fields for the facade; ``tools``: the manifest's, which
    the workers import; ``manifest_extra``: more of it, e.g. agents and tenants). Everything
    stops on exit."""
    with ExitStack() as stack:
        redis = start_redis_server()
        stack.callback(redis.stop)
        manifest = redis.workdir / "bench-agents.yaml"
        declared = {"providers": providers or {}, "tools": tools or {}, **(manifest_extra or {})}
        manifest.write_text(yaml.safe_dump(declared))
        ours = Stack(redis, manifest)
        # The run store is on, as it is by default, in a file of the part's own.
        store = {"CELERY_AGENTS_STORE_URL": str(redis.workdir / "runs.db"), **(worker_env or {})}
        settings.setdefault("store_url", store["CELERY_AGENTS_STORE_URL"])
        for _ in range(workers):
            worker = start_worker(
                redis.url, manifest=manifest, concurrency=concurrency, extra_env=store
            )
            stack.callback(worker.stop)
            ours.workers.append(worker)
        configure(Settings(redis_url=redis.url, manifest=manifest, **settings))
        stack.callback(shutdown)  # runs first: let go of Redis before it stops
        yield ours


@contextmanager
def model_server(
    *, latency: float = 0.0, token_delay: float = 0.0, own_process: bool = False
) -> Iterator[str]:
    """A scripted OpenAI-compatible model server (Echo); yields its base URL.

    ``own_process`` keeps its connections, threads and memory out of this process (for
    figures about this process, and for hundreds of concurrent requests).
    """
    if not own_process:
        server = ScriptedModelServer(latency=latency, token_delay=token_delay).start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    argv = [sys.executable, "-m", "celery_agents.testing.scripted_server"]
    argv += ["--latency", str(latency), "--token-delay", str(token_delay)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=30):
                raise RuntimeError("the scripted model server did not start within 30 s")
        url = process.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the scripted model server said {url!r}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_many(agent: Agent, count: int, in_flight: int, prompt: str = "x") -> float:
    """Seconds for ``count`` runs of ``agent``, at most ``in_flight`` awaited at once."""
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            await agent.run(prompt, store_history=False)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(one())
    return time.perf_counter() - started
