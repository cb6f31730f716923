"""Row 11: worker CPU per streamed run, on the offline model ``test:echo`` (no HTTP).

One worker (the project's default pool, ``-c IN_FLIGHT``) on a private Redis; the client
streams ``runs`` runs through ``agent.run_stream(...).stream()``, ``IN_FLIGHT`` at once, each
prompt ``WORDS`` words long, which ``test:echo`` answers word by word (one text delta a word).
Measured: the worker process's CPU time (user + sys, from /proc: the process with its threads,
its reaped children and any live descendants) from just before the first run to the moment
the worker is idle again after the last, less its idle rate over that window (heartbeats,
broker polling: read on the idle worker before the runs). No bare side: the figure is ours
alone, to compare before and after the agent core moves onto pydantic-ai (issue 17).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from figures import Row, part_main, size
from stack import agents_stack, our_pool

from celery_agents import Agent

IN_FLIGHT = 20
WORDS = 30
WARM_UP = 50
IDLE_SECONDS = 3.0
TICK = 1 / os.sysconf("SC_CLK_TCK")
PROMPT = " ".join(f"word{i}" for i in range(WORDS))


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command (field 3, the state, is [0])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + sys CPU of ``pid`` (all its threads, and its children it has waited for) plus
    that of its live descendants, in seconds."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat(current)
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        todo += parents.get(current, [])
    return ticks * TICK


def settle(pid: int, longest: float = 10.0) -> float:
    """Wait until the worker has spent at most one clock tick in 200 ms (idle again after the
    runs: trailing result stores and acks included); the wait's end, ``perf_counter``."""
    deadline = time.perf_counter() + longest
    last = cpu_seconds(pid)
    while time.perf_counter() < deadline:
        time.sleep(0.2)  # poll interval of a wait with a deadline
        now = cpu_seconds(pid)
        if now - last <= TICK * 1.5:
            break
        last = now
    return time.perf_counter()


async def stream_many(agent: Agent, count: int) -> list[int]:
    """Stream ``count`` runs, ``IN_FLIGHT`` at once; the text deltas each one received."""
    slots = asyncio.Semaphore(IN_FLIGHT)
    deltas: list[int] = []

    async def one() -> None:
        async with slots, agent.run_stream(PROMPT, store_history=False) as stream:
            pieces = [chunk async for chunk in stream.stream()]
        if "".join(pieces).strip() != PROMPT:
            raise RuntimeError(f"test:echo answered {''.join(pieces)!r}")
        deltas.append(len(pieces))

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(one())
    return deltas


def measure() -> list[Row]:
    runs = size(1000, 100, "BENCH_CPU_RUNS")
    with agents_stack(concurrency=IN_FLIGHT) as stack:
        pid = stack.workers[0].process.pid
        redis_pid = stack.redis.process.pid
        agent = Agent("cpu", "test:echo")
        asyncio.run(stream_many(agent, WARM_UP))  # warm: imports, connections, threads
        settle(pid)
        idle_from, idle_cpu = time.perf_counter(), cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)  # the idle worker's own clock: heartbeats, broker polling
        idle_rate = (cpu_seconds(pid) - idle_cpu) / (time.perf_counter() - idle_from)
        started, cpu_before = time.perf_counter(), cpu_seconds(pid)
        redis_before, client_before = cpu_seconds(redis_pid), sum(os.times()[:2])
        deltas = asyncio.run(stream_many(agent, runs))
        ran = time.perf_counter() - started
        client_cpu = sum(os.times()[:2]) - client_before
        ended = settle(pid)
        gross = cpu_seconds(pid) - cpu_before
        redis_cpu = cpu_seconds(redis_pid) - redis_before
    net = gross - idle_rate * (ended - started)
    per_run = net / runs * 1000
    per_delta = net / sum(deltas) * 1000
    note = (
        f"{runs} streamed runs of test:echo ({min(deltas)}-{max(deltas)} text deltas each), "
        f"{IN_FLIGHT} in flight, one worker ({our_pool()} pool -c {IN_FLIGHT}), after "
        f"{WARM_UP} warm-up runs; {ran:.1f} s ({runs / ran:.0f} runs/s). Worker CPU "
        f"{gross:.2f} s over {ended - started:.1f} s (to idle again), less its idle "
        f"{idle_rate * 1000:.1f} ms/s; /proc clock tick {TICK * 1000:g} ms. Per run also: "
        f"Redis {redis_cpu / runs * 1000:.2f} ms, client {client_cpu / runs * 1000:.2f} ms "
        "of CPU"
    )
    target = "before/after issue 17"
    return [
        Row(
            "11",
            "worker CPU per streamed run, test:echo (no HTTP)",
            "ms",
            per_run,
            target=target,
            note=note,
        ),
        Row("11", f"worker CPU per run / its {WORDS} text deltas", "ms", per_delta, target=target),
    ]


if __name__ == "__main__":
    part_main(measure)
