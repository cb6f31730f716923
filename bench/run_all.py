"""`make bench`: every part of issue 8's table, one process each, then one table of all rows
and ``bench/results.json`` (rows plus the machine they were measured on).

Each part starts its own private Redis, workers and model server and stops them, so a part
that fails or hangs cannot spoil the next one. Knobs: ``BENCH_QUICK=1`` (small workloads, a
sanity run), ``BENCH_PARTS=roundtrip,relay`` (a subset; both written to
``results-quick.json``, leaving the full run's figures alone),
``BENCH_PART_TIMEOUT`` (seconds per part).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

from figures import QUICK, Row, load_rows, print_table

from celery_agents.embedded.redis_server import find_redis_server_binary

HERE = Path(__file__).resolve().parent
PARTS = {
    "roundtrip": "1",
    "relay": "2",
    "throughput": "3",
    "concurrency": "4",
    "journal": "4",
    "fanin": "5",
    "teams": "6, 7",
    "background": "8",
    "enqueue": "9",
    "memory": "10",
    "worker_cpu": "11",
    "store": "12, 13",
    "delivery": "14",
    "limits": "extra",
    "api": "15",
}
TIMEOUT = float(os.environ.get("BENCH_PART_TIMEOUT", "900"))


def run_part(name: str, out: Path) -> bool:
    """Run ``bench/<name>.py`` in its own session; stop it (and all it started) on timeout."""
    print(f"\n== {name} (row {PARTS[name]})", flush=True)
    argv = [sys.executable, str(HERE / f"{name}.py"), "--json", str(out)]
    part = subprocess.Popen(argv, cwd=HERE.parent, start_new_session=True)
    try:
        return part.wait(TIMEOUT) == 0
    except subprocess.TimeoutExpired:
        print(f"!! {name} ran past {TIMEOUT:g} s: stopping it", flush=True)
        return False
    finally:
        if part.poll() is None:
            part.terminate()  # the part's finally blocks stop its workers and Redis
            try:
                part.wait(60)
            except subprocess.TimeoutExpired:
                part.kill()
                part.wait()
        reap(part.pid, name)


def reap(group: int, name: str) -> None:
    """Stop what a part left running in its own process group (only what it started: a
    worker still starting up when the part was stopped, say)."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        left = members(group)
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        print(f"!! {name} left {left} behind: sent them {sig.name}", flush=True)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)  # poll interval of a wait with a deadline


def members(group: int) -> list[str]:
    """``pid command`` of each process in a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[2]) == group:
            found.append(f"{stat.parent.name} {cmdline[:80].strip()}")
    return found


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text().split()
    server = find_redis_server_binary()
    said = subprocess.run([server, "--version"], capture_output=True, text=True, check=False)
    redis_version = next((w[2:] for w in said.stdout.split() if w.startswith("v=")), "?")
    return {
        "nproc": os.cpu_count(),
        "cpu": models[0] if models else platform.processor(),
        "memory_mib": int(meminfo[meminfo.index("MemTotal:") + 1]) // 1024,
        "os": platform.platform(),
        "python": platform.python_version(),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "redis_py": version("redis"),
        "openai": version("openai"),
        "redis_server": redis_version,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": QUICK,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    wanted = [p.strip() for p in os.environ.get("BENCH_PARTS", ",".join(PARTS)).split(",")]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        print(f"unknown parts: {', '.join(unknown)} (known: {', '.join(PARTS)})")
        return 2
    started = time.monotonic()
    about = machine()
    rows: list[Row] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        for name in wanted:
            out = Path(folder) / f"{name}.json"
            if run_part(name, out) and out.exists():
                rows += load_rows(out)
            else:
                failed.append(name)
                rows.append(Row(PARTS[name], f"{name}: FAILED (see its output above)", "", None))
    seconds = time.monotonic() - started
    print(
        f"\n== all rows ({seconds:.0f} s; {about['nproc']} x {about['cpu']}; Python "
        f"{about['python']}, Celery {about['celery']}, Redis {about['redis_server']})"
    )
    print_table(rows)
    results = {"machine": about, "seconds": round(seconds), "failed": failed}
    results["rows"] = [asdict(r) for r in rows]
    # Only a full run replaces the figures; a quick or partial one goes beside them.
    partial = QUICK or set(wanted) != set(PARTS)
    path = HERE / ("results-quick.json" if partial else "results.json")
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
