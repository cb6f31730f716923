"""Rows 12 and 13: the run store's cost and speed.

Row 12: row 3's throughput (one worker, ``test:echo``, 100 ``agent.run`` in flight) with the
store on (SQLite, the default) against the same with ``CELERY_AGENTS_STORE_URL=none``, two
stacks side by side, in interleaved blocks.

Row 13: how fast one writer drains records into SQLite and PostgreSQL (the machine's, a
database of the bench's own): 20,000 records queued in Redis as workers queue them, then
drained in batches to the last one, in this process.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from contextlib import ExitStack

import redis.asyncio as aioredis
from figures import Row, part_main, ratio_row, size, value_row
from stack import Stack, agents_stack, run_many

from celery_agents import Agent, Settings, configure
from celery_agents.keys import Keys
from celery_agents.messages import ChatMessage, Usage
from celery_agents.store.database import RunStore
from celery_agents.store.entry import RunEntry
from celery_agents.store.handoff import StoreHandoff
from celery_agents.store.url import store_url
from celery_agents.store.writer import StoreWriter

CONCURRENCY = 8
IN_FLIGHT = 100


def _point(stack: Stack, store: str) -> None:
    configure(Settings(redis_url=stack.url, manifest=stack.manifest, store_url=store))


def throughput_rows() -> list[Row]:
    total = size(3000, 600, "BENCH_STORE_RUNS")
    blocks = 5
    with ExitStack() as stacks:
        on = stacks.enter_context(agents_stack(concurrency=CONCURRENCY))
        off = stacks.enter_context(
            agents_stack(concurrency=CONCURRENCY, worker_env={"CELERY_AGENTS_STORE_URL": "none"})
        )
        agent = Agent("bench", "test:echo")
        seconds = {"on": 0.0, "off": 0.0}
        for stack, name in ((on, "on"), (off, "off")):  # warm up
            _point(stack, str(stack.redis.workdir / "runs.db") if name == "on" else "none")
            asyncio.run(run_many(agent, 50, IN_FLIGHT))
        for _ in range(blocks):
            for stack, name in ((off, "off"), (on, "on")):
                _point(stack, str(stack.redis.workdir / "runs.db") if name == "on" else "none")
                seconds[name] += asyncio.run(run_many(agent, total // blocks, IN_FLIGHT))
    runs = blocks * (total // blocks)
    return [
        ratio_row(
            "12",
            f"throughput with the run store on vs off, {runs} runs",
            "runs/s",
            runs / seconds["on"],
            runs / seconds["off"],
            at_least=0.95,
            note=f"one worker each, threads -c {CONCURRENCY}, {IN_FLIGHT} agent.run in flight, "
            f"test:echo; on: SQLite (the default); off: CELERY_AGENTS_STORE_URL=none; "
            f"{blocks} interleaved blocks",
        )
    ]


def _entry(i: int) -> RunEntry:
    now = time.time()
    message = ChatMessage(
        content=f"answer {i} " + "x" * 200, role="assistant", usage=Usage(input_tokens=50)
    )
    return RunEntry(
        run_id=uuid.uuid4().hex,
        name="bench",
        model="test:echo",
        tenant="acme",
        state="succeeded",
        worker="bench@host",
        queued_at=now - 1,
        started_at=now - 0.5,
        ended_at=now,
        input_tokens=50,
        output_tokens=20,
        requests=1,
        prompt=f"prompt {i} " + "y" * 200,
        message=message,
    )


async def drain_rate(redis_url: str, url: str, count: int) -> float:
    """Records per second one writer lands, from a full stream to an empty one."""
    parsed = store_url(url)
    assert parsed is not None
    store = await RunStore.open(parsed)
    client = aioredis.Redis.from_url(redis_url)
    keys = Keys(f"bench-{uuid.uuid4().hex[:6]}")
    try:
        handoff = StoreHandoff(keys, parsed, content=True, cap=count * 2)
        writer = StoreWriter(client, keys, store, consumer="bench", retention_days=90)
        await writer.start()
        for start in range(0, count, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(start, min(count, start + 1000)):
                    handoff.queue(pipe, _entry(i))
                await pipe.execute()
        began = time.perf_counter()
        landed = 0
        while landed < count:
            landed += await writer.drain_once(block_ms=100)
        return count / (time.perf_counter() - began)
    finally:
        await client.aclose()
        await store.aclose()


def _postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


async def _admin(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(host="127.0.0.1", user="root", database="test")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def drain_rows() -> list[Row]:
    count = size(20_000, 4_000, "BENCH_STORE_RECORDS")
    rows = []
    with agents_stack(workers=0) as stack:
        sqlite = asyncio.run(drain_rate(stack.url, str(stack.redis.workdir / "d.db"), count))
        rows.append(
            value_row(
                "13",
                f"writer drain rate, SQLite, {count:,} records",
                "records/s",
                sqlite,
                at_least=500,
                note="one writer, batches of 500, records with prompt and answer (~1 KB)",
            )
        )
        if _postgres_answers():
            name = f"celery_agents_bench_{uuid.uuid4().hex[:6]}"
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
            try:
                url = f"postgresql+asyncpg://root@127.0.0.1:5432/{name}"
                pg = asyncio.run(drain_rate(stack.url, url, count))
            finally:
                asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            rows.append(
                value_row(
                    "13",
                    f"writer drain rate, PostgreSQL 127.0.0.1, {count:,} records",
                    "records/s",
                    pg,
                    at_least=500,
                    note="one writer, batches of 500, the machine's PostgreSQL",
                )
            )
    return rows


def measure() -> list[Row]:
    return [*throughput_rows(), *drain_rows()]


if __name__ == "__main__":
    part_main(measure)
