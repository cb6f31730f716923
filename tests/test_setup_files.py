"""The Makefile and pyproject.toml a fresh clone starts from: quiet, and current."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# What pyenv's shim prints for a Python that is installed but not selected, and its status.
PYENV_SHIM = """#!/bin/sh
echo "pyenv: $(basename "$0"): command not found" >&2
echo "The \\`$(basename "$0")' command exists in these Python versions:" >&2
exit 127
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
def test_the_makefiles_python_probe_prints_nothing_for_a_pyenv_shim_without_that_python(
    tmp_path: Path,
) -> None:
    for name in ("python3.13", "python3.12"):
        shim = tmp_path / name
        shim.write_text(PYENV_SHIM)
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHON", None)  # the probe runs only when PYTHON is not given
    # -n: print the commands that set up .venv (expanding the probe), run none of them.
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", ".venv/.installed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert " -m venv .venv" in result.stdout
    assert str(tmp_path) not in result.stdout  # a shim that fails is not taken for a Python


def test_the_license_is_an_spdx_expression_that_setuptools_reads() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"  # a TOML table is deprecated
    # A string license is read by setuptools 77 and newer only.
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"]
