"""The worker's Celery app: ``celery -A celery_agents.workers.app worker`` works as is.

Tasks are registered here, and the process's runtime (event loop, Redis, model clients, tools)
is made as the worker starts (``worker_init``, before its banner): a bad manifest or a tool
that does not import ends the worker there, with the error in one line and exit status 1.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery
from celery.signals import (
    task_received,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from ..config.settings import Settings
from ..errors import CeleryAgentsError
from ..redis_check import check_fleet_redis
from ..tasks.app import create_app
from .bodies import register_tasks
from .runtime import close_runtime, get_runtime


def create_worker_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    app = create_app(settings)
    register_tasks(app)
    app.conf.worker_consumer = "celery_agents.workers.celery_private:AgentConsumer"
    app.conf.celery_agents_settings = settings
    return app


@worker_init.connect  # type: ignore[untyped-decorator]
def _on_init(**_: Any) -> None:
    """Load the manifest and the tools now: a worker that cannot run anything never says
    ready (Celery's signal dispatch logs an exception and goes on; ``SystemExit`` it lets
    through). So does a Redis that refuses the URL's password or database: Celery's consumer
    would retry it forever, as it rightly does a Redis that is only away."""
    settings: Settings = app.conf.celery_agents_settings
    try:
        check_fleet_redis(settings)
        get_runtime(settings)
    except CeleryAgentsError as exc:
        sys.stderr.write(f"celery-agents worker: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


@worker_ready.connect  # type: ignore[untyped-decorator]
def _on_ready(sender: Any = None, **_: Any) -> None:
    runtime = get_runtime(app.conf.celery_agents_settings)
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", None)
    runtime.start_heartbeat(sender.hostname, int(concurrency or app.conf.worker_concurrency))


@task_received.connect  # type: ignore[untyped-decorator]
def _on_received(request: Any = None, **_: Any) -> None:
    """Held messages stay invisible to other workers while this one lives (leases.py)."""
    tag = getattr(getattr(request, "message", None), "delivery_tag", None)
    if tag is not None:
        get_runtime(app.conf.celery_agents_settings).leases.track_delivery(str(tag))


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _on_child_start(**_: Any) -> None:
    get_runtime(app.conf.celery_agents_settings)  # prefork child: its own loop and clients


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _on_shutdown(**_: Any) -> None:
    close_runtime()


app = create_worker_app()
