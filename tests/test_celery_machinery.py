"""Runs go through Celery's own machinery: its tracer (every task signal fires, results are
stored, exceptions are the project's own), its producer (publish signals on every send), so
Celery's ecosystem (OpenTelemetry's instrumentation, users' signal handlers) sees every run.

A real worker imports ``tests.support.signals`` through the manifest, as a user's tools
module would, and writes each signal it sees to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals
from celery.result import AsyncResult

from celery_agents import Agent, ChatMessage, ModelError, Settings
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.tasks.app import create_app
from celery_agents.testing.scripted_server import ScriptedModelServer

pytestmark = pytest.mark.usefixtures("agents")

# The signals of one task run by the tracer, in the order Celery sends them.
TRACED = ["task_received", "task_prerun", "task_success", "task_postrun"]


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """``check()`` once it is truthy (the worker writes its log a moment after the run's end
    reaches us), or its last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def signals_of(path: Path, task_id: str) -> list[str]:
    """The signals of the task ``task_id``'s execution (not those of the sends of it)."""
    return [
        r["signal"]
        for r in read_lines(path)
        if r["task_id"] == task_id and not r["signal"].endswith("_publish")
    ]


# A Team's or TeamRun's start: replaced by its canvas (``Task.replace``), so no success.
REPLACED = ["task_received", "task_prerun", "task_postrun"]


@pytest.fixture
def signal_log(tmp_path: Path, private_worker: Callable[..., WorkerProcess]) -> Path:
    path = tmp_path / "signals.jsonl"
    private_worker(extra_env={"SIGNAL_LOG": str(path)})
    return path


