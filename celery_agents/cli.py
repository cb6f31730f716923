"""``celery-agents``: demo, run, worker, beat, flower, status, schedules, runs, deliveries."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import click
import redis
from pydantic import ValidationError

from .config.settings import Settings
from .errors import CeleryAgentsError
from .redis_check import refusal


class _Group(click.Group):
    """Turns our errors into one clear line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CeleryAgentsError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            click.echo(f"error: {_bad_settings(exc)}", err=True)
            sys.exit(1)
        except (redis.ConnectionError, redis.ResponseError) as exc:
            problem = refusal(exc, _redis_url())
            if problem is None and isinstance(exc, redis.ResponseError):
                raise
            click.echo(f"error: {problem or f'cannot reach Redis: {exc}'}", err=True)
            sys.exit(1)


def _redis_url() -> str:
    try:
        return Settings().redis_url
    except ValidationError:
        return ""


def _bad_settings(exc: ValidationError) -> str:
    """Settings come from CELERY_AGENTS_* variables: name the variable, not the field."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"CELERY_AGENTS_{field.upper()}" if field else "the settings"
        problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


@click.group(cls=_Group)
@click.version_option(
    package_name="celery-agents", prog_name="celery-agents", message="%(prog)s %(version)s"
)
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
@click.option(
    "--pool",
    "-P",
    default=None,
    help="A Celery pool: threads (the default: runs wait on models, not on the CPU), solo, "
    "prefork.",
)
@click.option("--hostname", "-n", default=None, help="Worker node name, e.g. worker1@%h.")
@click.option(
    "--task-events",
    "-E",
    is_flag=True,
    help="Send task events from the start, for Flower and `celery events` (default: "
    "CELERY_AGENTS_TASK_EVENTS).",
)
def worker(
    concurrency: int | None,
    queues: str | None,
    loglevel: str,
    pool: str | None,
    hostname: str | None,
    task_events: bool,
) -> None:
    """Start a worker that executes agent runs."""
    from .workers.app import app

    argv = [
        "worker",
        "--loglevel",
        loglevel,
        "--concurrency",
        str(concurrency or app.conf.worker_concurrency),
    ]
    if task_events or app.conf.worker_send_task_events:  # or CELERY_AGENTS_TASK_EVENTS
        argv.append("--task-events")  # Flower needs them
    if pool:
        argv += ["--pool", pool]
    if queues:
        argv += ["--queues", queues]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)


@main.command()
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Start the scheduler that fires background runs and manifest schedules.

    Start one (or more: the extras stand by and take over within seconds if it dies).
    """
    from .config.manifest import AgentsManifest
    from .store.database import check_store
    from .workers.app import app

    settings = app.conf.celery_agents_settings
    if settings.manifest:  # a manifest that does not load: one line, before the beat's banner
        AgentsManifest.from_yaml(settings.manifest)
    check_store(settings.store_url)  # and a run store that does not open
    app.Beat(scheduler="celery_agents.scheduler.beat:AgentsScheduler", loglevel=loglevel).run()


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5555, show_default=True, type=int)
@click.option(
    "--basic-auth",
    envvar="CELERY_AGENTS_FLOWER_BASIC_AUTH",
    default=None,
    help="user:password (or CELERY_AGENTS_FLOWER_BASIC_AUTH); required off loopback.",
)
def flower(address: str, port: int, basic_auth: str | None) -> None:
    """Start Flower with our app: every run as a task, with a short secret-free summary."""
    from .errors import UserError

    if not basic_auth and address not in ("127.0.0.1", "localhost", "::1"):
        raise UserError(
            f"Flower on {address} would be open to anyone: set --basic-auth user:password "
            "(or CELERY_AGENTS_FLOWER_BASIC_AUTH), or listen on 127.0.0.1"
        )
    from .workers.app import app

    argv = ["flower", f"--address={address}", f"--port={port}"]
    if basic_auth:
        argv.append(f"--basic-auth={basic_auth}")
    app.start(argv=argv)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--loglevel", "-l", default="info", show_default=True)
def serve(host: str, port: int, loglevel: str) -> None:
    """The HTTP API (runs, SSE, schedules, usage) behind API keys (`keys create`)."""
    from .config.settings import Settings
    from .errors import ConfigError
    from .store.database import check_store
    from .store.url import store_url

    settings = Settings()
    if store_url(settings.store_url) is None:
        raise ConfigError(
            "the API keeps its keys in the run store, and CELERY_AGENTS_STORE_URL=none turns it off"
        )
    check_store(settings.store_url)
    from .api.server import serve as serve_api

    serve_api(host, port, log_level=loglevel.lower())


