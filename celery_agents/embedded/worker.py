"""``start_worker``: a real ``celery-agents`` worker in a subprocess, for tests and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ..errors import ConfigError
from ..keys import Keys
from .processes import end_process


@dataclass
class WorkerProcess:
    """A running worker; ``stop()`` shuts it down warm (SIGTERM), then kills it."""

    hostname: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        end_process(self.process, timeout)
        if not os.environ.get("CELERY_AGENTS_KEEP_LOGS"):
            self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """``kill -9``: no shutdown of any kind."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not os.environ.get("CELERY_AGENTS_KEEP_LOGS"):
            self.log_path.unlink(missing_ok=True)


def start_worker(
    redis_url: str,
    *,
    manifest: Path | None = None,
    concurrency: int = 16,
    pool: str | None = None,
    extra_env: dict[str, str] | None = None,
    key_prefix: str = "celery_agents",
    timeout: float = 30.0,
    cwd: Path | None = None,
    args: Sequence[str] = (),
) -> WorkerProcess:
    """Start ``celery-agents worker`` and wait until it is consuming (its heartbeat is up).

    ``args``: more options of ``celery-agents worker``, e.g. ``["--task-events"]``.
    """
    hostname = f"worker-{uuid.uuid4().hex[:8]}@%h"
    env = child_env(redis_url, manifest, key_prefix, extra_env, cwd)
    cwd = cwd or Path.cwd()
    log_path = Path(tempfile.mkstemp(prefix="celery-agents-worker-", suffix=".log")[1])
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery_agents.cli",
                "worker",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--hostname",
                hostname,
                *(["--pool", pool] if pool else []),
                *args,
            ],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(hostname=hostname, process=process, log_path=log_path, env=env)
    try:
        _wait_ready(worker, redis_url, Keys(key_prefix), timeout)
    except BaseException:  # interrupted or failed while waiting: leave no worker behind
        worker.kill()
        raise
    return worker


def start_beat(
    redis_url: str,
    *,
    manifest: Path | None = None,
    extra_env: dict[str, str] | None = None,
    key_prefix: str = "celery_agents",
    timeout: float = 30.0,
    cwd: Path | None = None,
    wait: bool = True,
) -> WorkerProcess:
    """Start ``celery-agents beat``; with ``wait``, return once it holds the lock and ticks."""
    env = child_env(redis_url, manifest, key_prefix, extra_env, cwd)
    log_path = Path(tempfile.mkstemp(prefix="celery-agents-beat-", suffix=".log")[1])
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery_agents.cli", "beat", "--loglevel", "INFO"],
            env=env,
            cwd=cwd or Path.cwd(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    beat = WorkerProcess(hostname="beat", process=process, log_path=log_path, env=env)
    if wait:
        try:
            _wait_beat(beat, redis_url, Keys(key_prefix), timeout)
        except BaseException:  # interrupted or failed while waiting: leave no beat behind
            beat.kill()
            raise
    return beat


def _wait_beat(beat: WorkerProcess, redis_url: str, keys: Keys, timeout: float) -> None:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while not client.exists(keys.beat_alive()):
            if beat.process.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(f"the beat did not come up:\n{beat.log_tail()}")
            time.sleep(0.05)  # a startup wait with a deadline
    finally:
        client.close()


def child_env(
    redis_url: str,
    manifest: Path | None,
    key_prefix: str,
    extra_env: dict[str, str] | None,
    cwd: Path | None,
) -> dict[str, str]:
    env = {
        **os.environ,
        "CELERY_AGENTS_REDIS_URL": redis_url,
        "CELERY_AGENTS_KEY_PREFIX": key_prefix,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    if manifest is not None:
        env["CELERY_AGENTS_MANIFEST"] = str(manifest)
    root = str(cwd or Path.cwd())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _wait_ready(worker: WorkerProcess, redis_url: str, keys: Keys, timeout: float) -> None:
    client = redis.Redis.from_url(redis_url)
    node = worker.hostname.split("@")[0]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise ConfigError(
                    f"the worker exited with {worker.process.returncode}:\n{worker.log_tail()}"
                )
            hostname = _live_worker(client, keys, node)
            if hostname is not None:
                worker.hostname = hostname
                return
            time.sleep(0.05)  # a startup wait with a deadline, not a test's timing
    finally:
        client.close()
    raise ConfigError(f"the worker did not come up within {timeout}s:\n{worker.log_tail()}")


def _live_worker(client: redis.Redis, keys: Keys, node: str) -> str | None:
    """The full hostname of the worker ``node@...`` once its heartbeat key exists."""
    for key in client.scan_iter(match=keys.worker(f"{node}@*")):
        name: str = key.decode().split(":worker:", 1)[1]
        return name
    return None
