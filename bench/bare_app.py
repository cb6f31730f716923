"""The bare engine for side-by-side figures: a plain Celery app (no-op and sleeping tasks) and
the plain worker that runs it (``celery -A bare_app worker``) on the Redis it is given."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from celery_agents.embedded.processes import end_process

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bare"

app = Celery("bare", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@app.task(name="bare.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    return None


@app.task(name="bare.sleep")  # type: ignore[untyped-decorator]
def sleep(seconds: float) -> None:
    time.sleep(seconds)  # the workload: a blocking wait, as a synchronous model call would be


def use_redis(url: str) -> None:
    """Point this process's bare app at ``url`` (before its first send)."""
    app.conf.update(broker_url=url, result_backend=url)


@dataclass
class BareWorker:
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> None:
        end_process(self.process, timeout)


def start_bare_worker(redis_url: str, *, pool: str = "threads", concurrency: int = 8) -> BareWorker:
    """Start ``celery -A bare_app worker`` and return once it has answered a no-op task."""
    env = {
        **os.environ,
        "BENCH_REDIS_URL": redis_url,
        "PYTHONPATH": str(Path(__file__).resolve().parent),
    }
    argv = [sys.executable, "-m", "celery", "-A", "bare_app", "worker", "-P", pool]
    # INFO, as our workers log (embedded.worker): Celery's received/succeeded lines per task
    # are work both sides do.
    argv += ["-c", str(concurrency), "-Q", QUEUE, "-l", "INFO"]
    worker = BareWorker(
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )
    try:
        use_redis(redis_url)
        noop.delay().get(timeout=60)  # waits for the worker to consume
    except BaseException:
        worker.stop()
        raise
    return worker
