"""Load (issue 7, item 7): 2,000 runs queued at once, drained by 2 workers.

The runs are queued before any worker consumes (the queue really holds all 2,000), then two
worker processes drain it with the scripted model. Every run completes exactly once, with the
evidence of each side: one ``run.started`` (attempt 1) and one ``run.done`` in its replay log,
its durable record ``succeeded`` at attempt 1, one model request, its history appended once,
and its Celery result stored (SUCCESS). Afterwards no key is left without a
TTL, except kombu's own permanent bookkeeping (listed and justified in ``PERMANENT``).

Everything runs in a logical Redis database of its own, so every key in it is this test's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from celery_agents import Agent, RunHandle, Settings, configure
from celery_agents.embedded.worker import WorkerProcess, start_worker
from celery_agents.events import Event, RunDone, RunStarted, parse_event
from celery_agents.keys import Keys
from celery_agents.messages import ChatMessage
from celery_agents.testing.plugin import TEST_WORKER_ENV
from celery_agents.testing.scripted_server import ScriptedModelServer
from tests.faults.conftest import FaultReport

RUNS = 2000
WORKERS = 2
CONCURRENCY = 16  # threads per worker
DRAIN_TIMEOUT = 120.0  # seconds for the two workers to finish all runs
RESULT_META = "celery-task-meta-"

# Keys that live without a TTL by design. Anything else without one fails the test.
PERMANENT = {
    # kombu's Redis transport (5.7): an exchange's bindings, (routing key, pattern, queue)
    # members, written when a queue or the pidbox/event exchanges are declared.
    re.compile(r"_kombu\.binding\..+"): "an exchange's binding table",
    # ...the members of that table that belong to queues without x-expires (ours), which
    # keep it from being swept.
    re.compile(r"_kombu\.binding_permanent\..+"): "bindings of non-expiring queues",
    # ...and one sorted set of the sweep deadlines of tables of expiring queues (Celery's
    # pidbox reply queues).
    re.compile(r"_kombu\.binding_deadlines"): "sweep deadlines of binding tables",
}
# All of them are per exchange, not per run: this many at most, however many runs went by.
MAX_PERMANENT = 12


@dataclass
class Flood:
    """The runs of this test and where they live."""

    settings: Settings
    keys: Keys
    prompts: dict[str, str] = field(default_factory=dict)  # run id -> prompt
    conversations: dict[str, str] = field(default_factory=dict)  # run id -> conversation

    @property
    def queue_keys(self) -> list[str]:
        """kombu's lists for the queue: one per priority step (the bare name is step 0)."""
        queue = self.settings.queue
        return [queue, *(f"{queue}:{step}" for step in range(1, 10))]


@pytest.fixture
def flood_settings(
    agents: Settings, empty_redis_db: str, celery_agents_manifest_path: Path
) -> Iterator[Settings]:
    """The facade pointed at an empty database, with a key prefix and queue of its own."""
    name = f"flood-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=empty_redis_db,
        manifest=celery_agents_manifest_path,
        key_prefix=name,
        queue=f"{name}-queue",
    )
    configure(settings)
    try:
        yield settings
    finally:
        configure(agents)


async def test_two_thousand_runs_at_once_complete_exactly_once_and_leave_no_immortal_key(
    flood_settings: Settings, scripted_model: ScriptedModelServer, fault_report: FaultReport
) -> None:
    settings = flood_settings
    flood = Flood(settings, Keys(settings.key_prefix))
    db = aioredis.Redis.from_url(settings.redis_url)
    workers: list[WorkerProcess] = []
    results_stored: asyncio.Task[set[str]] | None = None
    try:
        # Each run's last word is its run.done (its record is written before it), so
        # waiting for all of them on the runs' channels needs no polling.
        stored = db.pubsub()
        await stored.psubscribe(flood.keys.run_channel("*"))
        results_stored = asyncio.create_task(_wait_done(stored, flood, DRAIN_TIMEOUT + 30))

        agent = Agent("flood", "scripted:flood")
        handles = await _submit_all(agent, flood)
        assert sum([await db.llen(key) for key in flood.queue_keys]) == RUNS

        started_at = time.monotonic()
        for _ in range(WORKERS):
            workers.append(
                start_worker(
                    settings.redis_url,
                    manifest=settings.manifest,
                    key_prefix=settings.key_prefix,
                    concurrency=CONCURRENCY,
                    extra_env={**TEST_WORKER_ENV, "CELERY_AGENTS_QUEUE": settings.queue},
                )
            )
        messages = await asyncio.gather(
            *(handle.result(timeout=DRAIN_TIMEOUT) for handle in handles),
            return_exceptions=True,
        )
        stored_ids = await results_stored
        drained_in = time.monotonic() - started_at
        for worker in workers:  # warm shutdown: every ack is sent before the process exits
            worker.stop()

        evidence = await _evidence(db, flood, scripted_model)
        answered = {
            h.run_id
            for h, m in zip(handles, messages, strict=True)
            if isinstance(m, ChatMessage) and m.content == flood.prompts[h.run_id]
        }
        completed = answered & evidence.completed & stored_ids
        fault_report.record(
            f"flood: {RUNS:,} runs at once, {WORKERS} workers",
            injected=1,
            started=len(evidence.started),
            completed=len(completed),
            lost=RUNS - len(completed),
            duplicated=len(evidence.duplicated),
        )

        failures = [m for m in messages if not isinstance(m, ChatMessage)]
        assert not failures, f"{len(failures)} runs failed, e.g. {failures[:3]!r}"
        assert not evidence.duplicated, f"run more than once: {sorted(evidence.duplicated)[:5]}"
        assert not evidence.problems, "\n".join(evidence.problems[:20])
        assert len(completed) == RUNS
        assert set(evidence.per_worker) == {w.hostname for w in workers}, evidence.per_worker
        assert drained_in < DRAIN_TIMEOUT

        immortal = await _keys_without_ttl(db)
        unexplained = sorted(k for k in immortal if not any(p.fullmatch(k) for p in PERMANENT))
        assert not unexplained, f"keys without a TTL: {_patterns(unexplained)}"
        assert len(immortal) <= MAX_PERMANENT, sorted(immortal)
        # Nothing waits in the queue or unacknowledged (it would be delivered again later).
        assert sum([await db.llen(key) for key in flood.queue_keys]) == 0
        assert await db.hlen("unacked") == 0
    finally:
        if results_stored is not None and not results_stored.done():
            results_stored.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await results_stored
        for worker in workers:
            worker.kill()
        await db.aclose()


