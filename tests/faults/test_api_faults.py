"""The HTTP API's process killed (SIGKILL) mid-stream: it holds nothing of a run, so a client
that reconnects to a new API process with ``Last-Event-ID`` gets the rest of the events, once
each and in order, up to ``run.done``; the run itself never noticed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2

from celery_agents.embedded.api_server import ApiProcess
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer
from tests.faults.conftest import FaultReport
from tests.support.http_api import Sse, bearer, new_key, read_sse, serve


async def test_a_stream_goes_on_from_a_new_api_process_after_kill_9(
    agents_redis_url: str,
    celery_agents_manifest_path: Path,
    agents_worker: WorkerProcess,
    scripted_model: ScriptedModelServer,
    fault_report: FaultReport,
) -> None:
    words = " ".join(f"w{n}" for n in range(80))
    scripted_model.script(Reply(text=words, token_delay=0.03), model="analyst")
    first = serve(agents_redis_url, celery_agents_manifest_path, agents_worker)
    second: ApiProcess | None = None
    try:
        key = new_key(first, "northwind")
        before: list[Sse] = []
        async with httpx2.AsyncClient(base_url=first.url, timeout=30) as http:
            made = await http.post(
                "/v1/runs", json={"agent": "analyst", "prompt": "talk"}, headers=bearer(key)
            )
            run_id = made.json()["run_id"]
            async with http.stream(
                "GET", f"/v1/runs/{run_id}/events", headers=bearer(key)
            ) as answer:
                async for frame in read_sse(answer):
                    before.append(frame)
                    if len(before) == 10:
                        first.kill()  # SIGKILL, with the stream open
                        killed_at = time.monotonic()
                        break
        second = serve(agents_redis_url, celery_agents_manifest_path, agents_worker)
        headers = {**bearer(key), "Last-Event-ID": str(before[-1].id)}
        after: list[Sse] = []
        async with (
            httpx2.AsyncClient(base_url=second.url, timeout=30) as http,
            http.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as answer,
        ):
            async for frame in read_sse(answer):
                if not after:
                    recovered = time.monotonic() - killed_at
                after.append(frame)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    ids = [f.id for f in before + after]
    text = "".join(f.data["text"] for f in before + after if f.event == "text.delta")
    whole = ids == list(range(1, len(ids) + 1)) and text == words
    fault_report.record(
        "API server kill -9 mid-stream; resumed on a new one",
        injected=1,
        started=1,
        completed=int(after[-1].event == "run.done"),
        lost=0 if whole else 1,
        duplicated=len(ids) - len(set(ids)),
        recovery=[recovered],
    )
    assert whole and after[-1].event == "run.done"
