"""Redis restarts under a worker, a beat and waiting clients: they reconnect and go on, and a
client whose Redis stays away gets a clear error by its deadline instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_agents import Agent, CeleryAgentsError, Settings, StreamGap, configure
from celery_agents.embedded.redis_server import RedisServer, start_redis_server
from celery_agents.embedded.worker import WorkerProcess, start_beat, start_worker
from celery_agents.events import RunDone
from celery_agents.facade.client import shutdown
from celery_agents.facade.handle import RunHandle
from celery_agents.testing.plugin import TEST_WORKER_ENV
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer

pytestmark = pytest.mark.faults

ENV = {**TEST_WORKER_ENV, "CELERY_AGENTS_VISIBILITY_TIMEOUT": "4"}


class Restartable:
    """A private Redis that can be taken down and brought back on its port, data kept."""

    def __init__(self) -> None:
        self.server: RedisServer = start_redis_server()
        self.binary = str(self.server.process.args[0])  # type: ignore[index]
        self.process: subprocess.Popen[bytes] = self.server.process

    @property
    def url(self) -> str:
        return self.server.url

    def down(self, *, save: bool = True) -> None:
        """``SHUTDOWN SAVE`` (a restart that keeps every write), or a crash (``kill -9``)."""
        if save:
            with (
                redis.Redis.from_url(self.url) as client,
                contextlib.suppress(redis.ConnectionError),
            ):
                client.shutdown(save=True)
        else:
            self.process.kill()
        self.process.wait()

    def up(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.server.port),
             "--save", "", "--appendonly", "no", "--dir", "."],
            cwd=self.server.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        with redis.Redis.from_url(self.url, socket_connect_timeout=0.2) as probe:
            while True:
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    # A server starting up: try again shortly (it says nothing when ready).
                    time.sleep(0.05)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.server.stop()


@pytest.fixture
def restartable(
    celery_agents_manifest_path: Path, agents: Settings
) -> Iterator[tuple[Restartable, list[WorkerProcess]]]:
    made = Restartable()
    processes: list[WorkerProcess] = []
    configure(
        Settings(redis_url=made.url, manifest=celery_agents_manifest_path, visibility_timeout=4)
    )
    try:
        yield made, processes
    finally:
        shutdown()
        for process in processes:
            process.kill()
        made.stop()
        configure(agents)


async def _dones(run_id: str) -> int:
    events = [e async for e in RunHandle.attach(run_id).events(timeout=20)]
    return sum(isinstance(e, RunDone) for e in events)


async def test_worker_beat_and_client_ride_out_a_redis_restart(
    restartable: tuple[Restartable, list[WorkerProcess]],
    celery_agents_manifest_path: Path,
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    server, processes = restartable
    processes.append(start_worker(server.url, manifest=celery_agents_manifest_path, extra_env=ENV))
    processes.append(start_beat(server.url, manifest=celery_agents_manifest_path, extra_env=ENV))
    agent = Agent("steady", "scripted:steady")
    await agent.run("warm up", store_history=False)
    background = await agent.run_in_background("tick", max_count=6, interval=0.5)
    await background.wait_for_messages(2, timeout=30)
    scripted_model.script(Reply("survived", latency=3), model="steady")
    in_flight = await agent.submit("across the restart")
    await asyncio.to_thread(
        lambda: [r for r in scripted_model.wait_for_requests(4, 20) if r.model == "steady"]
    )

    await asyncio.to_thread(server.down)
    await asyncio.to_thread(server.up)

    outcomes: dict[str, Any] = {}
    try:
        outcomes["in flight"] = (await in_flight.result(timeout=60)).content
        after = await agent.submit("after the restart")
        outcomes["after"] = (await after.result(timeout=60)).content
        await background.wait_for_messages(6, timeout=60)
        await asyncio.wait_for(background.wait(), 30)
        outcomes["background"] = background.message_count
    except (CeleryAgentsError, TimeoutError, OSError) as exc:
        outcomes["error"] = exc
        outcomes["background errors"] = list(background.errors)
    dones = await _dones(in_flight.run_id) if "in flight" in outcomes else 0
    completed = ("in flight" in outcomes) + ("after" in outcomes) + outcomes.get("background", 0)
    fault_report.record(
        "Redis restart (worker, beat, waiting client)",
        injected=1,
        started=8,
        completed=int(completed),
        lost=8 - int(completed),
        duplicated=max(dones - 1, 0) + max(outcomes.get("background", 6) - 6, 0),
    )
    assert "error" not in outcomes, outcomes
    assert outcomes["in flight"] == "survived"
    assert outcomes["after"] == "after the restart"
    assert outcomes["background"] == 6
    assert dones == 1


async def test_a_client_whose_redis_stays_down_gets_an_error_by_its_deadline(
    restartable: tuple[Restartable, list[WorkerProcess]],
    celery_agents_manifest_path: Path,
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    server, processes = restartable
    processes.append(start_worker(server.url, manifest=celery_agents_manifest_path, extra_env=ENV))
    scripted_model.script(Reply("too late", latency=3), model=f"down-{uuid.uuid4().hex[:6]}")
    handle = await Agent("stranded", "scripted:down").submit("wait for me", timeout=5)
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20)

    await asyncio.to_thread(server.down, save=False)
    started = time.monotonic()
    error: BaseException | None = None
    try:
        await handle.result(timeout=8)
    except (CeleryAgentsError, TimeoutError, OSError, redis.RedisError) as exc:
        error = exc
    waited = time.monotonic() - started
    await asyncio.to_thread(server.up)  # so the fixture's teardown finds it

    fault_report.record(
        "Redis down for good under a waiting client",
        injected=1,
        started=1,
        completed=0,
        lost=0 if error is not None else 1,  # lost = the caller left hanging without an answer
        duplicated=0,
    )
    assert error is not None
    assert waited < 8 + 5, f"waited {waited:.1f}s for a run whose deadline was 8s"
    assert (
        "redis" in str(error).lower()
        or "connect" in str(error).lower()
        or ("timed out" in str(error).lower())
    ), error


async def test_runs_that_end_while_the_broker_is_away_leave_later_runs_acknowledged(
    restartable: tuple[Restartable, list[WorkerProcess]],
    celery_agents_manifest_path: Path,
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    # The consumer resets its hub when the connection drops and attaches the pool again once
    # reconnected; runs that end in between must not leave the acks of every later run
    # waiting (the prefetch window then fills, and the worker takes nothing more).
    server, processes = restartable
    processes.append(
        start_worker(server.url, manifest=celery_agents_manifest_path, concurrency=2, extra_env=ENV)
    )
    agent = Agent("steady", "scripted:steady")
    await agent.run("warm up", store_history=False)
    scripted_model.script(Reply("a", latency=1), Reply("b", latency=1.5), model="steady")
    in_flight = [await agent.submit(f"in flight {i}", store_history=False) for i in range(2)]
    await asyncio.to_thread(scripted_model.wait_for_requests, 3, 20)

    await asyncio.to_thread(server.down)
    await asyncio.sleep(0.5)  # the outage itself: both model calls end while it lasts
    await asyncio.to_thread(server.up)

    finished = [(await handle.result(timeout=60)).content for handle in in_flight]
    later: list[str] = []
    with contextlib.suppress(CeleryAgentsError, TimeoutError):
        # The two runs above hold the whole prefetch window until acknowledged: unless they
        # are, the first of these is never even taken from the queue.
        for i in range(4):
            handle = await agent.submit(f"after {i}", store_history=False)
            later.append((await handle.result(timeout=30)).content)
    fault_report.record(
        "Redis restart while runs end (acks after reconnect)",
        injected=1,
        started=6,
        completed=len(finished) + len(later),
        lost=6 - len(finished) - len(later),
        duplicated=0,
    )
    assert finished == ["a", "b"]
    assert later == [f"after {i}" for i in range(4)], f"only {len(later)} of 4 later runs ran"


async def test_a_stream_whose_redis_restarted_empty_never_passes_for_a_whole_one(
    restartable: tuple[Restartable, list[WorkerProcess]],
    celery_agents_manifest_path: Path,
    scripted_model: ScriptedModelServer,
    fault_report: Any,
) -> None:
    server, processes = restartable
    processes.append(start_worker(server.url, manifest=celery_agents_manifest_path, extra_env=ENV))
    words = " ".join(f"s{i}" for i in range(200))
    scripted_model.script(Reply(words, token_delay=0.02), model="gappy")
    chunks: list[str] = []
    gap: StreamGap | None = None
    async with Agent("gappy", "scripted:gappy").run_stream("tell it all") as stream:

        async def read() -> None:
            async for chunk in stream.stream():
                chunks.append(str(chunk))

        reading = asyncio.create_task(read())
        deadline = time.monotonic() + 30
        while len(chunks) < 40:  # well into the answer
            assert time.monotonic() < deadline and not reading.done(), chunks
            await asyncio.sleep(0.01)
        await asyncio.to_thread(server.down, save=False)  # kill -9: Redis keeps nothing
        (server.server.workdir / "dump.rdb").unlink(missing_ok=True)
        await asyncio.to_thread(server.up)
        try:
            await reading
        except StreamGap as exc:
            gap = exc
        message = await stream.get_message()
    whole = "".join(chunks) == message.content
    fault_report.record(
        "Redis restarted empty mid-stream",
        injected=1,
        started=1,
        completed=int(message.content == words),
        lost=0 if whole or gap is not None else 1,  # lost: a short stream passed for whole
        duplicated=0,
    )
    assert message.content == words  # the final message is whole
    assert gap is not None, f"a stream of {len(chunks)} chunks passed for the whole answer"
    assert gap.result is not None and gap.result.content == words
    assert "started over" in str(gap) and stream.gap is not None
