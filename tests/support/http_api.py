"""The API server of a test module, its keys, and an SSE reader over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from celery_agents.embedded.api_server import ApiProcess, start_api
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.testing.plugin import TEST_BROKER
from tests.test_cli import cli


@dataclass(frozen=True)
class Sse:
    id: int | None
    event: str
    data: Any


async def read_sse(response: httpx2.Response) -> AsyncIterator[Sse]:
    """The frames of an ``text/event-stream`` answer (comments, i.e. heartbeats, skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                raw_id = fields.get("id")
                yield Sse(
                    int(raw_id) if raw_id is not None else None,
                    fields.get("event", "message"),
                    json.loads(fields["data"]),
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def new_key(api: ApiProcess, tenant: str, *admin: str) -> str:
    made = cli("keys", "create", "--tenant", tenant, *admin, env=api.env)
    assert made.returncode == 0, made.stderr
    return made.stdout.split()[-1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def serve(redis_url: str, manifest: Path, worker: WorkerProcess) -> ApiProcess:
    """``celery-agents serve`` sending to ``worker``'s queue (and broker)."""
    env = {"CELERY_AGENTS_QUEUE": worker.env["CELERY_AGENTS_QUEUE"]}
    if TEST_BROKER:
        env["CELERY_AGENTS_BROKER_URL"] = TEST_BROKER
    return start_api(redis_url, manifest=manifest, extra_env=env)


@pytest.fixture(scope="module")
def api(
    agents_redis_url: str, celery_agents_manifest_path: Path, agents_worker: WorkerProcess
) -> Iterator[ApiProcess]:
    """``celery-agents serve`` for the module, sending to the session's worker."""
    api = serve(agents_redis_url, celery_agents_manifest_path, agents_worker)
    try:
        yield api
    finally:
        api.stop()
