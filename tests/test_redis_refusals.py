"""A Redis that refuses the URL for good (no password, a wrong one, a database it does not
have), or a URL that is not one, is one line naming ``CELERY_AGENTS_REDIS_URL``, at once: from
the CLI, a worker, the beat and Python. A Redis that is only away is still waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celery_agents import Agent, CeleryAgentsError, ConfigError, Settings, configure
from celery_agents.embedded.redis_server import RedisServer, free_port, start_redis_server

PASSWORD = f"pw-{uuid.uuid4().hex}"
# Before: `run` waited 96 s with no password and 9 s with a wrong one; a traceback of 66 to
# 88 lines for a URL without a scheme or a database out of range.
DEADLINE = 30.0


@pytest.fixture(scope="module")
def locked() -> Iterator[RedisServer]:
    server = start_redis_server(password=PASSWORD)
    yield server
    server.stop()


URLS: dict[str, tuple[Callable[[RedisServer], str], str]] = {
    "no password": (lambda s: f"redis://{s.host}:{s.port}/0", "needs a password, and"),
    "wrong password": (
        lambda s: f"redis://:not-it@{s.host}:{s.port}/0",
        "refused the URL's user or password (invalid username-password pair",
    ),
    "no such database": (
        lambda s: f"redis://:{PASSWORD}@{s.host}:{s.port}/99",
        "has no database '99'",
    ),
    "no scheme": (lambda s: f"{s.host}:{s.port}", "not a Redis URL"),
    "a port that is not one": (lambda s: f"redis://{s.host}:port/0", "its port is not a number"),
}


def cli(
    url: str, *args: str, manifest: Path, timeout: float = DEADLINE
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CELERY_AGENTS_REDIS_URL": url,
        "CELERY_AGENTS_MANIFEST": str(manifest),
        "CELERY_AGENTS_STORE_URL": "none",
        "CELERY_AGENTS_QUEUE": f"refusals-{uuid.uuid4().hex[:8]}",
    }
    return subprocess.run(
        [sys.executable, "-m", "celery_agents.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(process: subprocess.CompletedProcess[str]) -> str:
    lines = (process.stdout + process.stderr).strip().splitlines()
    assert process.returncode == 1, lines
    assert len(lines) == 1, "\n".join(lines)
    assert PASSWORD not in lines[0] and "not-it" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(URLS))
@pytest.mark.parametrize("command", [["run", "writer", "hello"], ["status"]])
def test_the_cli_says_what_is_wrong_with_the_url_in_one_line(
    locked: RedisServer, celery_agents_manifest_path: Path, case: str, command: list[str]
) -> None:
    make_url, expected = URLS[case]
    line = one_line(cli(make_url(locked), *command, manifest=celery_agents_manifest_path))
    assert line.startswith("error: CELERY_AGENTS_REDIS_URL: "), line
    assert expected in line


@pytest.mark.parametrize("case", ["no password", "wrong password", "no such database"])
@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_worker_or_beat_refused_by_its_redis_exits_1_at_start(
    locked: RedisServer, celery_agents_manifest_path: Path, case: str, command: str
) -> None:
    make_url, expected = URLS[case]
    done = cli(make_url(locked), command, manifest=celery_agents_manifest_path, timeout=60)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"celery-agents {command}: CELERY_AGENTS_REDIS_URL: " in done.stderr
    assert expected in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_whose_redis_is_away_keeps_trying(celery_agents_manifest_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {
        **os.environ,
        "CELERY_AGENTS_REDIS_URL": url,
        "CELERY_AGENTS_MANIFEST": str(celery_agents_manifest_path),
        "CELERY_AGENTS_STORE_URL": "none",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery_agents.cli", "worker", "-c", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert worker.stdout is not None
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while not any("Trying again" in line for line in seen):  # Celery's consumer retrying
            assert time.monotonic() < deadline, "".join(seen[-30:])
            line = worker.stdout.readline()
            assert line, f"the worker exited ({worker.wait()}): " + "".join(seen[-30:])
            seen.append(line)
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait(timeout=30)
        if worker.stdout is not None:
            worker.stdout.close()


@pytest.mark.parametrize("case", ["no password", "wrong password", "no such database"])
async def test_python_gets_a_config_error_at_once(
    locked: RedisServer, agents: Settings, celery_agents_manifest_path: Path, case: str
) -> None:
    make_url, expected = URLS[case]
    configure(Settings(redis_url=make_url(locked), manifest=celery_agents_manifest_path))
    try:
        with pytest.raises(ConfigError) as raised:
            await Agent("writer", "test:echo").run("hello")
        assert isinstance(raised.value, CeleryAgentsError)
        assert raised.value.message.startswith("CELERY_AGENTS_REDIS_URL: ")
        assert expected in raised.value.message
        assert PASSWORD not in raised.value.message
    finally:
        configure(agents)


def test_settings_refuse_a_url_that_is_not_a_redis_url_without_repeating_it() -> None:
    from pydantic import ValidationError

    for bad in ("127.0.0.1:6379", "redis://:secret@host:x/0", "redis:///0", "redis://h/db1"):
        with pytest.raises(ValidationError) as raised:
            Settings(redis_url=bad)
        assert "redis_url" in str(raised.value)
        assert "secret" not in str(raised.value)
    for good in (
        "redis://h",
        "redis://:p@h:1/2",
        "rediss://h:6380/0?ssl_cert_reqs=none",
        "unix:///s",
    ):
        assert Settings(redis_url=good).redis_url == good
