"""Debian's chromium for the console's browser tests (nothing is downloaded): skipped when it
is not installed, failed when CI=true (``.ci/run`` installs it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CELERY_AGENTS_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def need_chromium() -> str:
    """The chromium to drive; skips (or fails, with CI=true) the test without one."""
    if Path(CHROMIUM).is_file() or shutil.which(CHROMIUM):
        return CHROMIUM
    reason = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true needs it")
    pytest.skip(reason)


def artifact(*parts: str) -> Path:
    """Where a test keeps what it leaves for people to look at (screenshots)."""
    path = ARTIFACTS.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
