"""Row 3: throughput of one worker, `test:echo` runs vs bare no-op tasks, same pool and
concurrency, end to end (first send to last result), in interleaved blocks.

Ours: ``agent.run`` with a bounded number in flight (the client waits on events, so there is
no result polling). Bare: ``noop.delay()`` for the whole block, then ``get()`` on every result.
"""

from __future__ import annotations

import asyncio
import time

import bare_app
from figures import Row, part_main, ratio_row, size
from stack import agents_stack, our_pool, run_many

from celery_agents import Agent

CONCURRENCY = 8
IN_FLIGHT = 100


def bare_many(count: int) -> float:
    started = time.perf_counter()
    results = [bare_app.noop.delay() for _ in range(count)]
    for result in results:
        result.get(timeout=120)
    return time.perf_counter() - started


async def interleaved(agent: Agent, blocks: int, per_block: int) -> tuple[float, float]:
    ours = bare = 0.0
    for _ in range(blocks):
        bare += bare_many(per_block)
        ours += await run_many(agent, per_block, IN_FLIGHT)
    return ours, bare


def measure() -> list[Row]:
    total = size(5000, 1000, "BENCH_THROUGHPUT_RUNS")
    blocks = 5
    with agents_stack(concurrency=CONCURRENCY) as stack:
        bare = bare_app.start_bare_worker(stack.url, concurrency=CONCURRENCY)
        try:
            agent = Agent("bench", "test:echo")
            asyncio.run(run_many(agent, 50, IN_FLIGHT))  # warm up
            ours, bare_s = asyncio.run(interleaved(agent, blocks, total // blocks))
        finally:
            bare.stop()
    runs = blocks * (total // blocks)
    return [
        ratio_row(
            "3",
            f"throughput, {runs} runs, one worker",
            "runs/s",
            runs / ours,
            runs / bare_s,
            at_least=0.7,
            note=f"ours: {our_pool()} pool -c {CONCURRENCY}, {IN_FLIGHT} agent.run in flight; "
            f"bare: threads pool -c {CONCURRENCY}, "
            f"delay() x {total // blocks} then get() each; {blocks} interleaved blocks",
        )
    ]


if __name__ == "__main__":
    part_main(measure)
