"""``celery-agents run``: one agent or team of the manifest, printed as it runs."""

from __future__ import annotations

import asyncio
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from .errors import UserError
from .events import RunStarted, ToolCallEvent, ToolResultEvent
from .facade import Agent, Team, TeamRun
from .facade.client import get_client
from .facade.manifest import named
from .messages import ChatMessage

STATUS_EVERY = 0.25  # seconds between redraws of the live state


def _target(name: str) -> Agent | Team | TeamRun:
    client = get_client()  # the facade's settings and manifest, read once for the process
    settings, manifest = client.settings, client.manifest
    if settings.manifest is None:
        raise UserError("set CELERY_AGENTS_MANIFEST to the YAML that declares your agents")
    return named(manifest, name)


async def run_named(
    name: str,
    prompt: str,
    *,
    stream: bool,
    iterate: bool,
    model: str | None,
    timeout: float | None,
    as_json: bool = False,
) -> None:
    target = _target(name)
    if as_json and (stream or iterate):
        raise UserError("--json prints the final ChatMessage: use it without --stream or --iter")
    if stream:
        if isinstance(target, Team):
            raise UserError(f"{name!r} is a parallel team and does not stream; use --iter")
        current = None
        async with target.run_stream(prompt, model=model, timeout=timeout) as s:
            async for chunk in s.stream():
                if isinstance(target, TeamRun) and chunk.agent != current:
                    current = chunk.agent
                    click.secho(f"\n[{current}] ", fg="cyan", nl=False)
                click.echo(chunk, nl=False)
            message = await s.get_message()
        click.echo()
    elif iterate and not isinstance(target, Agent):
        total = len(target.members)
        console = Console(stderr=True)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"{name}: members done", total=total)
            async for message in target.run_iter(prompt, model=model, timeout=timeout):
                click.echo(f"{click.style(f'[{message.name}]', fg='cyan')} {message.text}")
                progress.advance(task)
        return
    else:
        if sys.stdout.isatty() and sys.stderr.isatty():
            message = await _run_showing_state(target, name, prompt, model, timeout)
        else:  # piped or captured: the answer alone
            message = await target.run(prompt, model=model, timeout=timeout)
        if as_json:
            click.echo(message.model_dump_json())
        else:
            _print_answer(message)
    usage = message.usage
    if usage is not None:
        cost = f", ${message.cost:.6f}" if message.cost is not None else ""
        click.secho(
            f"({usage.input_tokens} tokens in, {usage.output_tokens} out{cost})",
            fg="bright_black",
            err=True,
        )
    sys.stdout.flush()


async def _run_showing_state(
    target: Agent | Team | TeamRun,
    name: str,
    prompt: str,
    model: str | None,
    timeout: float | None,
) -> ChatMessage:
    """The run, with its state live on stderr until it ends: queued, running on which
    worker, calling which tool, and the time since it was queued (gone once it ends)."""
    handle = await target.submit(prompt, model=model, timeout=timeout)
    queued = time.monotonic()
    worker, state = "a worker", "queued"

    async def follow() -> None:
        nonlocal worker, state
        async for event in handle.events():
            who = f"{event.member}: " if event.member else ""
            if isinstance(event, RunStarted):
                worker = event.worker or worker
                attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
                state = f"{who}running on {worker}{attempt}"
            elif isinstance(event, ToolCallEvent):
                state = f"{who}calling {event.tool_name} on {worker}"
            elif isinstance(event, ToolResultEvent):
                state = f"{who}running on {worker}"

    console = Console(stderr=True)
    following = asyncio.ensure_future(follow())
    ending = asyncio.ensure_future(handle.result())
    try:
        with console.status(f"{name}: queued") as status:
            while not ending.done():
                await asyncio.wait({ending}, timeout=STATUS_EVERY)
                status.update(f"{name}: {state} ({time.monotonic() - queued:.0f} s)")
        return await ending
    finally:
        for task in (following, ending):
            task.cancel()
        await asyncio.gather(following, ending, return_exceptions=True)


def _print_answer(message: ChatMessage, depth: int = 0) -> None:
    """A run's answer: a Team's as each member's under its name (nested Teams indented)."""
    members = message.associated_messages
    if not members:
        click.echo(message.text)
        return
    names = message.metadata.get("members") or [m.name for m in members]
    for name, member in zip(names, members, strict=False):
        click.secho(f"{'  ' * depth}[{name}]", fg="cyan")
        _print_answer(member, depth + 1)
