"""Flower sees every run with a short summary; no secret reaches Flower, the broker or results."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from celery_agents import Agent, ModelError
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.testing.scripted_server import ScriptedModelServer

SECRET = "sk-test-NEVER-LEAK-3f9a1c77e2"
AUTH = "admin:s3cret-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        body: bytes = response.read()
        return body


def until(check: Any, timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy: Flower only has an HTTP API, and it
    learns of tasks from worker events a moment after they happen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@pytest.fixture
def keyed_worker(private_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """The only worker with the provider's key, on a queue of its own."""
    return private_worker(extra_env={"KEYED_API_KEY": SECRET})


@pytest.fixture
def flower(keyed_worker: WorkerProcess) -> Iterator[int]:
    port = free_port()
    env = {k: v for k, v in keyed_worker.env.items() if k != "KEYED_API_KEY"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery_agents.cli",
            "flower",
            "--port",
            str(port),
            "--basic-auth",
            AUTH,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert until(lambda: get(port, "/api/workers"), 30), "Flower did not come up"
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _events_flowing(port: int) -> bool:
    for _ in range(5):  # a run whose first event came before Flower listened never completes
        run_id = Agent("warm-up", "test:echo").run_sync("x").run_id or ""
        if until(lambda run_id=run_id: _seen(port, run_id), 5):
            return True
    return False


def _seen(port: int, run_id: str) -> dict[str, Any] | None:
    """Flower's record of a finished run, once it holds its name and its result."""
    try:
        task: dict[str, Any] = json.loads(get(port, f"/api/task/info/{run_id}") or b"{}")
    except urllib.error.HTTPError:
        return None  # 404 until Flower heard of it
    return task if task.get("state") == "SUCCESS" and task.get("name") else None


class RedisTap:
    """Every command Redis executes (MONITOR): task messages, events, results, everything."""

    def __init__(self, url: str) -> None:
        self.lines: list[str] = []
        self._client = redis.Redis.from_url(url)
        self._monitor = self._client.monitor().__enter__()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for command in self._monitor.listen():
                self.lines.append(str(command.get("command", "")))
        except Exception:
            return

    def close(self) -> None:
        self._client.close()


def test_flower_shows_runs_with_a_summary_and_no_secret_anywhere(
    scripted_model: ScriptedModelServer,
    flower: int,
    agents_redis_url: str,
    keyed_worker: WorkerProcess,
) -> None:
    # The worker starts without task events (the default); Flower turns them on. Its HTTP API
    # answers before its event receiver is consuming: wait until it has seen a whole run, so
    # the run under test is watched from its first event.
    assert "task events: OFF" in keyed_worker.log_path.read_text(errors="replace")
    assert _events_flowing(flower), "Flower never received a whole run's task events"
    tap = RedisTap(agents_redis_url)
    try:
        msg = Agent("keyed-agent", "keyed:m").run_sync("summarise the incident report " * 5)
        assert scripted_model.requests[-1].headers["authorization"] == "<redacted>"  # used
        run_id = msg.run_id or ""

        task = until(lambda: _seen(flower, run_id), 20)
        assert task, "Flower never saw the run succeed"
        assert task["name"] == "celery_agents.run_agent"
        assert task["worker"].startswith("worker-")
        summary = json.loads(task["kwargs"])
        assert summary["agent"] == "keyed-agent" and summary["run_id"] == run_id
        assert summary["prompt"].endswith("…") and len(summary["prompt"]) <= 61
        paths = ("/api/tasks", f"/api/task/info/{run_id}", "/api/workers", "/api/workers?refresh=1")
        assert SECRET.encode() not in b"".join(get(flower, path) for path in paths)
        assert any(run_id in line for line in tap.lines)  # the tap saw the run go by
        assert [line for line in tap.lines if SECRET in line] == []
    finally:
        tap.close()


def test_flower_shows_a_failed_runs_own_exception(flower: int) -> None:
    assert _events_flowing(flower), "Flower never received a whole run's task events"
    with pytest.raises(ModelError) as raised:
        Agent("doomed", "test:fail").run_sync("x")
    message = raised.value.message

    def failed() -> dict[str, Any] | None:
        tasks: dict[str, Any] = json.loads(get(flower, "/api/tasks?state=FAILURE") or b"{}")
        for task in tasks.values():
            if task.get("exception") and "doomed" in (task.get("kwargs") or ""):
                return dict(task)
        return None

    task = until(failed, 20)
    assert task, "Flower never saw the run fail"
    assert task["exception"] == f"ModelError({message!r})"
    assert "ExceptionWithTraceback" not in task["exception"]
    assert task["traceback"].rstrip().endswith(f"celery_agents.errors.ModelError: {message}")
