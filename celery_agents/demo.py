"""``celery-agents demo``: everything from nothing, then one agent run three ways.

Uses the Redis named in ``CELERY_AGENTS_REDIS_URL``, else starts a private one (never one it
was not told of); uses OpenAI if ``OPENAI_API_KEY`` is set, else the embedded ``local`` model;
starts a worker, a beat and the HTTP API with its console (printing its URL and an admin
key); runs ``await agent.run``, ``run_stream`` and ``run_sync`` and more; stops what it started
(``keep_console``: after Ctrl+C).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import click
import yaml
from pydantic import BaseModel

from .config.settings import Settings, shown_url
from .embedded.api_server import free_port, start_api
from .embedded.redis_server import redis_answers, start_redis_server
from .embedded.worker import start_beat, start_worker
from .errors import OutputValidationError
from .facade import Agent, configure
from .facade.bridge import run_sync
from .facade.client import get_client, shutdown
from .facade.stored import run as stored_run
from .facade.stored import usage as stored_usage
from .facade.stored import with_store
from .jobs import Job
from .messages import AgentResponse, Talk
from .store.keys import create_key, revoke_key
from .store.url import shown, store_url

CONSOLE_PORT = 8000  # the console's, if free (else any free one)
SYSTEM_PROMPT = "You are a helpful, concise assistant."


class Triage(BaseModel):
    """The demo job's typed answer (at module level, so the worker imports the class)."""

    severity: Literal["low", "medium", "high"]
    summary: str


TRIAGE = Job(
    name="triage",
    prompt="Our API has answered HTTP 500 to every request since 09:12. "
    "Triage it: a severity and a one-line summary, in JSON.",
    required_return_type=Triage,
)


def _say(text: str) -> None:
    click.secho(f"» {text}", fg="cyan", err=True)


@contextlib.contextmanager
def _redis(settings: Settings) -> Iterator[str]:
    """The Redis the user named in ``CELERY_AGENTS_REDIS_URL``, else a private one: a demo
    never writes into a Redis nobody named to it."""
    if os.environ.get("CELERY_AGENTS_REDIS_URL"):
        if not redis_answers(settings.redis_url):
            raise click.ClickException(
                f"CELERY_AGENTS_REDIS_URL={shown_url(settings.redis_url)} does not answer "
                "(unset it, and the demo starts a private Redis)"
            )
        _say(f"using the Redis named in CELERY_AGENTS_REDIS_URL: {shown_url(settings.redis_url)}")
        yield settings.redis_url
        return
    server = start_redis_server()
    _say(f"started a private Redis at {shown_url(server.url)} (CELERY_AGENTS_REDIS_URL is unset)")
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def _model() -> Iterator[tuple[str, dict[str, str]]]:
    if os.environ.get("OPENAI_API_KEY"):
        model = os.environ.get("CELERY_AGENTS_DEMO_MODEL") or "openai:gpt-4o-mini"  # "": unset
        _say(f"OPENAI_API_KEY is set: using {model}")
        yield model, {}
        return
    from .llm.local import spawn_local_server

    started = time.monotonic()
    server = spawn_local_server()
    _say(
        f"no OPENAI_API_KEY: started the embedded local model (SmolLM2-135M, llama.cpp) at "
        f"{server.base_url} in {time.monotonic() - started:.1f}s"
    )
    try:
        yield "local:smollm2", {"CELERY_AGENTS_LOCAL_BASE_URL": server.base_url}
    finally:
        server.stop()


def run_demo(prompt: str, *, keep_console: bool = False) -> None:
    settings = Settings()
    with (
        _redis(settings) as redis_url,
        _model() as (model, model_env),
        tempfile.TemporaryDirectory(prefix="celery-agents-demo-") as scratch,
    ):
        manifest = _manifest(Path(scratch), model)
        worker = start_worker(
            redis_url,
            manifest=manifest,
            concurrency=4,
            extra_env=model_env,
            key_prefix=settings.key_prefix,
        )
        _say(f"started a worker ({worker.hostname})")
        beat = start_beat(
            redis_url, manifest=manifest, extra_env=model_env, key_prefix=settings.key_prefix
        )
        _say("started a beat (it fires background runs)")
        configure(settings, redis_url=redis_url, manifest=manifest)
        with _console(redis_url, manifest, settings):
            try:
                agent = Agent("demo", model, SYSTEM_PROMPT, model_settings={"max_tokens": 120})
                asyncio.run(_show(agent, prompt))
                if keep_console:
                    _say("the console stays up until Ctrl+C")
                    _wait_for_ctrl_c()
            finally:
                shutdown()
                beat.stop()
                worker.stop()
                _say("stopped the beat and the worker")


