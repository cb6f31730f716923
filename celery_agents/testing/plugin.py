"""pytest plugin: a private Redis, the scripted model server and a real worker, per session.

Fixtures (override ``celery_agents_manifest`` in your ``conftest.py`` to declare your
providers, tools and agents; ``scripted_model.url`` is the scripted server's base URL):

- ``agents_redis_url``: a Redis of the session's own (started on a free port; never one it
  did not start, so nothing else is ever flushed).
- ``scripted_model``: the ``ScriptedModelServer``, reset before each test.
- ``agents_worker``: a ``celery-agents worker`` subprocess serving the manifest.
- ``agents_beat``: a ``celery-agents beat`` subprocess (for background runs and schedules).
- ``agents``: the facade configured to use them (``Settings``).
- ``agents_store_url``: the run store of the session's workers and facade: a SQLite file of
  the session's own (set as ``CELERY_AGENTS_STORE_URL`` for the session), unless that
  variable already names one.

``CELERY_AGENTS_TEST_BROKER_URL=amqp://...`` runs the session's worker on that broker (Redis
stays the result backend); ``CELERY_AGENTS_KEEP_LOGS=1`` keeps the test workers' log files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..config.settings import Settings
from ..embedded.redis_server import RedisServer, start_redis_server
from ..embedded.worker import WorkerProcess, start_beat, start_worker
from ..facade.client import configure, shutdown
from .scripted_server import ScriptedModelServer

# Run the session's worker on another broker (e.g. amqp://...): Redis stays the result backend.
TEST_BROKER = os.environ.get("CELERY_AGENTS_TEST_BROKER_URL") or None

# Workers under test retry fast, so failure paths finish in well under a second.
TEST_WORKER_ENV = {
    "CELERY_AGENTS_MODEL_RETRY_BASE_DELAY": "0.02",
    "CELERY_AGENTS_MODEL_RETRY_MAX_DELAY": "0.5",
    "CELERY_AGENTS_MODEL_MAX_RETRIES": "3",
}


@pytest.fixture(scope="session", autouse=True)
def agents_store_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    chosen = os.environ.get("CELERY_AGENTS_STORE_URL")
    if chosen:
        yield chosen
        return
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('store') / 'runs.db'}"
    os.environ["CELERY_AGENTS_STORE_URL"] = url
    try:
        yield url
    finally:
        os.environ.pop("CELERY_AGENTS_STORE_URL", None)


@pytest.fixture(scope="session")
def agents_redis() -> Iterator[RedisServer]:
    server = start_redis_server()
    try:
        yield server
    finally:
        shutdown()  # the facade lets go of this Redis before it stops
        server.stop()


@pytest.fixture(scope="session")
def agents_redis_url(agents_redis: RedisServer) -> str:
    return agents_redis.url


@pytest.fixture(scope="session")
def _scripted_model_server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture
def scripted_model(_scripted_model_server: ScriptedModelServer) -> ScriptedModelServer:
    _scripted_model_server.reset()
    return _scripted_model_server


@pytest.fixture(scope="session")
def celery_agents_manifest(_scripted_model_server: ScriptedModelServer) -> dict[str, Any]:
    """The manifest the session's worker serves; override it to add tools and agents."""
    return {"providers": {"scripted": {"base_url": _scripted_model_server.url}}}


@pytest.fixture(scope="session")
def celery_agents_manifest_path(
    celery_agents_manifest: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("celery-agents") / "agents.yaml"
    path.write_text(yaml.safe_dump(celery_agents_manifest), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def agents_worker(
    agents_redis_url: str, celery_agents_manifest_path: Path
) -> Iterator[WorkerProcess]:
    # A queue of the session's own: a shared broker (RabbitMQ) may hold others' messages.
    queue = f"celery-agents-test-{uuid.uuid4().hex[:8]}"
    env = {**TEST_WORKER_ENV, "CELERY_AGENTS_QUEUE": queue}
    if TEST_BROKER:
        env["CELERY_AGENTS_BROKER_URL"] = TEST_BROKER
    worker = start_worker(agents_redis_url, manifest=celery_agents_manifest_path, extra_env=env)
    try:
        yield worker
    finally:
        worker.stop()
        if TEST_BROKER and TEST_BROKER.startswith("amqp"):
            from kombu.connection import Connection

            with Connection(TEST_BROKER) as connection:  # type: ignore[no-untyped-call]
                connection.default_channel.queue_delete(queue)


@pytest.fixture(scope="session")
def agents_beat(
    agents_redis_url: str, celery_agents_manifest_path: Path, agents_worker: WorkerProcess
) -> Iterator[WorkerProcess]:
    """A ``celery-agents beat`` for the session (background runs and manifest schedules)."""
    # The worker's queue and broker: the beat's fires go where the session's worker listens.
    env = {k: v for k, v in agents_worker.env.items() if k.startswith("CELERY_AGENTS_")}
    beat = start_beat(agents_redis_url, manifest=celery_agents_manifest_path, extra_env=env)
    try:
        yield beat
    finally:
        beat.stop()


@pytest.fixture
def agents(
    agents_redis_url: str, celery_agents_manifest_path: Path, agents_worker: WorkerProcess
) -> Settings:
    """The facade pointed at the session's Redis and manifest, with a worker running."""
    settings = Settings(
        redis_url=agents_redis_url,
        manifest=celery_agents_manifest_path,
        queue=agents_worker.env["CELERY_AGENTS_QUEUE"],
        broker_url=TEST_BROKER,
    )
    configure(settings)
    return settings
