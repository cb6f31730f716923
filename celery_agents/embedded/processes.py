"""Ending a child process the same way everywhere: SIGTERM, then SIGKILL after a timeout."""

from __future__ import annotations

import subprocess
from typing import Any


def end_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """Ask ``process`` to stop (SIGTERM); kill it if it has not within ``timeout`` seconds.
    Safe to call more than once."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
