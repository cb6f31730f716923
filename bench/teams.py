"""Team fan-out and TeamRun overhead, measured side by side in one run.

1. A Team of 10 against one of its members alone, with a scripted model answering after
   300 ms: the ratio shows how much of the members' work overlaps (1.0 = perfectly).
2. A TeamRun of 5 `test:echo` stages against 5 sequential `agent.run` calls.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from celery_agents import Agent, Settings, Team, TeamRun, configure
from celery_agents.embedded.redis_server import start_redis_server
from celery_agents.embedded.worker import start_worker
from celery_agents.facade.client import shutdown
from celery_agents.testing.scripted_server import ScriptedModelServer

ROUNDS = int(os.environ.get("BENCH_TEAM_ROUNDS", "8"))
LATENCY = 0.3


async def timed(make: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await make()
    return time.perf_counter() - started


async def measure(
    rounds: int, a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]]
) -> tuple[list[float], list[float]]:
    first: list[float] = []
    second: list[float] = []
    for _ in range(rounds):  # interleaved: drifting CPU speed hits both sides alike
        first.append(await timed(a))
        second.append(await timed(b))
    return first, second


def row(label: str, ours: list[float], base: list[float], base_label: str) -> None:
    o, b = statistics.median(ours) * 1000, statistics.median(base) * 1000
    print(f"{label:<44}{o:>9.1f}{b:>9.1f}{o / b:>8.2f}   (vs {base_label})")


def main() -> None:
    redis = start_redis_server()
    server = ScriptedModelServer(latency=LATENCY).start()
    manifest = Path(redis.workdir) / "bench-agents.yaml"
    manifest.write_text(yaml.safe_dump({"providers": {"scripted": {"base_url": server.url}}}))
    worker = start_worker(redis.url, manifest=manifest, concurrency=32)
    configure(Settings(redis_url=redis.url, manifest=manifest))
    try:
        members = [Agent(f"m{i}", "scripted:m") for i in range(10)]
        team = Team(members)
        stages = [Agent(f"s{i}", "test:echo") for i in range(5)]
        chain = TeamRun(stages)

        async def sequential() -> None:
            for stage in stages:
                await stage.run("x", store_history=False)

        async def run() -> None:
            await team.run("warm", store_history=False)
            await chain.run("warm", store_history=False)
            fan, one = await measure(
                ROUNDS,
                lambda: team.run("x", store_history=False),
                lambda: members[0].run("x", store_history=False),
            )
            server.latency = 0.0
            teamrun, seq = await measure(
                ROUNDS * 3, lambda: chain.run("x", store_history=False), sequential
            )
            print(f"median wall time, {ROUNDS} rounds (model latency {LATENCY * 1000:.0f} ms)")
            print(f"{'figure':<44}{'ours ms':>9}{'base ms':>9}{'ratio':>8}")
            row("Team of 10 members, run()", fan, one, "one member alone")
            row("TeamRun of 5 test:echo stages, run()", teamrun, seq, "5 sequential agent.run")

        asyncio.run(run())
    finally:
        shutdown()  # let go of Redis before it stops
        worker.stop()
        server.stop()
        redis.stop()


if __name__ == "__main__":
    main()
