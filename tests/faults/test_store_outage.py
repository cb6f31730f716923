"""The run store's database stops in the middle of a flood of 1,000 runs, then comes back:
every caller gets its answer on time meanwhile, and every run lands in the database once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

import celery_agents
from celery_agents import Agent
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.facade.client import configure, get_client
from tests.faults.conftest import FaultReport
from tests.support.postgres_server import PrivatePostgres

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("agents")]

RUNS = 1000
IN_FLIGHT = 100  # callers waiting at once
RUN_TIMEOUT = 60.0  # each caller's own deadline
LAND_TIMEOUT = 90.0  # for the backlog to drain once the database is back


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.close()


def test_postgresql_stopped_mid_flood_loses_and_duplicates_no_record(
    private_worker: Callable[..., WorkerProcess],
    postgres: PrivatePostgres,
    fault_report: FaultReport,
) -> None:
    private_worker(concurrency=50, extra_env={"CELERY_AGENTS_STORE_URL": postgres.url})
    configure(get_client().settings.model_copy(update={"store_url": postgres.url}))
    answered: list[str] = []
    late: list[str] = []
    outage: dict[str, float] = {}
    milestones: dict[float, asyncio.Event] = {}

    async def one(agent: Agent, gate: asyncio.Semaphore, i: int) -> None:
        async with gate:
            started = time.monotonic()
            msg = await agent.run(f"flood {i}", timeout=RUN_TIMEOUT)
            if time.monotonic() - started > RUN_TIMEOUT:
                late.append(msg.run_id or "")
            answered.append(msg.run_id or "")
            for share, reached in milestones.items():
                if len(answered) >= RUNS * share:
                    reached.set()

    async def fault() -> None:  # down at 30% answered, back at 60%: runs went on meanwhile
        await milestones[0.3].wait()
        await asyncio.to_thread(postgres.stop, mode="fast")
        outage["down_at"] = len(answered)
        await milestones[0.6].wait()
        outage["answered_while_down"] = len(answered) - outage["down_at"]
        await asyncio.to_thread(postgres.start)

    async def flood() -> None:
        milestones.update({0.3: asyncio.Event(), 0.6: asyncio.Event()})
        agent = Agent("flooded", "test:echo")
        gate = asyncio.Semaphore(IN_FLIGHT)
        await asyncio.gather(fault(), *(one(agent, gate, i) for i in range(RUNS)))

    asyncio.run(flood())
    rows = asyncio.run(_landed(RUNS, LAND_TIMEOUT))
    ids = [r.run_id for r in rows]
    lost = len(set(answered) - set(ids))
    duplicated = len(ids) - len(set(ids))
    fault_report.record(
        "run store: PostgreSQL stopped mid-flood, started again",
        injected=1,
        started=RUNS,
        completed=len(answered),
        lost=lost,
        duplicated=duplicated,
    )
    assert len(answered) == RUNS and late == []
    assert outage["answered_while_down"] >= RUNS * 0.1  # runs went on without the database
    assert (lost, duplicated, len(ids)) == (0, 0, RUNS)
    assert all(r.state == "succeeded" and r.name == "flooded" for r in rows)


async def _landed(count: int, timeout: float) -> list[celery_agents.StoredRun]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await celery_agents.runs(agent="flooded", limit=count * 2)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)
