"""Row 15: the HTTP API's SSE, against the Python client's own stream, in one run.

- Relay latency: a scripted model streams one word every few ms; for each ``text.delta``, the
  time from its ``ts`` (set on the worker as the event is made) to its arrival here, through
  the Python client's ``run_stream().events()`` and through ``POST /v1/runs?stream=true`` on
  an API process on the same Redis, interleaved round by round. Target: p50 <= +1 ms.
- 1,000 concurrent streams on one API process: runs queued where no worker listens yet, a
  ``GET /v1/runs/{id}/events`` open on each, the API's RSS read with all of them open; then a
  worker starts and every stream must end with its ``run.done``, its ids 1..n with no gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2
from figures import Row, part_main, percentile, rss_kib, size, value_row
from relay import TOKEN_DELAY, our_round
from stack import agents_stack, model_server

from celery_agents import Agent
from celery_agents.embedded.api_server import ApiProcess, start_api
from celery_agents.embedded.worker import start_worker
from celery_agents.facade.bridge import run_sync
from celery_agents.facade.stored import with_store
from celery_agents.store.keys import create_key

STREAMS_QUEUE = "bench-streams"  # no worker listens here until the streams are open


async def sse(response: httpx2.Response) -> Any:
    """The (id, kind, data) of each event of an SSE answer."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield fields.get("id"), fields.get("event"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def api_round(http: httpx2.AsyncClient, count: int) -> list[float]:
    latencies: list[float] = []
    body = {"agent": "relay", "prompt": " ".join(["w"] * count), "store_history": False}
    async with http.stream("POST", "/v1/runs?stream=true", json=body) as answer:
        async for _, kind, data in sse(answer):
            if kind == "text.delta":
                latencies.append((time.time() - data["ts"]) * 1000)
    return latencies


async def relay_rounds(
    http: httpx2.AsyncClient, agent: Agent, rounds: int, count: int
) -> tuple[list[float], list[float]]:
    await our_round(agent, 5)
    await api_round(http, 5)  # warm both: connections, the key's lookup
    ours: list[float] = []
    via_api: list[float] = []
    for _ in range(rounds):
        via_api += await api_round(http, count)
        ours += await our_round(agent, count)
    return ours, via_api


async def open_streams(
    api: ApiProcess, key: str, count: int, start_worker_then: Any
) -> tuple[int, int, float]:
    """(complete streams, API RSS KiB with all open, seconds from the worker's start to the
    last stream's end)."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx2.Limits(max_connections=count + 50, max_keepalive_connections=count + 50)
    async with httpx2.AsyncClient(
        base_url=api.url, headers=headers, timeout=None, limits=limits
    ) as http:
        body = {"agent": "streamer", "prompt": "one two three four five", "store_history": False}
        ids = [(await http.post("/v1/runs", json=body)).json()["run_id"] for _ in range(count)]
        opened = asyncio.Semaphore(0)

        async def follow(run_id: str) -> bool:
            seen: list[int] = []
            async with http.stream("GET", f"/v1/runs/{run_id}/events") as answer:
                opened.release()
                async for event_id, kind, _ in sse(answer):
                    seen.append(int(event_id))
                    if kind == "run.done":
                        return seen == list(range(1, len(seen) + 1))
            return False

        tasks = [asyncio.create_task(follow(run_id)) for run_id in ids]
        for _ in ids:
            await opened.acquire()
        await asyncio.sleep(1.0)  # let the API settle with every stream subscribed
        rss = rss_kib(api.process.pid)
        began = time.perf_counter()
        worker = await asyncio.to_thread(start_worker_then)
        try:
            done = await asyncio.gather(*tasks)
        finally:
            await asyncio.to_thread(worker.stop)
        return sum(done), rss, time.perf_counter() - began


def stream_worker(redis_url: str, manifest: Any, store: dict[str, str]) -> Any:
    env = {**store, "CELERY_AGENTS_QUEUE": STREAMS_QUEUE}
    return start_worker(redis_url, manifest=manifest, concurrency=100, extra_env=env)


def measure() -> list[Row]:
    rounds = size(10, 3, "BENCH_API_ROUNDS")
    tokens = size(200, 100, "BENCH_API_TOKENS")
    streams = size(1000, 100, "BENCH_API_STREAMS")
    manifest = {
        "agents": {
            "relay": {"model": "scripted:m"},
            "streamer": {"model": "scripted:s"},
        },
        "tenants": {"bench": {}},
    }
    with (
        model_server(token_delay=TOKEN_DELAY, own_process=True) as model_url,
        agents_stack(providers={"scripted": {"base_url": model_url}}, manifest_extra=manifest) as s,
    ):
        store = {"CELERY_AGENTS_STORE_URL": str(s.redis.workdir / "runs.db")}
        api = start_api(s.redis.url, manifest=s.manifest, extra_env=store)
        try:
            _, key = run_sync(with_store(lambda st: create_key(st, "bench", admin=True)))
            ours, via_api = asyncio.run(_relay(api, key, rounds, tokens))

        finally:
            api.stop()
        # Another API process, sending where no worker listens until its streams are open.
        api = start_api(
            s.redis.url,
            manifest=s.manifest,
            extra_env={**store, "CELERY_AGENTS_QUEUE": STREAMS_QUEUE},
        )
        try:
            idle = rss_kib(api.process.pid)
            complete, rss_open, seconds = asyncio.run(
                open_streams(
                    api, key, streams, lambda: stream_worker(s.redis.url, s.manifest, store)
                )
            )
        finally:
            api.stop()
    p50_ours, p50_api = percentile(ours, 0.5), percentile(via_api, 0.5)
    note = (
        f"{len(ours)} tokens each way, {TOKEN_DELAY * 1000:g} ms apart; worker event ts -> this "
        "process, via run_stream().events() and via POST /v1/runs?stream=true"
    )
    per_stream = (rss_open - idle) / streams
    return [
        value_row(
            "15",
            "API SSE relay p50, over the Python client's",
            "ms",
            p50_api - p50_ours,
            bare=p50_ours,
            at_most=1,
            note=note,
        ),
        value_row(
            "15",
            "API SSE relay p99, over the Python client's",
            "ms",
            percentile(via_api, 0.99) - percentile(ours, 0.99),
            bare=percentile(ours, 0.99),
        ),
        value_row(
            "15",
            f"{streams} SSE streams at once on one API: complete",
            "streams",
            complete,
            at_least=streams,
            note=f"all {streams} ended within {seconds:.1f} s of the worker's start",
        ),
        value_row(
            "15",
            "API process RSS per open SSE stream",
            "KiB",
            per_stream,
            note=f"{idle / 1024:.0f} MiB idle, {rss_open / 1024:.0f} MiB with {streams} open",
        ),
    ]


async def _relay(api: ApiProcess, key: str, rounds: int, tokens: int) -> tuple[list[float], ...]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=api.url, headers=headers, timeout=60) as http:
        return await relay_rounds(http, Agent("relay", "scripted:m"), rounds, tokens)


if __name__ == "__main__":
    part_main(measure)
