"""Row 2: per-token relay latency, ours vs bare redis-py pub/sub, interleaved in one run.

Ours: a scripted model streams one word every few ms; the worker turns each into a
``text.delta`` event and publishes it. Measured: the event's ``ts`` (set on the worker when the
event is made, just before it is published) to its arrival in the caller's loop through
``run_stream(...).events()``. Bare: another process PUBLISHes JSON with ``time.time()`` at the
same pace; this process receives it with redis.asyncio pub/sub. Same host, so one wall clock.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis
import redis.asyncio as aioredis
from figures import Row, part_main, percentile, ratio_row, size, value_row
from stack import agents_stack, model_server

from celery_agents import Agent

TOKEN_DELAY = 0.005
CHANNEL = "bench:relay"


def publish(url: str, count: int, delay: float) -> None:
    """The bare publisher (its own process): ``count`` messages ``delay`` seconds apart."""
    client = redis.Redis.from_url(url)
    client.ping()  # connected before the first timestamp
    for index in range(count):
        client.publish(CHANNEL, json.dumps({"ts": time.time(), "i": index}))
        time.sleep(delay)  # the pace of a model's tokens, not a wait for anything
    client.publish(CHANNEL, b"end")
    client.close()


async def bare_round(url: str, count: int) -> list[float]:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "publish", url, str(count), str(TOKEN_DELAY)
    )
    latencies: list[float] = []
    try:
        async with asyncio.timeout(60):
            async for message in pubsub.listen():
                if message["data"] == b"end":
                    break
                latencies.append((time.time() - json.loads(message["data"])["ts"]) * 1000)
            await publisher.wait()
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
        await client.aclose()
    return latencies


async def our_round(agent: Agent, count: int) -> list[float]:
    latencies: list[float] = []
    async with agent.run_stream(" ".join(["w"] * count), store_history=False) as stream:
        async for event in stream.events():
            if event.kind == "text.delta":
                latencies.append((time.time() - event.ts) * 1000)
    return latencies


async def interleaved(url: str, agent: Agent, rounds: int, count: int) -> tuple[list[float], ...]:
    await our_round(agent, 5)  # warm: model client, connections
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(rounds):
        bare += await bare_round(url, count)
        ours += await our_round(agent, count)
    return ours, bare


def measure() -> list[Row]:
    rounds = size(10, 3, "BENCH_RELAY_ROUNDS")
    tokens = size(200, 100, "BENCH_RELAY_TOKENS")
    with (
        model_server(token_delay=TOKEN_DELAY, own_process=True) as model_url,
        agents_stack(providers={"scripted": {"base_url": model_url}}) as stack,
    ):
        agent = Agent("relay", "scripted:m")
        ours, bare = asyncio.run(interleaved(stack.url, agent, rounds, tokens))
    note = (
        f"{len(ours)} tokens each, {TOKEN_DELAY * 1000:g} ms apart; ours: worker event ts -> "
        "caller loop via run_stream().events(); bare: redis-py PUBLISH (other process) -> "
        "redis.asyncio receive"
    )
    p50_ours, p50_bare = percentile(ours, 0.5), percentile(bare, 0.5)
    return [
        ratio_row(
            "2", "token relay p50 vs bare pub/sub", "ms", p50_ours, p50_bare, at_most=2, note=note
        ),
        ratio_row(
            "2",
            "token relay p99 vs bare pub/sub",
            "ms",
            percentile(ours, 0.99),
            percentile(bare, 0.99),
            at_most=2,
        ),
        value_row("2", "token relay p50, absolute", "ms", p50_ours, bare=p50_bare, at_most=1),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["publish"]:
        publish(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        part_main(measure)
