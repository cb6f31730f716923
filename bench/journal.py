"""Row 4, journal on vs off: the same runs as row 4 (a scripted model that answers after 1 s,
200 in flight, one worker), once on workers that journal each step and once on workers that do
not (``CELERY_AGENTS_JOURNAL=false``), alternated twice, best of each. A run of a model call
and a tool call journals three steps; these runs journal one (the model's answer), read back by
nobody: the cost is one fenced HSET per step and the fingerprint of the request."""

from __future__ import annotations

import asyncio

from figures import Row, part_main, ratio_row, size
from stack import agents_stack, model_server, run_many

from celery_agents import Agent

LATENCY = 1.0
IN_FLIGHT = 200


def rate(model_url: str, runs: int, *, journal: bool) -> float:
    with agents_stack(
        concurrency=IN_FLIGHT,
        providers={"scripted": {"base_url": model_url}},
        worker_env={"CELERY_AGENTS_JOURNAL": "true" if journal else "false"},
    ):
        agent = Agent("io", "scripted:m")
        asyncio.run(run_many(agent, 20, 20))  # warm: model client, connections
        return runs / asyncio.run(run_many(agent, runs, IN_FLIGHT))


def measure() -> list[Row]:
    runs = size(1000, 400, "BENCH_IO_RUNS")
    on: list[float] = []
    off: list[float] = []
    with model_server(latency=LATENCY, own_process=True) as model_url:
        for _ in range(2):
            off.append(rate(model_url, runs, journal=False))
            on.append(rate(model_url, runs, journal=True))
    return [
        ratio_row(
            "4",
            f"journal on vs off, {IN_FLIGHT} in flight, 1 s model",
            "runs/s",
            max(on),
            max(off),
            at_least=0.9,
            note=f"{runs} runs per try, one worker -c {IN_FLIGHT}, alternated: on "
            f"{', '.join(f'{r:.0f}' for r in on)}/s, off {', '.join(f'{r:.0f}' for r in off)}/s",
        )
    ]


if __name__ == "__main__":
    part_main(measure)
