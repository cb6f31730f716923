"""Row 10: Redis memory after 10,000 runs have expired vs before: every key a run writes must
carry a TTL, so memory returns to its baseline once the runs' keys have expired.

The worker and the client keep results for ``TTL`` seconds (``CELERY_AGENTS_RESULT_TTL``);
runs do not store history. "Before" is taken once a warm-up's per-run keys (any key naming a
run or task id) are gone, so one-time structures (bindings, scripts, the worker's heartbeat,
the minute's usage bucket) are in both figures. Expiry is waited for by SCANning the keyspace
(which also expires what is due); memory is read once the result TTL has passed and again
once no per-run key is left. The judged figure is the memory the keys hold (MEMORY USAGE of
every key): ``used_memory`` also moves with connection buffers and the slow log.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import redis
from figures import Row, part_main, size, value_row
from stack import agents_stack, run_many

from celery_agents import Agent

TTL = 5
IN_FLIGHT = 100
LONGEST_WAIT = 300.0  # seconds the per-run keys may take to go
_RUN_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Keyspace:
    """What SCAN found, by key pattern (ids as ``*``): count, longest TTL (-1: one has none)
    and bytes held; plus Redis' ``used_memory``."""

    count: dict[str, int] = field(default_factory=dict)
    ttl: dict[str, int] = field(default_factory=dict)
    held: int = 0
    used_memory: int = 0

    def per_run(self) -> int:
        return sum(n for name, n in self.count.items() if "*" in name)

    def describe(self) -> str:
        parts = [f"{p} x{n} (TTL <= {self.ttl[p]} s)" for p, n in self.count.items() if "*" in p]
        return ", ".join(sorted(parts)) or "none"

    def without_ttl(self) -> set[str]:
        return {name for name, ttl in self.ttl.items() if ttl == -1}


def scan(client: redis.Redis) -> Keyspace:
    """The keyspace now (the SCAN also expires the keys that are due)."""
    found = Keyspace()
    for key in client.scan_iter(count=1000):
        name, ttl = _RUN_ID.sub("*", key.decode(errors="replace")), int(client.ttl(key))
        found.count[name] = found.count.get(name, 0) + 1
        longest = found.ttl.get(name, -2)
        found.ttl[name] = -1 if -1 in (ttl, longest) else max(ttl, longest)
        found.held += int(client.memory_usage(key) or 0)
    found.used_memory = int(client.info("memory")["used_memory"])
    return found


def wait_run_keys_gone(client: redis.Redis) -> Keyspace:
    deadline = time.monotonic() + LONGEST_WAIT
    while (found := scan(client)).per_run() and time.monotonic() < deadline:
        time.sleep(0.5)  # poll interval of a wait with a deadline
    return found


def measure() -> list[Row]:
    runs = size(10_000, 1_000, "BENCH_MEMORY_RUNS")
    env = {"CELERY_AGENTS_RESULT_TTL": str(TTL)}
    with agents_stack(worker_env=env, result_ttl=TTL) as stack:
        client = redis.Redis.from_url(stack.url)
        asyncio.run(run_many(Agent("mem", "test:echo"), 50, IN_FLIGHT))
        before = wait_run_keys_gone(client)
        asyncio.run(run_many(Agent("mem", "test:echo"), runs, IN_FLIGHT))
        ended, peak = time.monotonic(), int(client.info("memory")["used_memory"])
        keys_peak = int(client.dbsize())
        time.sleep(TTL + 1)  # the workload's own clock: results are due to expire by now
        at_ttl = scan(client)
        after = wait_run_keys_gone(client)
        gone_after = time.monotonic() - ended
        client.close()
    new = sorted(set(after.count) - set(before.count))
    at_ttl_kib = (at_ttl.used_memory - before.used_memory) / 1024
    end_kib = (after.used_memory - before.used_memory) / 1024
    return [
        value_row(
            "10",
            f"Redis key memory, {runs} runs expired - before",
            "KiB",
            (after.held - before.held) / 1024,
            at_most=1,
            note=f"result TTL {TTL} s; keys hold {before.held} B before, {after.held} B once no "
            f"per-run key was left ({gone_after:.0f} s after the last run); new keys: "
            f"{', '.join(new) or 'none'}. used_memory: {before.used_memory / 1024:.0f} KiB "
            f"before, +{(peak - before.used_memory) / 1024:.0f} KiB right after the runs "
            f"({keys_peak} keys), {at_ttl_kib:+.0f} KiB at result TTL + 1 s, {end_kib:+.0f} "
            "KiB at the end (connection buffers, slow log)",
        ),
        value_row(
            "10",
            "per-run keys alive at result TTL + 1 s",
            "keys",
            at_ttl.per_run(),
            note=f"at result TTL + 1 s: {at_ttl.describe()}; at the end: {after.describe()}",
        ),
        value_row(
            "10",
            "key patterns without a TTL added by the runs",
            "patterns",
            len(after.without_ttl() - before.without_ttl()),
            at_most=0,
            note="new key patterns without TTL: "
            + (", ".join(sorted(after.without_ttl() - before.without_ttl())) or "none"),
        ),
    ]


if __name__ == "__main__":
    part_main(measure)
