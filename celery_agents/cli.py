"""``celery-agents``: the command line (``worker``, ``demo``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .errors import CeleryAgentsError


class _Group(click.Group):
    """Turns our errors into one clear line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CeleryAgentsError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
def main() -> None:
    """Run LLM agents as Celery jobs, streamed back through Redis."""


@main.command()
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Runs in flight per worker process (default: CELERY_AGENTS_WORKER_CONCURRENCY).",
)
@click.option("--queues", "-Q", default=None, help="Comma-separated queues to consume.")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--pool", "-P", default=None, help="Celery pool (default: threads).")
@click.option("--hostname", "-n", default=None, help="Worker node name, e.g. worker1@%h.")
def worker(
    concurrency: int | None,
    queues: str | None,
    loglevel: str,
    pool: str | None,
    hostname: str | None,
) -> None:
    """Start a worker that executes agent runs."""
    from .workers.app import app

    argv = [
        "worker",
        "--loglevel",
        loglevel,
        "--task-events",
        "--pool",
        pool or app.conf.worker_pool,
        "--concurrency",
        str(concurrency or app.conf.worker_concurrency),
    ]
    if queues:
        argv += ["--queues", queues]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)


@main.command()
@click.option("--prompt", default="In one sentence, what is a task queue?", show_default=True)
def demo(prompt: str) -> None:
    """Start what is missing (Redis, a model, a worker), run an agent three ways, stop it all."""
    from .demo import run_demo

    run_demo(prompt)


if __name__ == "__main__":
    main()
