"""What the bench parts share: sizes, percentiles, process memory, result rows and the table.

Every part module has a ``measure() -> list[Row]`` and ends with ``part_main(measure)``, so it
runs on its own (``python bench/roundtrip.py``: prints its rows) or under ``run_all.py``
(``--json PATH``: also writes them for the combined table).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def size(full: int, quick: int, env: str | None = None) -> int:
    """A workload size: ``env`` when set, else the quick or the full figure."""
    if env and os.environ.get(env):
        return int(os.environ[env])
    return quick if QUICK else full


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib(pid: int | str = "self") -> int:
    """Resident memory of a process (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def threads_of(pid: int | str = "self") -> int:
    """How many threads a process has."""
    return len(os.listdir(f"/proc/{pid}/task"))


@dataclass
class Row:
    """One line of the table: ``ours`` against ``bare`` (or a bound), and the issue's target."""

    row: str
    figure: str
    unit: str
    ours: float | None
    bare: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


def ratio_row(
    row: str,
    figure: str,
    unit: str,
    ours: float,
    bare: float,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    note: str = "",
) -> Row:
    """A row judged on ``ours / bare`` (``at_most`` / ``at_least``; neither: no target)."""
    ratio = ours / bare if bare else float("inf")
    target, met = _judge("ratio", ratio, at_most, at_least)
    return Row(row, figure, unit, ours, bare, ratio, target, met, note)


def value_row(
    row: str,
    figure: str,
    unit: str,
    ours: float,
    *,
    bare: float | None = None,
    at_most: float | None = None,
    at_least: float | None = None,
    note: str = "",
) -> Row:
    """A row judged on ``ours`` itself (``bare``, when given, is shown for context)."""
    target, met = _judge("", ours, at_most, at_least)
    if target:
        target += f" {unit}"
    ratio = ours / bare if bare else None
    return Row(row, figure, unit, ours, bare, ratio, target, met, note)


def _judge(
    what: str, value: float, at_most: float | None, at_least: float | None
) -> tuple[str, bool | None]:
    prefix = f"{what} " if what else ""
    if at_most is not None:
        return f"{prefix}<= {at_most:g}", value <= at_most
    if at_least is not None:
        return f"{prefix}>= {at_least:g}", value >= at_least
    return "", None


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    magnitude = abs(value)
    if float(value).is_integer() and magnitude < 1e9:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(rows: list[Row], title: str = "") -> None:
    if title:
        print(title)
    header = f"{'#':<5}{'figure':<50}{'unit':<9}{'ours':>9}{'bare':>9}{'ratio':>7}  "
    print(f"{header}{'target':<22}met")
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        print(
            f"{r.row:<5}{r.figure:<50}{r.unit:<9}{fmt(r.ours):>9}{fmt(r.bare):>9}"
            f"{fmt(r.ratio):>7}  {r.target:<22}{met}"
        )
    notes = [(r.row, r.note) for r in rows if r.note]
    if notes:
        print("notes:")
        for row, note in notes:
            print(f"  {row:<5}{note}")
    sys.stdout.flush()


def _exit_on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the parts' finally blocks: workers and Redis stop


def part_main(measure: Callable[[], list[Row]]) -> None:
    """Run one part: print its rows; with ``--json PATH`` also write them there."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit_on_term)
    rows = measure()
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print_table(rows)


def load_rows(path: Path) -> list[Row]:
    return [Row(**item) for item in json.loads(path.read_text())]