def _manifest(scratch: Path, model: str) -> Path:
    """The demo's manifest: its agent (for the console's "start a run") and a tenant."""
    path = scratch / "agents.yaml"
    data = {
        "agents": {"demo": {"model": model, "system_prompt": SYSTEM_PROMPT}},
        "tenants": {"demo": {}},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextlib.contextmanager
def _console(redis_url: str, manifest: Path, settings: Settings) -> Iterator[None]:
    """The HTTP API and its console, with an admin key printed to log in with."""
    if store_url(settings.store_url) is None:
        _say("no console: the API keeps its keys in the run store, which is off")
        yield
        return
    api = start_api(
        redis_url, manifest=manifest, key_prefix=settings.key_prefix, port=_console_port()
    )
    made = None
    try:
        made, key = run_sync(with_store(lambda store: create_key(store, "demo", admin=True)))
        _say(f"the console: {api.url} (log in with this admin key, made for the demo)")
        click.echo(key)
        yield
    finally:
        api.stop()
        if made is not None:  # the key served this demo only
            key_id = made.key_id
            run_sync(with_store(lambda store: revoke_key(store, key_id)))
            shutdown()
        _say("stopped the console (and revoked its key)")


def _console_port() -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", CONSOLE_PORT))
        except OSError:
            return free_port()
    return CONSOLE_PORT


def _wait_for_ctrl_c() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo()


async def _show(agent: Agent, prompt: str) -> None:
    began = datetime.datetime.now(datetime.UTC)
    _say(f"await agent.run({prompt!r})")
    message = await agent.run(prompt)
    click.echo(message.content)
    _usage(message.usage, message.response_time)

    _say("agent.run_stream(...): tokens as they arrive")
    async with agent.run_stream("Now say it differently, in two sentences.") as stream:
        async for chunk in stream.stream():
            click.echo(chunk, nl=False)
        final = await stream.get_message()
    click.echo()
    _usage(final.usage, final.response_time)

    _say("agent.run_sync(...)")
    message = await asyncio.to_thread(agent.run_sync, "Summarise our conversation in five words.")
    click.echo(message.content)
    _usage(message.usage, message.response_time)
    _say(f"conversation {agent.conversation_id} holds {len(await agent.get_history())} messages")

    _say("await agent.run_job(TRIAGE): a typed answer, validated on the worker")
    try:
        typed = await agent.run_job(TRIAGE, store_history=False)
    except OutputValidationError as exc:  # a small model may still miss the shape
        click.echo(f"{exc.message} (raw: {exc.details.get('raw')!r})")
    else:
        click.echo(repr(typed.content))
        _usage(typed.usage, typed.response_time)

    settings = {"max_tokens": 60}
    optimist = Agent(
        "optimist", agent.model, "You see the bright side. One sentence.", model_settings=settings
    )
    skeptic = Agent(
        "skeptic", agent.model, "You see the risks. One sentence.", model_settings=settings
    )
    editor = Agent(
        "editor",
        agent.model,
        "Merge the views you are given into one sentence.",
        model_settings=settings,
    )
    team = optimist & skeptic
    _say(f"a Team ({team.name}, a Celery chord): await team.run(...)")
    message = await team.run("Should we move our nightly reports onto a task queue?")
    for member in message.associated_messages:
        click.echo(f"[{member.name}] {member.content}")
    _usage(message.usage, None)

    pipeline = team | editor
    _say(f"a TeamRun ({pipeline.name}, a Celery chain): async for item in execute_iter(...)")
    async for item in pipeline.execute_iter("Should we move our nightly reports onto a queue?"):
        match item:
            case Talk():
                click.echo(f"  {item.source.name} -> {item.targets[0].name}")
            case AgentResponse():
                click.echo(f"[{item.agent_name}] {_brief(item.message.content)}")

    _say("agent.run_in_background(..., max_count=3, interval=1.0): the count, live")
    stats = await agent.run_in_background(
        "Give one tip for reliable job queues.", max_count=3, interval=1.0, store_history=False
    )
    for count in range(1, 4):
        await stats.wait_for_messages(count, timeout=120)
        click.echo(f"  message_count={stats.message_count}: {stats.messages[-1].content}")
    await stats.wait()
    _say(f"is_running={agent.is_running}, errors={len(stats.errors)}")
    await _stored(began, stats.messages[-1].run_id)


async def _stored(began: datetime.datetime, last: str | None) -> None:
    """What the run store kept of the demo (it outlives Redis' hour)."""
    url = store_url(get_client().settings.store_url)
    if url is None:
        _say("the run store is off (CELERY_AGENTS_STORE_URL=none)")
        return
    for _ in range(100):  # the workers' writers land records within a second or so
        if not last or await stored_run(last) is not None:
            break
        await asyncio.sleep(0.1)
    rows = await stored_usage(group_by=["agent"], since=began)
    _say(f"the run store ({shown(url)}) kept:")
    for row in rows:
        click.echo(f"  {row.agent}: {row.runs} runs, {row.input_tokens + row.output_tokens} tokens")
    _say("celery-agents runs list shows them (runs show RUN_ID: prompt and answer)")


def _brief(content: object) -> str:
    return " / ".join(map(str, content)) if isinstance(content, list) else str(content)


def _usage(usage: object, seconds: float | None) -> None:
    _say(f"usage: {usage}" + (f"; worker time {seconds:.2f}s" if seconds is not None else ""))
