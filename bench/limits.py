"""Extra row: what the fleet-wide limiter costs a run when under the limit: limiter on vs off.

Two providers point at the same scripted model server (no latency): one with limits far above
the load, one without any. Runs alternate between them so both see the same machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from figures import Row, part_main, percentile, ratio_row, size
from stack import agents_stack, model_server

from celery_agents import Agent

LIMITS = {"requests_per_minute": 1_000_000, "tokens_per_minute": 1e9, "max_concurrent": 1000}


async def alternate(on: Agent, off: Agent, runs: int) -> tuple[list[float], list[float]]:
    await on.run("warm", store_history=False)
    await off.run("warm", store_history=False)
    times: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(runs):
        for name, agent in (("on", on), ("off", off)):
            started = time.perf_counter()
            await agent.run("x", store_history=False)
            times[name].append((time.perf_counter() - started) * 1000)
    return times["on"], times["off"]


def measure() -> list[Row]:
    runs = size(300, 100, "BENCH_LIMIT_RUNS")
    with model_server() as url:
        providers: dict[str, dict[str, Any]] = {
            "free": {"base_url": url},
            "limited": {"base_url": url, "limits": LIMITS},
        }
        with agents_stack(providers=providers):
            on, off = asyncio.run(alternate(Agent("on", "limited:m"), Agent("off", "free:m"), runs))
    return [
        ratio_row(
            "x",
            "limiter on vs off, agent.run p50 (extra)",
            "ms",
            percentile(on, 0.5),
            percentile(off, 0.5),
            note=f"{runs} runs each, alternating; scripted model without latency; "
            f"bare = the same provider without limits; difference "
            f"{percentile(on, 0.5) - percentile(off, 0.5):.2f} ms",
        )
    ]


if __name__ == "__main__":
    part_main(measure)
