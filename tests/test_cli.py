"""The command line, run as a user would (a real process, the real entry point)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from celery_agents import Agent
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.facade.client import get_client
from celery_agents.keys import Keys
from celery_agents.messages import ChatMessage
from tests.conftest import Stack
from tests.support.events import FlowerFeed


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery_agents.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["worker", "--help"],
        ["beat", "--help"],
        ["schedules", "--help"],
        ["demo", "--help"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = cli(*command)
    assert result.returncode == 0 and "Usage:" in result.stdout


@pytest.mark.usefixtures("agents")
async def test_schedules_list_pause_and_resume(shared_stack: Stack) -> None:
    stats = await Agent("listed", "test:echo").run_in_background("x", interval=0.05)
    env = {**shared_stack.processes[0].env}
    keys = Keys(shared_stack.prefix)
    client = redis.Redis.from_url(shared_stack.redis_url)
    client.sadd(keys.background_index(), "expired-entry")  # an ended entry whose keys are gone
    try:
        listed = cli("schedules", "list", env=env)
        assert listed.returncode == 0 and stats.id in listed.stdout and "listed" in listed.stdout
        assert not client.sismember(keys.background_index(), "expired-entry")
        assert cli("schedules", "pause", stats.id, env=env).stdout.strip() == f"{stats.id}: paused"
        assert client.ttl(keys.background(stats.id)) == -1  # paused: kept, however long
        shown = cli("schedules", "show", stats.id, env=env).stdout
        assert "state: paused" in shown
        assert cli("schedules", "resume", stats.id, env=env).stdout.strip() == f"{stats.id}: active"
        assert client.ttl(keys.background(stats.id)) > 0
        removed = cli("schedules", "remove", stats.id, env=env)
        assert removed.stdout.strip() == f"{stats.id}: cancelled", removed.stderr
        await stats.ended(timeout=10)  # the entry's own stream says it ended
        assert not stats.is_running
    finally:
        client.close()
        await stats.cancel()  # no-op once removed


def test_a_user_mistake_is_one_line_and_a_non_zero_exit(shared_stack: Stack) -> None:
    result = cli("schedules", "show", "no-such-entry", env=shared_stack.processes[0].env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: no background run or schedule 'no-such-entry' "
        "(`celery-agents schedules list` shows them)"
    )


def on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal: (exit status, what it showed)."""
    import pty
    import select
    import time

    main_fd, child_fd = pty.openpty()
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=child_fd, stderr=child_fd, env=env
    )
    os.close(child_fd)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main_fd, 65536)
                except OSError:  # the child closed its end: all is read
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=max(1.0, deadline - time.monotonic())), shown.decode(
            errors="replace"
        )
    finally:
        process.kill()
        os.close(main_fd)


def test_run_shows_its_live_state_on_a_terminal_and_nothing_more_when_piped(
    shared_stack: Stack, tmp_path: Path, celery_agents_manifest: dict[str, Any]
) -> None:
    manifest = tmp_path / "clerk.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "tools": celery_agents_manifest["tools"],
                "agents": {"clerk": {"model": "test:tools", "tools": ["pause"]}},
            }
        )
    )
    env = {**shared_stack.processes[0].env, "CELERY_AGENTS_MANIFEST": str(manifest)}
    command = [sys.executable, "-m", "celery_agents.cli", "run", "clerk", "take a moment"]
    status, shown = on_a_terminal(command, {**env, "COLUMNS": "200"})
    assert status == 0, shown
    worker = shared_stack.processes[0].hostname
    assert f"clerk: calling pause on {worker} (" in shown, shown  # with the time so far
    assert "paused" in shown  # the answer
    piped = cli("run", "clerk", "take a moment", env=env)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "paused"
    assert "calling" not in piped.stderr and "queued" not in piped.stderr


