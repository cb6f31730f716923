"""``start_api``: ``celery-agents serve`` in a subprocess, for tests, benchmarks and the demo."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .worker import WorkerProcess, child_env


@dataclass
class ApiProcess(WorkerProcess):
    url: str = ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_api(
    redis_url: str,
    *,
    manifest: Path | None = None,
    extra_env: dict[str, str] | None = None,
    key_prefix: str = "celery_agents",
    port: int | None = None,
    timeout: float = 30.0,
) -> ApiProcess:
    """Start the API on 127.0.0.1 (a free port unless given); return once it answers."""
    port = port or free_port()
    env = child_env(redis_url, manifest, key_prefix, extra_env, None)
    log_path = Path(tempfile.mkstemp(prefix="celery-agents-api-", suffix=".log")[1])
    command = [sys.executable, "-m", "celery_agents.cli", "serve", "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    api = ApiProcess(
        hostname="api", process=process, log_path=log_path, env=env, url=f"http://127.0.0.1:{port}"
    )
    try:
        _wait_up(api, timeout)
    except BaseException:
        api.kill()
        raise
    return api


def _wait_up(api: ApiProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{api.url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if api.process.poll() is not None or time.monotonic() > deadline:
            raise ConfigError(f"the API did not come up:\n{api.log_tail()}")
        time.sleep(0.05)  # a startup wait with a deadline
