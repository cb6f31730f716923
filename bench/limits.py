"""What the fleet-wide limiter costs a run when under the limit: limiter on vs off, one run.

Two providers point at the same scripted model server (no latency): one with limits far above
the load, one without any. Runs alternate between them so both see the same machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import yaml

from celery_agents import Agent, Settings, configure
from celery_agents.embedded.redis_server import start_redis_server
from celery_agents.embedded.worker import start_worker
from celery_agents.facade.client import shutdown
from celery_agents.testing.scripted_server import ScriptedModelServer

RUNS = int(os.environ.get("BENCH_LIMIT_RUNS", "300"))


def main() -> None:
    redis = start_redis_server()
    server = ScriptedModelServer().start()
    limits = {"requests_per_minute": 1_000_000, "tokens_per_minute": 1e9, "max_concurrent": 1000}
    manifest = Path(redis.workdir) / "bench-limits.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "free": {"base_url": server.url},
                    "limited": {"base_url": server.url, "limits": limits},
                }
            }
        )
    )
    worker = start_worker(redis.url, manifest=manifest)
    configure(Settings(redis_url=redis.url, manifest=manifest))
    try:

        async def run() -> None:
            on, off = Agent("on", "limited:m"), Agent("off", "free:m")
            await on.run("warm", store_history=False)
            await off.run("warm", store_history=False)
            times: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(RUNS):
                for name, agent in (("on", on), ("off", off)):
                    started = time.perf_counter()
                    await agent.run("x", store_history=False)
                    times[name].append((time.perf_counter() - started) * 1000)
            p50_on, p50_off = statistics.median(times["on"]), statistics.median(times["off"])
            print(f"limiter overhead, {RUNS} runs each, scripted model without latency")
            print(f"{'figure':<40}{'on ms':>9}{'off ms':>9}{'diff ms':>9}")
            print(f"{'agent.run p50':<40}{p50_on:>9.2f}{p50_off:>9.2f}{p50_on - p50_off:>9.2f}")

        asyncio.run(run())
    finally:
        shutdown()  # let go of Redis before it stops
        worker.stop()
        server.stop()
        redis.stop()


if __name__ == "__main__":
    main()
