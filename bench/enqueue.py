"""Row 9: enqueue rate from one client: `agent.submit` calls/s vs bare
``noop.apply_async(ignore_result=True)`` calls/s, awaited one after another, in interleaved
blocks. No worker consumes: this is the send side.

Like for like: our client subscribes to no result (it follows the run's events), so the bare
side does not either. ``delay()``, which also subscribes to its result through the Redis
result backend, is measured too, for the note.
"""

from __future__ import annotations

import asyncio
import time

import bare_app
from figures import Row, part_main, ratio_row, size
from stack import agents_stack

from celery_agents import Agent


async def submit_block(agent: Agent, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await agent.submit("x", store_history=False)
    return time.perf_counter() - started


def bare_block(count: int, *, ignore_result: bool = False) -> float:
    started = time.perf_counter()
    for _ in range(count):
        if ignore_result:
            bare_app.noop.apply_async(ignore_result=True)
        else:
            bare_app.noop.delay()
    return time.perf_counter() - started


async def interleaved(agent: Agent, blocks: int, per_block: int) -> tuple[float, float, float]:
    await submit_block(agent, 50)  # warm: connections, producer pool
    bare_block(50)
    ours = bare = no_result = 0.0
    for _ in range(blocks):
        bare += bare_block(per_block)
        ours += await submit_block(agent, per_block)
        no_result += bare_block(per_block, ignore_result=True)
    return ours, bare, no_result


def measure() -> list[Row]:
    total = size(5000, 1000, "BENCH_ENQUEUE_CALLS")
    blocks = 5
    per_block = total // blocks
    with agents_stack(workers=0) as stack:
        bare_app.use_redis(stack.url)
        agent = Agent("enqueue", "test:echo")
        ours, bare, no_result = asyncio.run(interleaved(agent, blocks, per_block))
    calls = blocks * per_block
    return [
        ratio_row(
            "9",
            "enqueue: agent.submit vs apply_async(ignore_result=True), one client",
            "calls/s",
            calls / ours,
            calls / no_result,
            note=f"{calls} sequential calls each, {blocks} interleaved blocks; bare delay() "
            f"(subscribes to its result): {calls / bare:.0f} calls/s",
        )
    ]


if __name__ == "__main__":
    part_main(measure)