async def _submit_all(agent: Agent, flood: Flood) -> list[RunHandle]:
    handles: list[RunHandle] = []
    for i in range(RUNS):
        prompt, conversation = f"flood run {i}", f"flood-{i}"
        handle = await agent.submit(prompt, conversation_id=conversation)
        flood.prompts[handle.run_id] = prompt
        flood.conversations[handle.run_id] = conversation
        handles.append(handle)
    return handles


async def _wait_done(pubsub: aioredis.client.PubSub, flood: Flood, timeout: float) -> set[str]:
    """The run ids whose run.done was published, once all are (or ``timeout`` passes)."""
    prefix, _, suffix = flood.keys.run_channel("\0").partition("\0")
    seen: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            while len(seen) < RUNS:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None:
                    continue
                channel = message["channel"].decode()
                run_id = channel.removeprefix(prefix).removesuffix(suffix)
                if run_id in flood.prompts and json.loads(message["data"])["kind"] == "run.done":
                    seen.add(run_id)
    except TimeoutError:
        pass
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
    return seen


@dataclass
class Evidence:
    started: set[str] = field(default_factory=set)  # runs with a run.started event
    completed: set[str] = field(default_factory=set)  # run.done, record succeeded
    duplicated: set[str] = field(default_factory=set)  # any sign of a second execution
    per_worker: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


async def _evidence(db: aioredis.Redis, flood: Flood, server: ScriptedModelServer) -> Evidence:
    """What each side recorded about each run."""
    requests = Counter(
        (r.body or {}).get("messages", [{}])[-1].get("content")
        for r in server.requests
        if r.path.endswith("/chat/completions")
    )
    evidence = Evidence()
    run_ids = list(flood.prompts)
    keys = flood.keys
    async with db.pipeline(transaction=False) as pipe:
        for run_id in run_ids:
            pipe.lrange(keys.run_log(run_id), 0, -1)
            pipe.hgetall(keys.run_state(run_id))
            pipe.llen(keys.conversation(flood.conversations[run_id]))
            pipe.get(f"{RESULT_META}{run_id}")
        replies = await pipe.execute()
    for i, run_id in enumerate(run_ids):
        raw_log, raw_state, history, meta = replies[4 * i : 4 * i + 4]
        events: list[Event] = [parse_event(item) for item in raw_log]
        state = {k.decode(): v.decode() for k, v in raw_state.items()}
        starts = [e for e in events if isinstance(e, RunStarted)]
        dones = [e for e in events if isinstance(e, RunDone)]
        calls = requests[flood.prompts[run_id]]
        if starts:
            evidence.started.add(run_id)
            evidence.per_worker[starts[0].worker or "?"] += 1
        if len(starts) > 1 or len(dones) > 1 or calls > 1 or history > 2:
            evidence.duplicated.add(run_id)
        if dones and state.get("state") == "succeeded":
            evidence.completed.add(run_id)
        facts = {
            "seqs": [e.seq for e in events] == list(range(1, len(events) + 1)),
            "one start, attempt 1": [s.attempt for s in starts] == [1],
            "ends with its one run.done": len(dones) == 1 and events[-1] is dones[0],
            "record": (state.get("state"), state.get("attempt")) == ("succeeded", "1"),
            "one model request": calls == 1,
            "history appended once": history == 2,
            "its Celery result stored": meta is not None
            and json.loads(meta).get("status") == "SUCCESS",
        }
        wrong = [name for name, ok in facts.items() if not ok]
        if wrong:
            evidence.problems.append(f"run {run_id}: {', '.join(wrong)} (record {state})")
    return evidence


async def _keys_without_ttl(db: aioredis.Redis) -> list[str]:
    names = [key async for key in db.scan_iter(count=1000)]
    async with db.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.ttl(name)
        ttls = await pipe.execute()
    return [n.decode() for n, ttl in zip(names, ttls, strict=True) if ttl == -1]


def _patterns(names: list[str]) -> dict[str, int]:
    """Key names with their ids blanked out, counted: ``{'p:run:*:log': 2000}``."""
    return dict(Counter(re.sub(r"[0-9a-f]{8,}|\d+", "*", name) for name in names))
