"""Row 4: I/O concurrency of one worker process (the project's default pool): a scripted model
that answers after 1 s, 200 runs in flight, against bare Celery on the same pool and
concurrency (threads ``-c 200``) whose task sleeps 1 s, as a blocking model call would, with
its result stored as ours is. The notes also show the bound (200 runs/s), prefork ``-c 2``, and
show the model calls alone, 200 in flight through the worker's own HTTP pools in this process
(no Celery, no Redis): the ceiling of the HTTP stack on this host; and the same runs on a model
that waits 1 s on the worker's loop (no HTTP): the ceiling of Celery and our run path.

The worker's memory is read from /proc (VmRSS) idle (after a warm-up) and at its peak while
the runs are in flight; the growth divided by the runs in flight is the cost of one run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import bare_app
from bench_models import WAIT_MODEL
from figures import Row, part_main, ratio_row, rss_kib, size, threads_of, value_row
from stack import agents_stack, model_server, our_pool, run_many

from celery_agents import Agent, Settings
from celery_agents.config.manifest import AgentsManifest
from celery_agents.llm.agent_loop import run_agent
from celery_agents.llm.providers import ModelFactory
from celery_agents.testing.emitter import Collected

LATENCY = 1.0
IN_FLIGHT = 200


class PeakSampler:
    """The highest VmRSS and thread count of a process, read every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every = pid, every
        self.rss = self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.rss = max(self.rss, rss_kib(self.pid))
            self.threads = max(self.threads, threads_of(self.pid))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bare_rate(url: str, pool: str, concurrency: int, tasks: int) -> float:
    """Tasks/s of a bare worker whose task sleeps ``LATENCY`` s."""
    worker = bare_app.start_bare_worker(url, pool=pool, concurrency=concurrency)
    try:
        started = time.perf_counter()
        results = [bare_app.sleep.delay(LATENCY) for _ in range(tasks)]
        for result in results:
            result.get(timeout=120)
        return tasks / (time.perf_counter() - started)
    finally:
        worker.stop()


def model_calls_alone(url: str, calls: int) -> float:
    """Calls/s of the scripted model, ``IN_FLIGHT`` at once, through a ``ModelFactory``."""
    manifest = AgentsManifest.model_validate({"providers": {"scripted": {"base_url": url}}})

    async def run() -> float:
        models = ModelFactory(Settings(), manifest)
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one() -> None:
            async with slots:
                await run_agent(await models.get("scripted:m"), "x", emit=Collected())

        try:
            await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))  # warm: connections
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(calls)))
            return calls / (time.perf_counter() - started)
        finally:
            await models.aclose()

    return asyncio.run(run())


def without_http(runs: int) -> float:
    """Runs/s of the same runs on ``test:wait1s``: a worker-side model that waits 1 s."""
    here = str(Path(__file__).resolve().parent)
    with agents_stack(
        concurrency=IN_FLIGHT,
        tools={"noop": "bench_models:noop"},  # loads bench_models, which registers the model
        worker_env={"PYTHONPATH": here},
    ):
        agent = Agent("io", WAIT_MODEL)
        asyncio.run(run_many(agent, 20, 20))
        return runs / asyncio.run(run_many(agent, runs, IN_FLIGHT))


def measure() -> list[Row]:
    runs = size(1000, 400, "BENCH_IO_RUNS")
    with (
        model_server(latency=LATENCY, own_process=True) as model_url,
        agents_stack(concurrency=IN_FLIGHT, providers={"scripted": {"base_url": model_url}}) as s,
    ):
        pid = s.workers[0].process.pid
        agent = Agent("io", "scripted:m")
        asyncio.run(run_many(agent, 20, 20))  # warm: model client, connections
        idle_rss, idle_threads = rss_kib(pid), threads_of(pid)
        with PeakSampler(pid) as peak:
            seconds = asyncio.run(run_many(agent, runs, IN_FLIGHT))
        prefork = bare_rate(s.url, "prefork", 2, size(10, 4))
        threads = bare_rate(s.url, "threads", IN_FLIGHT, size(1000, 400))
        alone = model_calls_alone(model_url, runs)
    no_http = without_http(runs)
    rate = runs / seconds
    bound = IN_FLIGHT / LATENCY
    per_run = (peak.rss - idle_rss) / IN_FLIGHT
    return [
        ratio_row(
            "4",
            f"I/O concurrency, {IN_FLIGHT} in flight, 1 s model",
            "runs/s",
            rate,
            threads,
            at_least=0.9,
            note=f"{runs} runs, one worker, {our_pool()} pool -c {IN_FLIGHT}: "
            f"{rate / bound:.2f} of the bound ({bound:g}/s); bare = Celery threads "
            f"-c {IN_FLIGHT}, task sleeps 1 s, result stored; bare prefork -c 2: "
            f"{prefork:.2f}/s; the model "
            f"calls alone through the same HTTP pools (no Celery, no Redis): {alone:.0f}/s; the "
            f"same runs on a model that waits 1 s on the worker's loop (no HTTP): {no_http:.0f}/s",
        ),
        value_row(
            "4",
            "worker RSS growth per in-flight run",
            "KiB",
            per_run,
            at_most=200,
            note=f"worker VmRSS {idle_rss / 1024:.0f} MiB idle -> {peak.rss / 1024:.0f} MiB at "
            f"peak; threads {idle_threads} -> {peak.threads}",
        ),
    ]


if __name__ == "__main__":
    part_main(measure)
