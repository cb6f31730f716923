"""Put the last full ``make bench`` (``bench/results.json``) into README's "Performance"
section, between its ``bench:begin`` / ``bench:end`` markers: ``python bench/readme.py``."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from figures import Row, fmt

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def table(results: dict[str, object]) -> str:
    machine = results["machine"]
    assert isinstance(machine, dict)
    when = datetime.datetime.fromisoformat(str(machine["date"])).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Last run: {machine['nproc']} x {machine['cpu']} vCPUs, "
        f"{int(machine['memory_mib']) // 1024} GiB, Python {machine['python']}, "
        f"Celery {machine['celery']}, redis-py {machine['redis_py']}, "
        f"Redis {machine['redis_server']}, {when}, {results['seconds']} s in all.",
        "",
        "| # | figure | unit | ours | bare | ratio | target | met |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    rows = results["rows"]
    assert isinstance(rows, list)
    for item in rows:
        r = Row(**item)
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.row} | {r.figure} | {r.unit} | {fmt(r.ours)} | {fmt(r.bare)} | "
            f"{fmt(r.ratio)} | {r.target or '-'} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    results = json.loads((HERE / "results.json").read_text())
    text = README.read_text()
    block = f"{BEGIN}\n{table(results)}\n{END}"
    new, count = re.subn(re.escape(BEGIN) + ".*?" + re.escape(END), block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"README.md needs one {BEGIN} ... {END} block")
    README.write_text(new)
    print(f"README.md: table of {len(results['rows'])} rows from {results['machine']['date']}")


if __name__ == "__main__":
    main()
