"""A PostgreSQL server of a test's own (initdb in a temporary directory, a free port), which
the test may stop and start again: the machine's server is never touched."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

USER = "celery_agents"


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        done = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(done.stdout.strip())
        if (path / "postgres").exists():
            return path
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            reason = "no PostgreSQL server binaries (postgres, initdb) on this machine"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{reason}, and CI=true needs them")
            pytest.skip(reason)
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="celery-agents-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self._as, str(bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER],
            check=True,
            capture_output=True,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/postgres"

    def start(self, *, timeout: float = 30.0) -> None:
        with open(self.dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    *self._as,
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private PostgreSQL did not start:\n{log}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        done = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return done.returncode == 0

    def stop(self, *, mode: str = "fast") -> None:
        """``fast`` (SIGINT: sessions cut, a clean shutdown) or ``immediate`` (SIGQUIT)."""
        if self.process is None:
            return
        subprocess.run(
            [*self._as, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode],
            check=False,
            capture_output=True,
        )
        self.process.wait(timeout=30)
        self.process = None

    def close(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
