"""run_in_background(interval=1): delay from the call to the first run, and interval jitter.

The first run's delay is measured from the call to the run's start (its message's timestamp
minus its response time); the jitter is how far each later run started from the moment the
seed's semantics give it (the previous run's end + interval).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from figures import percentile

from celery_agents import Agent, Settings, configure
from celery_agents.embedded.redis_server import start_redis_server
from celery_agents.embedded.worker import start_beat, start_worker
from celery_agents.facade.client import shutdown

RUNS = int(os.environ.get("BENCH_BACKGROUND_RUNS", "10"))
ENTRIES = int(os.environ.get("BENCH_BACKGROUND_ENTRIES", "5"))
INTERVAL = 1.0


async def one_entry(index: int) -> tuple[float, list[float]]:
    agent = Agent(f"bg{index}", "test:echo")
    called = time.time()
    stats = await agent.run_in_background(
        "x", max_count=RUNS, interval=INTERVAL, store_history=False
    )
    await stats.wait()
    starts = [m.timestamp.timestamp() - (m.response_time or 0) for m in stats.messages]
    ends = [m.timestamp.timestamp() for m in stats.messages]
    jitter = [starts[i + 1] - (ends[i] + INTERVAL) for i in range(len(starts) - 1)]
    return starts[0] - called, jitter


def main() -> None:
    redis = start_redis_server()
    worker = start_worker(redis.url, concurrency=16)
    beat = start_beat(redis.url)
    configure(Settings(redis_url=redis.url))
    try:

        async def run() -> None:
            results = await asyncio.gather(*(one_entry(i) for i in range(ENTRIES)))
            first = [r[0] * 1000 for r in results]
            jitter = [j * 1000 for r in results for j in r[1]]
            print(f"run_in_background(interval={INTERVAL:g}), {ENTRIES} entries x {RUNS} runs")
            print(f"{'figure':<44}{'p50 ms':>9}{'p95 ms':>9}")
            print(
                f"{'call -> first run started':<44}{statistics.median(first):>9.1f}"
                f"{percentile(first, 0.95):>9.1f}"
            )
            print(
                f"{'interval jitter (start - (prev end + interval))':<44}"
                f"{statistics.median(jitter):>9.1f}{percentile(jitter, 0.95):>9.1f}"
            )

        asyncio.run(run())
    finally:
        shutdown()  # let go of Redis before it stops
        beat.stop()
        worker.stop()
        redis.stop()


if __name__ == "__main__":
    main()
