"""Rows 6 and 7: Team fan-out and TeamRun overhead, measured side by side in one run.

6. A Team of 10 against one of its members alone, with a scripted model answering after
   300 ms: the ratio shows how much of the members' work overlaps (1.0 = perfectly).
7. A TeamRun of 5 `test:echo` stages against 5 sequential `agent.run` calls.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from figures import Row, part_main, ratio_row, size
from stack import agents_stack, model_server

from celery_agents import Agent, Team, TeamRun

LATENCY = 0.3
Make = Callable[[], Awaitable[Any]]


async def timed(make: Make) -> float:
    started = time.perf_counter()
    await make()
    return (time.perf_counter() - started) * 1000


async def interleaved(rounds: int, a: Make, b: Make) -> tuple[float, float]:
    """Median milliseconds of ``a`` and of ``b``, alternating so drift hits both alike."""
    first: list[float] = []
    second: list[float] = []
    for _ in range(rounds):
        first.append(await timed(a))
        second.append(await timed(b))
    return statistics.median(first), statistics.median(second)


def measure() -> list[Row]:
    rounds = size(8, 3, "BENCH_TEAM_ROUNDS")
    with (
        model_server(latency=LATENCY) as slow_url,
        agents_stack(concurrency=32, providers={"slow": {"base_url": slow_url}}),
    ):
        members = [Agent(f"m{i}", "slow:m") for i in range(10)]
        team = Team(members)
        stages = [Agent(f"s{i}", "test:echo") for i in range(5)]
        chain = TeamRun(stages)

        async def sequential() -> None:
            for stage in stages:
                await stage.run("x", store_history=False)

        async def run() -> tuple[tuple[float, float], tuple[float, float]]:
            await team.run("warm", store_history=False)
            await chain.run("warm", store_history=False)
            await sequential()
            fan = await interleaved(
                rounds,
                lambda: team.run("x", store_history=False),
                lambda: members[0].run("x", store_history=False),
            )
            pipeline = await interleaved(
                rounds * 3, lambda: chain.run("x", store_history=False), sequential
            )
            return fan, pipeline

        (team_ms, one_ms), (chain_ms, seq_ms) = asyncio.run(run())
    return [
        ratio_row(
            "6",
            "Team of 10 (300 ms model) vs one member alone",
            "ms",
            team_ms,
            one_ms,
            at_most=1.3,
            note=f"medians of {rounds} interleaved rounds; bare = one member's agent.run",
        ),
        ratio_row(
            "7",
            "TeamRun of 5 test:echo vs 5 sequential agent.run",
            "ms",
            chain_ms,
            seq_ms,
            at_most=1.0,
            note=f"medians of {rounds * 3} interleaved rounds; bare = 5 awaited agent.run",
        ),
    ]


if __name__ == "__main__":
    part_main(measure)
