"""The fault suite: tests that inject a fault for real and count what happened to the runs.

Run with ``make test-faults`` (``pytest tests/faults``); ``make test`` leaves this folder out
(``--ignore=tests/faults`` in pyproject's ``addopts``; a path named on the command line is
still collected). Every test here is marked ``faults``. The fixtures of ``tests/conftest.py``
(``agents``, ``scripted_model``, ``private_worker``, ``stack``...) apply here too.

A test records what it observed with the session-wide ``fault_report`` fixture::

    fault_report.record("worker kill -9 mid-run", injected=1, started=1, completed=1,
                        lost=0, duplicated=0, recovery=[5.2])

``recovery`` (optional) is the seconds from the fault to each run going on again; the table
shows their p50 and max.

Record before asserting, from what was measured (never constants), so a failing run still
shows its row. At the end of the session the rows are printed as a table and written as
markdown to ``tests/faults/last_run.md`` (git-ignored), or to ``$CELERY_AGENTS_FAULT_TABLE``.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

TABLE_ENV = "CELERY_AGENTS_FAULT_TABLE"
DEFAULT_TABLE = Path(__file__).with_name("last_run.md")
HEADERS = (
    "fault",
    "injected",
    "runs started",
    "completed",
    "lost",
    "duplicated",
    "recovery p50 / max",
)

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class FaultRow:
    fault: str
    injected: int
    started: int
    completed: int
    lost: int
    duplicated: int
    test: str = ""
    recovery: tuple[float, ...] = ()  # seconds from the fault to each run going on again

    def cells(self) -> tuple[str, ...]:
        counts = (self.injected, self.started, self.completed, self.lost, self.duplicated)
        times = sorted(self.recovery)
        took = f"{times[len(times) // 2]:.1f} s / {times[-1]:.1f} s" if times else "-"
        return (self.fault, *(str(n) for n in counts), took)


class FaultReport:
    """Collects one row per injected fault (thread-safe); printed at the end of the session."""

    def __init__(self) -> None:
        self._rows: list[FaultRow] = []
        self._lock = threading.Lock()

    def record(
        self,
        fault: str,
        *,
        injected: int,
        started: int,
        completed: int,
        lost: int,
        duplicated: int,
        recovery: Sequence[float] = (),
    ) -> None:
        if not isinstance(fault, str) or not fault.strip():
            raise ValueError(f"fault must be a non-empty description, got {fault!r}")
        counts = {
            "injected": injected,
            "started": started,
            "completed": completed,
            "lost": lost,
            "duplicated": duplicated,
        }
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a count (int >= 0), got {value!r}")
        # "tests/faults/test_x.py::test_y (call)" -> the test that recorded the row.
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        with self._lock:
            self._rows.append(
                FaultRow(fault.strip(), test=test, recovery=tuple(recovery), **counts)
            )

    @property
    def rows(self) -> list[FaultRow]:
        with self._lock:
            return list(self._rows)

    def totals(self) -> FaultRow:
        rows = self.rows
        return FaultRow(
            "total",
            injected=sum(r.injected for r in rows),
            started=sum(r.started for r in rows),
            completed=sum(r.completed for r in rows),
            lost=sum(r.lost for r in rows),
            duplicated=sum(r.duplicated for r in rows),
        )

    def text_table(self) -> list[str]:
        table = [HEADERS, *(r.cells() for r in self.rows), self.totals().cells()]
        widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]

        def line(cells: tuple[str, ...]) -> str:
            first, *numbers = cells
            padded = [first.ljust(widths[0])]
            padded += [n.rjust(w) for n, w in zip(numbers, widths[1:], strict=True)]
            return " | ".join(padded)

        rule = "-+-".join("-" * w for w in widths)
        return [line(table[0]), rule, *(line(c) for c in table[1:-1]), rule, line(table[-1])]

    def markdown(self, *, outcome: str) -> str:
        def line(cells: tuple[str, ...]) -> str:
            return "| " + " | ".join(cells) + " |"

        totals = tuple(f"**{cell}**" for cell in self.totals().cells())
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return "\n".join(
            [
                f"<!-- fault suite, {when}, {outcome}; written by tests/faults/conftest.py -->",
                line(HEADERS),
                "|" + "|".join(["---", *["---:"] * (len(HEADERS) - 1)]) + "|",
                *(line(r.cells()) for r in self.rows),
                line(totals),
                "",
            ]
        )


_REPORT = pytest.StashKey[FaultReport]()


@pytest.fixture(scope="session")
def fault_report(pytestconfig: pytest.Config) -> FaultReport:
    """``fault_report.record(fault, *, injected, started, completed, lost, duplicated)``."""
    return pytestconfig.stash.setdefault(_REPORT, FaultReport())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None or not report.rows:
        return
    terminalreporter.write_sep("=", "fault table")
    for line in report.text_table():
        terminalreporter.write_line(line)
    path = Path(os.environ.get(TABLE_ENV) or DEFAULT_TABLE)
    outcome = "all tests passed" if exitstatus == 0 else f"pytest exit status {exitstatus}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.markdown(outcome=outcome), encoding="utf-8")
    except OSError as exc:
        terminalreporter.write_line(f"could not write the fault table to {path}: {exc}")
    else:
        terminalreporter.write_line(f"(markdown: {path})")


# -- shared helpers for fault tests ----------------------------------------------------------


@pytest.fixture
def empty_redis_db(agents_redis_url: str) -> Iterator[str]:
    """The URL of an empty logical database of the session's Redis, flushed afterwards.

    Workers and the facade pointed at it share nothing with the session's worker (queues,
    Celery's own keys, ours), so a test can account for every key left behind.
    """
    base = agents_redis_url.rsplit("/", 1)[0]
    admin = redis.Redis.from_url(agents_redis_url)
    try:
        databases = int(str(admin.config_get("databases")["databases"]))
        # Not 0: the session's worker, beat and facade use it.
        free = [db for db in range(databases - 1, 0, -1) if _dbsize(f"{base}/{db}") == 0]
    finally:
        admin.close()
    if not free:
        pytest.fail(f"no empty database left on {agents_redis_url}")
    url = f"{base}/{free[0]}"
    try:
        yield url
    finally:
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


def _dbsize(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.dbsize())
    finally:
        client.close()
