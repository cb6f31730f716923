"""Round trip of `agent.run` with `test:echo` vs bare Celery `noop.delay().get()`.

Both run against one private Redis, each with a threads-pool worker of the same concurrency,
interleaved in blocks so drifting CPU speed hits both sides alike. Prints p50/p99 and ratios.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from figures import percentile

from celery_agents import Agent, Settings, configure
from celery_agents.embedded.redis_server import start_redis_server
from celery_agents.embedded.worker import start_worker
from celery_agents.facade.client import shutdown

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
PER_ROUND = int(os.environ.get("BENCH_PER_ROUND", "50"))
CONCURRENCY = 8


def start_bare_worker(redis_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BENCH_REDIS_URL": redis_url,
        "PYTHONPATH": str(Path(__file__).resolve().parent),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bare_app",
            "worker",
            "-P",
            "threads",
            "-c",
            str(CONCURRENCY),
            "-Q",
            "bare",
            "-l",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process


def main() -> None:
    redis = start_redis_server()
    ours = start_worker(redis.url, concurrency=CONCURRENCY)
    os.environ["BENCH_REDIS_URL"] = redis.url
    import bare_app

    bare = start_bare_worker(redis.url)
    configure(Settings(redis_url=redis.url))
    agent = Agent("bench", "test:echo")
    try:
        bare_app.noop.delay().get(timeout=30)  # both sides warm before measuring
        agent.run_sync("warm up", store_history=False)
        ours_ms: list[float] = []
        bare_ms: list[float] = []

        async def our_block() -> None:
            for _ in range(PER_ROUND):
                started = time.perf_counter()
                await agent.run("ping", store_history=False)
                ours_ms.append((time.perf_counter() - started) * 1000)

        for _ in range(ROUNDS):
            for _ in range(PER_ROUND):
                started = time.perf_counter()
                bare_app.noop.delay().get(timeout=30)
                bare_ms.append((time.perf_counter() - started) * 1000)
            asyncio.run(our_block())

        print(f"round trip over {len(ours_ms)} runs each ({CONCURRENCY}-thread workers, one Redis)")
        print(f"{'figure':<34}{'ours':>10}{'bare':>10}{'ratio':>8}")
        for name, q in (("p50 ms", 0.5), ("p99 ms", 0.99)):
            o, b = percentile(ours_ms, q), percentile(bare_ms, q)
            print(f"{'agent.run vs delay().get() ' + name:<34}{o:>10.2f}{b:>10.2f}{o / b:>8.2f}")
        print(f"{'mean ms':<34}{statistics.mean(ours_ms):>10.2f}{statistics.mean(bare_ms):>10.2f}")
    finally:
        shutdown()  # let go of Redis before it stops
        bare.terminate()
        bare.wait(10)
        ours.stop()
        redis.stop()


if __name__ == "__main__":
    main()
