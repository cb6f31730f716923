"""A run that exhausts its retries is kept, shown by the CLI, and can be retried."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from celery_agents import Agent, ModelError, RunCancelled, StageError
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.facade.retry import failed_runs, retry_failed
from celery_agents.testing.scripted_server import Fail, Reply, ScriptedModelServer

pytestmark = pytest.mark.usefixtures("agents")


async def test_a_dead_lettered_run_can_be_retried_and_succeeds(
    scripted_model: ScriptedModelServer, agents_worker: WorkerProcess
) -> None:
    scripted_model.script(*[Fail(503, message="overloaded")] * 4)  # every retry fails
    with pytest.raises(ModelError, match="overloaded") as info:
        await Agent("nightly", "scripted:m").run("the nightly report")
    run_id = info.value.details.get("run_id") or (await failed_runs())[0]["run_id"]
    kept = next(r for r in await failed_runs() if r["run_id"] == run_id)
    assert kept["payload"]["prompt"] == "the nightly report"
    assert kept["error"]["type"] == "ModelError"

    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "celery_agents.cli", "runs", "failed"],
        capture_output=True,
        text=True,
        timeout=60,
        env=agents_worker.env,
    )
    assert listed.returncode == 0 and run_id in listed.stdout and "nightly" in listed.stdout

    scripted_model.script(Reply("the report, at last"))
    message = await retry_failed(run_id)
    assert message.content == "the report, at last" and message.run_id != run_id
    assert run_id not in [r["run_id"] for r in await failed_runs()]


async def test_runs_that_a_retry_cannot_fix_are_not_kept(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("too late", latency=10))
    before = len(await failed_runs(1000))
    handle = await Agent("later", "scripted:m").submit("x")
    await asyncio.to_thread(scripted_model.wait_for_requests, 1, 20)  # the model call is on
    await handle.cancel()
    with pytest.raises(RunCancelled):
        await handle.result(timeout=20)
    assert len(await failed_runs(1000)) == before


async def test_a_failed_team_run_is_kept_and_retried_as_a_whole(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(*[Fail(503, message="down")] * 4, model="first")
    chain = Agent("first", "scripted:first") | Agent("second", "test:echo")
    with pytest.raises(StageError, match="stage 'first'"):
        await chain.run("the weekly digest")
    kept = (await failed_runs())[0]
    assert kept["payload"]["node"]["name"] == "first|second"
    assert kept["error"]["type"] == "StageError"
    message = await retry_failed(kept["run_id"])  # the scripted failures are used up
    assert (message.name, message.content) == ("second", "the weekly digest")