@main.group()
def keys() -> None:
    """API keys of `serve`: each one a tenant's (or an admin's); only their hash is kept."""


@keys.command("create")
@click.option("--tenant", required=True, help="Whose runs the key starts and sees.")
@click.option("--admin", is_flag=True, help="The key sees and acts on every tenant's runs.")
def keys_create(tenant: str, admin: bool) -> None:
    """Make a key; it is printed once, as the last word (keep it: only its hash is stored)."""
    from .errors import UserError
    from .facade.bridge import run_sync
    from .facade.client import get_client
    from .facade.stored import with_store
    from .store.keys import create_key

    manifest = get_client().manifest
    if tenant not in manifest.tenants:  # its runs would all be refused
        known = ", ".join(sorted(manifest.tenants)) or "none"
        raise UserError(
            f"tenant {tenant!r} is not in the manifest's tenants ({known}): declare it under "
            f"tenants: in {manifest.source or 'CELERY_AGENTS_MANIFEST'} first"
        )
    made, key = run_sync(with_store(lambda store: create_key(store, tenant, admin=admin)))
    role = " (admin)" if made.admin else ""
    click.echo(f"key {made.key_id} of tenant {made.tenant}{role}: {key}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(as_json: bool) -> None:
    """Every key: its id, tenant, role, when it was made and revoked (never the key)."""
    import json

    from .facade.bridge import run_sync
    from .facade.stored import with_store
    from .store.keys import list_keys

    found = run_sync(with_store(list_keys))
    if as_json:
        click.echo(json.dumps([k.model_dump(mode="json") for k in found], indent=2))
        return
    for k in found:
        revoked = f"  revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else ""
        role = "admin" if k.admin else "tenant"
        click.echo(f"{k.key_id}  {k.tenant}  {role}  made {k.created_at:%Y-%m-%d %H:%M}{revoked}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (as `keys list` prints it): it answers 401 from now on."""
    from .errors import UserError
    from .facade.bridge import run_sync
    from .facade.stored import with_store
    from .store.keys import revoke_key

    if not run_sync(with_store(lambda store: revoke_key(store, key_id))):
        raise UserError(f"no live key {key_id!r} (keys list shows them)")
    click.echo(f"key {key_id}: revoked")


@main.group()
def schedules() -> None:
    """Manage background runs and manifest schedules."""


@schedules.command("list")
def schedules_list() -> None:
    """Every entry that has not ended."""
    from rich.console import Console
    from rich.table import Table

    from .scheduler.admin import list_entries

    rows = list_entries()
    columns = ["name", "state", "runs", "errors", "every", "next run in"]
    noted = any(row[-1] for row in rows)
    table = Table(*columns, *(["note"] if noted else []))
    table.add_column("id", no_wrap=True)  # never cut: users copy it into other commands
    for entry_id, *rest, note in rows:
        table.add_row(*rest, *([note] if noted else []), entry_id)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@schedules.command("show")
@click.argument("name")
def schedules_show(name: str) -> None:
    """One entry's counters and state (NAME as `schedules list` prints it, or its id)."""
    from .scheduler.admin import show_entry

    for key, value in show_entry(name).items():
        click.echo(f"{key}: {value}")


@schedules.command("history")
@click.argument("name")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def schedules_history(name: str, limit: int, as_json: bool) -> None:
    """Each fire of an entry, newest first, from the run store: state, output, tokens, cost."""
    from .facade.bridge import run_sync
    from .facade.stored import schedule_history
    from .runs_report import print_history

    print_history(_console(), run_sync(schedule_history(name, limit=limit)), as_json=as_json)


@schedules.command("pause")
@click.argument("name")
def schedules_pause(name: str) -> None:
    """Stop firing an entry until it is resumed (a run in flight finishes)."""
    from .scheduler.admin import pause_or_resume

    click.echo(pause_or_resume(name, "pause"))


@schedules.command("resume")
@click.argument("name")
def schedules_resume(name: str) -> None:
    """Fire a paused entry again (its next run is due at once)."""
    from .scheduler.admin import pause_or_resume

    click.echo(pause_or_resume(name, "resume"))


@schedules.command("trigger")
@click.argument("name")
def schedules_trigger(name: str) -> None:
    """Fire an entry once now (a schedule follows its overlap policy; its grid stays)."""
    from .scheduler.admin import trigger

    click.echo(trigger(name))


@schedules.command("backfill")
@click.argument("name")
@click.option("--from", "since", required=True, help="ISO time (UTC unless it says), or 7d/24h.")
@click.option("--to", "until", required=True, help="ISO time (UTC unless it says), or 7d/24h.")
def schedules_backfill(name: str, since: str, until: str) -> None:
    """Fire the schedule's times between --from and --to now, following its overlap policy."""
    from .runs_report import parse_when
    from .scheduler.admin import backfill

    start, end = parse_when(since, "--from"), parse_when(until, "--to")
    assert start is not None and end is not None
    click.echo(backfill(name, start.timestamp(), end.timestamp()))


@schedules.command("remove")
@click.argument("name")
def schedules_remove(name: str) -> None:
    """Cancel an entry: no run starts after this returns; the one in flight is cancelled. A
    manifest schedule stays removed across beat restarts until its manifest entry changes."""
    from .facade.background import BackgroundRun
    from .scheduler.admin import entry_id_of

    entry_id = entry_id_of(name)
    BackgroundRun.attach(entry_id).cancel_sync()
    click.echo(f"{entry_id}: cancelled")


@main.group()
def deliveries() -> None:
    """Deliveries of runs' outcomes (webhooks, files) that gave up after their retries."""


def _deliveries_redis() -> tuple[Any, Any, Any]:
    from .config.settings import Settings
    from .keys import Keys

    settings = Settings()
    return redis.Redis.from_url(settings.redis_url), Keys(settings.key_prefix), settings


@deliveries.command("failed")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deliveries_failed(as_json: bool) -> None:
    """Every delivery that gave up, oldest first: where to, how often tried, why it failed."""
    import dataclasses
    import datetime as dt
    import json

    from rich.table import Table

    from .scheduler.deliveries import failed_deliveries

    client, keys, _ = _deliveries_redis()
    rows = failed_deliveries(client, keys)
    console = _console()
    if as_json:
        console.print_json(json.dumps([dataclasses.asdict(r) for r in rows]))
        return
    if not rows:
        console.print("no failed deliveries")
        return
    table = Table("failed (UTC)", "target", "attempts", "last error", "run id")
    table.add_column("id", no_wrap=True)
    for r in rows:
        when = dt.datetime.fromtimestamp(r.failed_at, dt.UTC)
        table.add_row(
            f"{when:%Y-%m-%d %H:%M:%S}",
            r.target,
            str(r.attempts),
            r.last_error or "-",
            r.run_id,
            r.id,
        )
    console.print(table)


@deliveries.command("retry")
@click.argument("ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Retry every failed delivery.")
def deliveries_retry(ids: tuple[str, ...], every: bool) -> None:
    """Send failed deliveries again (by the ids `deliveries failed` prints, or --all), with a
    fresh day of retries."""
    from .errors import UserError
    from .scheduler.deliveries import retry_deliveries

    if bool(ids) == every:
        raise UserError("give the ids of failed deliveries, or --all")
    client, keys, settings = _deliveries_redis()
    count = retry_deliveries(client, keys, ids or None, max_age=settings.delivery_max_age)
    click.echo(f"{count} deliveries queued again")


@main.command()
def status() -> None:
    """Workers (concurrency, runs in flight), the beat, queue depth, background entries, and
    each agent's runs, tokens and cost over the last hour."""
    from rich.console import Console
    from rich.table import Table

    from .config.settings import Settings
    from .status import gather_status

    report = gather_status(Settings())
    console = Console(width=None if sys.stdout.isatty() else 200)
    workers = Table("worker", "concurrency", "in flight", "tools", "up", title="workers")
    for w in report.workers:
        busy = "?" if w.active is None else str(w.active)
        workers.add_row(w.hostname, str(w.concurrency), busy, str(w.tools), f"{w.up_seconds:.0f}s")
    console.print(workers if report.workers else "workers: none alive")
    console.print(f"beat: {'alive' if report.beat_alive else 'not running'}")
    for queue, depth in report.queues.items():
        console.print(f"queue {queue}: {'?' if depth is None else depth} waiting")
    states = Counter(row[2] for row in report.entries)
    counted = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
    console.print(f"background entries: {counted}")
    if report.store_backlog:
        console.print(f"run store: {report.store_backlog} records waiting for the database")
    usage = Table("agent", "runs", "errors", "tokens in", "tokens out", "cost", title="last hour")
    for agent, row in sorted(report.usage.items()):
        cost = f"${row['cost']:.6f}" if "cost" in row else "-"
        usage.add_row(
            agent,
            *(f"{row.get(k, 0):.0f}" for k in ("runs", "errors", "input_tokens", "output_tokens")),
            cost,
        )
    console.print(usage if report.usage else "last hour: no runs")


@main.command()
@click.argument("name")
@click.argument("prompt")
@click.option("--stream", is_flag=True, help="Print tokens as they arrive (agents, TeamRuns).")
@click.option("--iter", "iterate", is_flag=True, help="Print each member's message as it ends.")
@click.option("--model", default=None, help="Override the model, e.g. test:echo.")
@click.option("--timeout", default=None, type=float, help="Seconds the run may take.")
@click.option("--json", "as_json", is_flag=True, help="Print the final ChatMessage as JSON.")
def run(
    name: str,
    prompt: str,
    stream: bool,
    iterate: bool,
    model: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Run the agent or team NAME of the manifest (CELERY_AGENTS_MANIFEST) on PROMPT."""
    import asyncio

    from .runner import run_named

    asyncio.run(
        run_named(
            name,
            prompt,
            stream=stream,
            iterate=iterate,
            model=model,
            timeout=timeout,
            as_json=as_json,
        )
    )


@main.group()
def runs() -> None:
    """Runs in the run store (list, show, usage), and failed runs kept for retry."""


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


@runs.command("list")
@click.option("--agent", default=None, help="Runs of this agent.")
@click.option("--team", default=None, help="Runs of this Team or TeamRun.")
@click.option("--tenant", default=None)
@click.option("--schedule", default=None, help="Fires of this schedule or background entry.")
@click.option("--state", default=None, help="succeeded, failed, cancelled or timed_out.")
@click.option("--since", default=None, help="7d, 24h, or an ISO time (UTC).")
@click.option("--until", default=None, help="7d, 24h, or an ISO time (UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_list(
    agent: str | None,
    team: str | None,
    tenant: str | None,
    schedule: str | None,
    state: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The newest runs in the run store."""
    from .facade.bridge import run_sync
    from .facade.stored import runs as stored_runs
    from .runs_report import parse_when, print_runs

    rows = run_sync(
        stored_runs(
            agent=agent,
            team=team,
            tenant=tenant,
            schedule=schedule,
            state=state,
            since=parse_when(since, "--since"),
            until=parse_when(until, "--until"),
            limit=limit,
        )
    )
    print_runs(_console(), rows, as_json=as_json)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_show(run_id: str, as_json: bool) -> None:
    """One run: its record, prompt, tool calls and answer."""
    from .errors import UserError
    from .facade.bridge import run_sync
    from .facade.stored import run as stored_run
    from .runs_report import print_run

    found = run_sync(stored_run(run_id))
    if found is None:
        raise UserError(f"no run {run_id!r} in the run store")
    print_run(_console(), found, as_json=as_json)


@runs.command("usage")
@click.option(
    "--by",
    "group_by",
    default="agent",
    show_default=True,
    help="Comma-separated: tenant, agent, model, day.",
)
@click.option("--tenant", default=None)
@click.option("--since", default=None, help="7d, 24h, or an ISO time (UTC).")
@click.option("--until", default=None, help="7d, 24h, or an ISO time (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_usage(
    group_by: str, tenant: str | None, since: str | None, until: str | None, as_json: bool
) -> None:
    """Runs, tokens, requests and cost of agent runs, grouped."""
    from .facade.bridge import run_sync
    from .facade.stored import usage
    from .runs_report import parse_when, print_usage

    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    rows = run_sync(
        usage(
            group_by=groups,
            tenant=tenant,
            since=parse_when(since, "--since"),
            until=parse_when(until, "--until"),
        )
    )
    print_usage(_console(), rows, groups, as_json=as_json)


@runs.command("failed")
@click.option("--limit", default=50, show_default=True, type=int)
def runs_failed(limit: int) -> None:
    """The newest runs that failed after their retries."""
    import asyncio
    import time

    from rich.console import Console
    from rich.table import Table

    from .facade.retry import failed_runs

    table = Table("failed", "agent", "error")
    table.add_column("run id", no_wrap=True)
    for record in asyncio.run(failed_runs(limit)):
        ago = f"{time.time() - record['failed_at']:.0f}s ago"
        error = f"{record['error']['type']}: {record['error']['message']}"
        payload = record["payload"]
        name = payload["agent"]["name"] if "agent" in payload else payload["node"]["name"]
        table.add_row(ago, name, error[:120], record["run_id"])
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@runs.command("retry")
@click.argument("run_id")
def runs_retry(run_id: str) -> None:
    """Run a failed run again; prints its answer."""
    import asyncio

    from .facade.retry import retry_failed

    click.echo(asyncio.run(retry_failed(run_id)).text)


@main.command()
@click.option("--prompt", default="In one sentence, what is a task queue?", show_default=True)
@click.option(
    "--keep-console", is_flag=True, help="Leave the web console up at the end, until Ctrl+C."
)
def demo(prompt: str, keep_console: bool) -> None:
    """Start what is missing (Redis, a model, a worker, the console), run an agent several
    ways, stop it all."""
    from .demo import run_demo

    run_demo(prompt, keep_console=keep_console)


if __name__ == "__main__":
    main()
