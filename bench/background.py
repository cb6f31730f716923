"""Row 8: run_in_background(interval=1): delay from the call to the first run, and jitter.

The first run's delay is measured from the call to the run's start (its message's timestamp
minus its response time); the jitter is how far each later run started from the moment the
semantics give it (the previous run's end + interval).
"""

from __future__ import annotations

import asyncio
import time

from figures import Row, part_main, percentile, size, value_row
from stack import agents_stack

from celery_agents import Agent
from celery_agents.embedded.worker import start_beat

INTERVAL = 1.0


async def one_entry(index: int, runs: int) -> tuple[float, list[float]]:
    agent = Agent(f"bg{index}", "test:echo")
    called = time.time()
    stats = await agent.run_in_background(
        "x", max_count=runs, interval=INTERVAL, store_history=False
    )
    await stats.wait()
    starts = [m.timestamp.timestamp() - (m.response_time or 0) for m in stats.messages]
    ends = [m.timestamp.timestamp() for m in stats.messages]
    jitter = [starts[i + 1] - (ends[i] + INTERVAL) for i in range(len(starts) - 1)]
    return starts[0] - called, jitter


async def entries(count: int, runs: int) -> tuple[list[float], list[float]]:
    results = await asyncio.gather(*(one_entry(i, runs) for i in range(count)))
    first = [r[0] * 1000 for r in results]
    jitter = [j * 1000 for r in results for j in r[1]]
    return first, jitter


def measure() -> list[Row]:
    runs = size(10, 4, "BENCH_BACKGROUND_RUNS")
    count = size(5, 3, "BENCH_BACKGROUND_ENTRIES")
    with agents_stack(concurrency=16) as stack:
        beat = start_beat(stack.url)
        try:
            first, jitter = asyncio.run(entries(count, runs))
        finally:
            beat.stop()
    note = f"{count} entries x {runs} runs of test:echo, one beat, one worker"
    return [
        value_row(
            "8",
            "background: call -> first run started, p50",
            "ms",
            percentile(first, 0.5),
            note=note,
        ),
        value_row(
            "8", "background: call -> first run started, max", "ms", max(first), at_most=1200
        ),
        value_row("8", "background: interval jitter p50", "ms", percentile(jitter, 0.5)),
        value_row(
            "8", "background: interval jitter p95", "ms", percentile(jitter, 0.95), at_most=150
        ),
    ]


if __name__ == "__main__":
    part_main(measure)