def test_run_stream_prints_tokens(shared_stack: Stack) -> None:
    result = cli(
        "run", "writer", "tokens as they come", "--stream", env=shared_stack.processes[0].env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tokens as they come"
    assert "tokens in" in result.stderr


def test_run_iter_prints_each_member_of_a_team(shared_stack: Stack) -> None:
    result = cli(
        "run",
        "reviewers",
        "review",
        "--iter",
        "--model",
        "test:echo",
        env=shared_stack.processes[0].env,
    )
    assert result.returncode == 0, result.stderr
    assert "[analyst] Be brief.\n\nreview" in result.stdout
    assert "[critic] Be brief.\n\nreview" in result.stdout


def test_run_prints_a_teams_answers_under_their_names_or_its_message_as_json(
    shared_stack: Stack,
) -> None:
    env = shared_stack.processes[0].env
    result = cli("run", "reviewers", "review", "--model", "test:echo", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == ["[analyst]", "Be brief.", ""]
    assert "[critic]\nBe brief.\n\nreview" in result.stdout
    result = cli("run", "reviewers", "review", "--model", "test:echo", "--json", env=env)
    assert result.returncode == 0, result.stderr
    message = ChatMessage.model_validate_json(result.stdout)
    assert [m.name for m in message.associated_messages] == ["analyst", "critic"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch", "x"], "error: no agent or team 'nosuch'"),
        (["run", "reviewers", "x", "--stream"], "error: 'reviewers' is a parallel team"),
        (["flower", "--address", "0.0.0.0"], "error: Flower on 0.0.0.0 would be open to anyone"),
    ],
)
def test_cli_user_errors_are_one_line(shared_stack: Stack, args: list[str], message: str) -> None:
    result = cli(*args, env=shared_stack.processes[0].env)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_status_shows_workers_beat_queue_and_last_hour(shared_stack: Stack) -> None:
    assert cli("run", "writer", "count me", env=shared_stack.processes[0].env).returncode == 0
    result = cli("status", env=shared_stack.processes[0].env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    worker = next(p for p in shared_stack.processes if p.hostname != "beat")
    assert worker.hostname in out
    assert "beat: alive" in out
    assert f"queue {shared_stack.prefix}: 0 waiting" in out
    assert "writer" in out.split("last hour")[1]


def test_a_bad_setting_or_an_unreachable_redis_is_one_line_naming_it() -> None:
    env = {**os.environ, "CELERY_AGENTS_WORKER_CONCURRENCY": "abc"}
    result = cli("status", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: CELERY_AGENTS_WORKER_CONCURRENCY: Input")
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"redis://:not-to-be-shown@127.0.0.1:{sock.getsockname()[1]}/0"
        result = cli("status", env={**os.environ, "CELERY_AGENTS_REDIS_URL": url})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: cannot reach Redis:")
    assert "not-to-be-shown" not in result.stderr and "\n" not in result.stderr.strip()


def test_an_empty_manifest_variable_means_no_manifest_not_the_current_directory() -> None:
    result = cli("run", "writer", "x", env={**os.environ, "CELERY_AGENTS_MANIFEST": ""})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: set CELERY_AGENTS_MANIFEST to the YAML that declares your agents"
    )


def test_version_prints_the_installed_version() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"celery-agents {version('celery-agents')}"


async def test_worker_task_events_flag_turns_task_events_on(
    private_worker: Callable[..., WorkerProcess],
) -> None:
    # The banner of a worker without events says "enable -E to monitor tasks in this worker".
    worker = private_worker(
        concurrency=2, args=["-E"], extra_env={"CELERY_AGENTS_TASK_EVENTS": "false"}
    )
    assert "task events: ON" in worker.log_path.read_text(errors="replace")
    with FlowerFeed(get_client().app) as feed:  # a monitor that does not turn events on itself
        handle = await Agent("watched", "test:echo").submit("seen")
        assert (await handle.result(timeout=20)).content == "seen"
        feed.wait_for(lambda e: e["type"] == "task-succeeded" and e["uuid"] == handle.run_id)


def test_the_demo_uses_only_a_redis_it_was_told_of() -> None:
    # A named Redis that does not answer is said so at once: never another Redis instead.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"  # nothing listens there
        env = {**os.environ, "CELERY_AGENTS_REDIS_URL": dead}
        result = cli("demo", env=env)
    assert result.returncode == 1, result.stderr
    assert "CELERY_AGENTS_REDIS_URL=" in result.stderr and "does not answer" in result.stderr
    assert "started a private Redis" not in result.stderr
