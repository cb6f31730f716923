"""Row 1: round trip of `agent.run` with `test:echo` vs bare Celery `noop.delay().get()`.

Both run one at a time against one private Redis, each on a worker of the same concurrency
(ours: the project's default pool; bare: Celery's threads pool), interleaved in blocks so
drifting CPU speed hits both sides alike.
"""

from __future__ import annotations

import asyncio
import time

import bare_app
from figures import Row, part_main, percentile, ratio_row, size
from stack import agents_stack, our_pool

from celery_agents import Agent

CONCURRENCY = 8


async def interleaved(agent: Agent, rounds: int, per_round: int) -> tuple[list[float], list[float]]:
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(rounds):
        for _ in range(per_round):
            started = time.perf_counter()
            bare_app.noop.delay().get(timeout=30)
            bare.append((time.perf_counter() - started) * 1000)
        for _ in range(per_round):
            started = time.perf_counter()
            await agent.run("ping", store_history=False)
            ours.append((time.perf_counter() - started) * 1000)
    return ours, bare


def measure() -> list[Row]:
    rounds = size(10, 3, "BENCH_ROUNDS")
    per_round = size(50, 30, "BENCH_PER_ROUND")
    with agents_stack(concurrency=CONCURRENCY) as stack:
        bare = bare_app.start_bare_worker(stack.url, concurrency=CONCURRENCY)
        try:
            agent = Agent("bench", "test:echo")
            agent.run_sync("warm up", store_history=False)
            ours_ms, bare_ms = asyncio.run(interleaved(agent, rounds, per_round))
        finally:
            bare.stop()
    note = (
        f"{len(ours_ms)} sequential calls each; ours: {our_pool()} pool -c {CONCURRENCY}, "
        f"bare: threads pool -c {CONCURRENCY}"
    )
    return [
        ratio_row(
            "1",
            f"agent.run round trip {name} vs delay().get()",
            "ms",
            percentile(ours_ms, q),
            percentile(bare_ms, q),
            at_most=1.2,
            note=note if q == 0.5 else "",
        )
        for name, q in (("p50", 0.5), ("p99", 0.99))
    ]


if __name__ == "__main__":
    part_main(measure)
