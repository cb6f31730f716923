"""The embedded `local` model (llama.cpp + SmolLM2) through a real worker. Shape, not wording."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from celery_agents import Agent, Job, OutputValidationError
from celery_agents.embedded.worker import WorkerProcess
from tests.support.models import Verdict

pytestmark = [pytest.mark.local_model, pytest.mark.usefixtures("agents")]

VERDICT = Job(
    name="verdict",
    prompt="The service answered 200 OK in 12 ms. Is it healthy? Answer in JSON.",
    required_return_type=Verdict,
)


async def test_a_local_run_and_stream_return_text_with_usage() -> None:
    agent = Agent("local", "local:smollm2", "You are concise.", model_settings={"max_tokens": 24})
    msg = await agent.run("Name one colour.", timeout=120)
    assert isinstance(msg.content, str) and msg.content.strip()
    assert msg.usage is not None and msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0

    async with agent.run_stream("Name one animal.", timeout=120) as stream:
        chunks = [chunk async for chunk in stream.stream()]
        final = await stream.get_message()
    assert len(chunks) > 1
    assert "".join(chunks) == final.content and final.content.strip()
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_a_typed_job_is_answered_under_the_schemas_grammar() -> None:
    """llama.cpp turns the JSON Schema sent as ``response_format`` into a grammar, so even a
    135M model's answer parses and validates as the class."""
    agent = Agent("local", "local:smollm2", model_settings={"temperature": 0.0})
    msg = await agent.run_job(VERDICT, timeout=120)
    assert isinstance(msg.content, Verdict)
    assert msg.usage is not None and msg.usage.output_tokens > 0


async def test_an_answer_cut_off_by_the_token_cap_fails_typed_with_what_was_written() -> None:
    agent = Agent("local", "local:smollm2", model_settings={"max_tokens": 6})
    with pytest.raises(OutputValidationError, match="does not match Verdict") as info:
        await agent.run_job(VERDICT, timeout=120)
    assert info.value.details["output_type"] == "Verdict"
    raw = info.value.details["raw"]
    assert isinstance(raw, str)
    assert raw == "" or raw.lstrip().startswith("{")  # the grammar's start, cut off


async def test_the_workers_token_cap_bounds_a_run_that_sets_none(
    private_worker: Callable[..., WorkerProcess],
) -> None:
    private_worker(concurrency=1, extra_env={"CELERY_AGENTS_LOCAL_MAX_TOKENS": "8"})
    story = "Write a long story about the sea."
    msg = await Agent("local", "local:smollm2").run(story, timeout=120)
    assert msg.usage is not None and 0 < msg.usage.output_tokens <= 8


def local_servers_of(pid: int) -> list[int]:
    """The embedded model servers that process ``pid`` started (its children, from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"celery_agents.llm.local" in command:
            found.append(int(entry.name))
    return found


async def test_a_killed_worker_leaves_no_model_server_behind(
    private_worker: Callable[..., WorkerProcess],
) -> None:
    worker = private_worker(concurrency=1)
    msg = await Agent("local", "local:smollm2", model_settings={"max_tokens": 4}).run(
        "Hi.", timeout=120
    )
    assert msg.usage is not None
    (server,) = local_servers_of(worker.process.pid)
    watch = os.pidfd_open(server)  # readable once that process has ended
    try:
        worker.process.send_signal(signal.SIGKILL)  # no atexit, no shutdown: the pipe closes
        worker.process.wait(timeout=10)
        ended, _, _ = select.select([watch], [], [], 15)
    finally:
        os.close(watch)
    assert ended, "the embedded model server outlived its worker"