@pytest.fixture
def published() -> Iterator[list[tuple[str, str]]]:
    """(signal, task id) of every send made in this process."""
    seen: list[tuple[str, str]] = []

    def before(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append(("before_task_publish", (headers or {}).get("id", "")))

    def after(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append(("after_task_publish", (headers or {}).get("id", "")))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    try:
        yield seen
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)


@pytest.fixture
def results_app(agents: Settings) -> Celery:
    """A plain Celery app on the project's configuration, as any Celery code would have."""
    return create_app(agents)


def echo(name: str) -> Agent:
    return Agent(name, "test:echo")


async def test_every_task_signal_fires_for_an_agent_run_in_order(
    signal_log: Path, published: list[tuple[str, str]]
) -> None:
    message = await echo("solo").run("hello")
    assert until(lambda: signals_of(signal_log, message.run_id) == TRACED), signals_of(
        signal_log, message.run_id
    )
    assert ("before_task_publish", message.run_id) in published
    assert ("after_task_publish", message.run_id) in published


async def test_every_task_signal_fires_for_team_members_and_its_collect(
    signal_log: Path,
) -> None:
    message = await (echo("left") & echo("right")).run("hello")
    members = [m.run_id for m in message.associated_messages]
    assert len(members) == 2
    for run_id in members:
        assert until(lambda r=run_id: signals_of(signal_log, r) == TRACED), run_id
    # The start, then the collect task, which takes the Team's run id.
    assert until(lambda: signals_of(signal_log, message.run_id) == [*REPLACED, *TRACED])


async def test_every_task_signal_fires_for_team_run_stages(signal_log: Path) -> None:
    handle = await (echo("first") | echo("second") | echo("third")).submit("hello")
    await handle.result()
    # The start, then the third stage, which ends the TeamRun and so carries its id.
    assert until(lambda: signals_of(signal_log, handle.run_id) == [*REPLACED, *TRACED])
    ran = {r["task_id"] for r in read_lines(signal_log) if r["signal"] == "task_prerun"}
    stages = ran - {handle.run_id}
    assert len(stages) == 2
    for task_id in stages:
        assert until(lambda t=task_id: signals_of(signal_log, t) == TRACED), task_id


async def test_task_failure_carries_the_model_error(signal_log: Path) -> None:
    handle = await Agent("doomed", "test:fail").submit("hello")
    run_id = handle.run_id
    with pytest.raises(ModelError):
        await handle.result()

    def failure() -> dict[str, Any] | None:  # once the last signal (postrun) is in, too
        records = [r for r in read_lines(signal_log) if r["task_id"] == run_id]
        if not any(r["signal"] == "task_postrun" for r in records):
            return None
        return next((r for r in records if r["signal"] == "task_failure"), None)

    record = until(failure)
    assert record is not None, read_lines(signal_log)
    assert record["exception"].startswith("ModelError: ")
    assert signals_of(signal_log, run_id) == [
        "task_received",
        "task_prerun",
        "task_failure",
        "task_postrun",
    ]


async def test_a_run_waiting_for_its_tenants_slot_is_a_celery_retry(
    signal_log: Path, scripted_model: ScriptedModelServer
) -> None:
    # Tenant "small" runs at most 2 at once: the third run goes back to the broker as a
    # Celery retry (RETRY in Flower), then runs.
    scripted_model.latency = 0.5
    handles = [
        await Agent("c", "scripted:capped").submit(f"c{i}", store_history=False, tenant="small")
        for i in range(3)
    ]
    for handle in handles:
        await handle.result()
    retried = {r["task_id"] for r in read_lines(signal_log) if r["signal"] == "task_retry"}
    assert retried and retried <= {h.run_id for h in handles}
    for run_id in retried:
        assert until(lambda r=run_id: signals_of(signal_log, r)[-2:] == TRACED[-2:])


async def test_results_are_stored_for_a_run_a_team_and_a_team_run(results_app: Celery) -> None:
    for runner in (echo("stored"), echo("a") & echo("b"), echo("c") | echo("d")):
        handle = await runner.submit("hello")
        message = await handle.result()
        stored = AsyncResult(handle.run_id, app=results_app).get(timeout=10)
        assert ChatMessage.model_validate(stored) == message


async def test_a_failed_runs_stored_result_is_its_own_exception(results_app: Celery) -> None:
    handle = await Agent("doomed", "test:fail").submit("hello")
    with pytest.raises(ModelError) as raised:
        await handle.result()
    result = AsyncResult(handle.run_id, app=results_app)
    until(lambda: result.state == "FAILURE", 10)
    assert isinstance(result.result, ModelError)
    assert result.result.message == raised.value.message
    with pytest.raises(ModelError):
        result.get(timeout=5)


BAD_FIELD = ("agents:\n  a: {model: 'test:echo', temperature: hot}\n", "agents.a")
BAD_TOOL = ("tools:\n  fetch: 'no_such_module_here:fetch'\n", "tools.fetch")


@pytest.mark.parametrize(
    ("command", "bad"),
    [
        ("celery-agents worker", BAD_FIELD),
        ("celery-agents worker", BAD_TOOL),
        ("celery -A worker", BAD_FIELD),
        ("celery -A worker", BAD_TOOL),
        ("beat", BAD_FIELD),  # the beat imports no tools: only workers run them
    ],
)
def test_a_worker_or_beat_with_an_invalid_manifest_exits_at_start_with_one_line(
    agents: Settings, tmp_path: Path, command: str, bad: tuple[str, str]
) -> None:
    manifest, named = bad
    path = tmp_path / "bad.yaml"
    path.write_text(manifest)
    env = {
        **os.environ,
        "CELERY_AGENTS_REDIS_URL": agents.redis_url,
        "CELERY_AGENTS_MANIFEST": str(path),
        "CELERY_AGENTS_QUEUE": f"bad-{uuid.uuid4().hex[:6]}",
    }
    if command == "celery-agents worker":
        argv = [sys.executable, "-m", "celery_agents.cli", "worker"]
    elif command == "beat":
        argv = [sys.executable, "-m", "celery_agents.cli", "beat"]
    else:
        argv = [sys.executable, "-m", "celery", "-A", "celery_agents.workers.app", "worker"]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 1
    assert "ready" not in done.stdout + done.stderr
    assert "is starting" not in done.stdout + done.stderr  # the beat's banner
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if named in line]
    assert len(errors) == 1 and named in errors[0], done.stderr


@pytest.fixture
def client_spans() -> Iterator[Any]:
    """OpenTelemetry's Celery instrumentation in this (the client's) process."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


async def test_opentelemetry_sees_one_producer_and_one_consumer_span_per_run(
    tmp_path: Path, private_worker: Callable[..., WorkerProcess], client_spans: Any
) -> None:
    span_log = tmp_path / "spans.jsonl"
    private_worker(extra_env={"SPAN_LOG": str(span_log)})
    message = await echo("traced").run("hello")
    producers = [
        s
        for s in client_spans.get_finished_spans()
        if s.kind.name == "PRODUCER" and s.attributes.get("messaging.message.id") == message.run_id
    ]
    assert len(producers) == 1
    producer = producers[0].get_span_context()

    def consumers() -> list[dict[str, Any]]:
        return [
            s
            for s in read_lines(span_log)
            if s["kind"] == "CONSUMER" and s["task_id"] == message.run_id
        ]

    assert until(lambda: len(consumers()) == 1), read_lines(span_log)
    consumer = consumers()[0]
    assert consumer["trace_id"] == format(producer.trace_id, "032x")
    assert consumer["parent_id"] == format(producer.span_id, "016x")
