"""Row 5: client fan-in: one client process awaits 1,000 concurrent `agent.run` whose model
answers after 1 s. Figures are about this process (the client): its pub/sub connections to
Redis (matched by port between /proc/net/tcp and CLIENT LIST), its threads and its memory,
read every 50 ms while the runs are in flight. The model server runs in its own process and
several workers share the load, so neither is counted here.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from figures import Row, part_main, rss_kib, size, threads_of, value_row
from stack import agents_stack, model_server, our_pool, run_many

from celery_agents import Agent

LATENCY = 1.0
WORKERS = 4


def my_ports_to(server_port: int) -> set[int]:
    """Local ports of this process's TCP connections to ``server_port`` on loopback."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Peak:
    pubsub: int = 0
    connections: int = 0
    threads: int = 0
    rss: int = 0


def sample(admin: redis.Redis, port: int, peak: Peak) -> None:
    mine = my_ports_to(port)
    clients = [c for c in admin.client_list() if int(c["addr"].rsplit(":", 1)[1]) in mine]
    subscribed = [c for c in clients if int(c["sub"]) + int(c["psub"]) > 0]
    peak.pubsub = max(peak.pubsub, len(subscribed))
    peak.connections = max(peak.connections, len(clients))
    peak.threads = max(peak.threads, threads_of())
    peak.rss = max(peak.rss, rss_kib())


async def fan_in(agent: Agent, runs: int, admin: redis.Redis, port: int) -> tuple[float, Peak]:
    peak = Peak()
    started = time.perf_counter()
    pending = asyncio.gather(*(agent.run("x", store_history=False) for _ in range(runs)))
    while not pending.done():  # sampling while the runs are in flight
        sample(admin, port, peak)
        await asyncio.wait([pending], timeout=0.05)
    await pending
    return time.perf_counter() - started, peak


def measure() -> list[Row]:
    runs = size(1000, 300, "BENCH_FANIN_RUNS")
    per_worker = -(-runs // WORKERS)
    with (
        model_server(latency=LATENCY, own_process=True) as model_url,
        agents_stack(
            workers=WORKERS,
            concurrency=per_worker,
            providers={"scripted": {"base_url": model_url}},
        ) as stack,
    ):
        admin = redis.Redis.from_url(stack.url)
        agent = Agent("fan", "scripted:m")
        asyncio.run(run_many(agent, 20, 20))  # warm: connections, model clients
        before = Peak(threads=threads_of(), rss=rss_kib())
        seconds, peak = asyncio.run(fan_in(agent, runs, admin, stack.redis.port))
        admin.close()
    growth = (peak.rss - before.rss) / runs
    note = (
        f"{runs} runs in {seconds:.1f} s ({WORKERS} workers, {our_pool()} pool -c {per_worker}); "
        f"client threads {before.threads} -> {peak.threads}, Redis connections at peak "
        f"{peak.connections}, RSS {before.rss / 1024:.0f} -> {peak.rss / 1024:.0f} MiB"
    )
    return [
        value_row(
            "5",
            f"client fan-in, {runs} runs: pub/sub connections",
            "conns",
            peak.pubsub,
            at_most=1,
            note=note,
        ),
        value_row(
            "5",
            "client threads added at peak",
            "threads",
            peak.threads - before.threads,
            at_most=0,
        ),
        value_row("5", "client RSS growth per in-flight run", "KiB", growth, at_most=20),
    ]


if __name__ == "__main__":
    part_main(measure)
