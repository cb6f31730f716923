"""What ``celery-agents runs list|show|usage`` print: rich tables, or JSON with ``--json``."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import UserError
from .store.queries import StoredRun, UsageRow

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PREVIEW = 80  # characters of a fire's answer in ``schedules history``


def parse_when(text: str | None, option: str) -> dt.datetime | None:
    """``7d``, ``24h``, ``30m`` (back from now), or an ISO date or time (UTC unless it says)."""
    if text is None:
        return None
    ago = _AGO.match(text.strip())
    if ago:
        seconds = float(ago.group(1)) * _UNITS[ago.group(2)]
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(
            f"{option} {text!r}: expected a time like 2026-11-01, 2026-11-01T08:00, 7d or 24h"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def print_runs(console: Console, rows: Sequence[StoredRun], *, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps([_brief(r) for r in rows]))
        return
    if not rows:
        console.print("no runs in the store match")
        return
    table = Table("ended (UTC)", "kind", "name", "model", "state", "tokens", "cost", "took")
    table.add_column("run id", no_wrap=True)
    for r in rows:
        table.add_row(
            f"{r.ended_at:%Y-%m-%d %H:%M:%S}",
            r.kind,
            r.name,
            r.model or "-",
            r.state,
            f"{r.input_tokens + r.output_tokens}",
            _cost(r.cost),
            "-" if r.duration is None else f"{r.duration:.2f}s",
            r.run_id,
        )
    console.print(table)


def print_run(console: Console, run: StoredRun, *, as_json: bool) -> None:
    if as_json:
        console.print_json(run.model_dump_json())
        return
    table = Table(show_header=False, box=None)
    for key, value in _brief(run).items():
        if value is not None:
            table.add_row(key, str(value))
    console.print(table)
    if run.prompt is not None:
        console.print("\n[bold]prompt[/bold]")
        console.print(run.prompt, markup=False, highlight=False)
    if run.message is not None:
        for call in run.message.tool_calls:
            outcome = call.error if call.error is not None else call.result
            console.print(
                f"\n[bold]tool call[/bold] {call.tool_name}({json.dumps(call.args)}) -> {outcome}",
                highlight=False,
            )
        console.print("\n[bold]answer[/bold]")
        console.print(run.message.text, markup=False, highlight=False)


def print_history(console: Console, rows: Sequence[StoredRun], *, as_json: bool) -> None:
    """A schedule's fires: when, state, the start of the answer (or why it failed or was
    skipped), tokens and cost."""
    if as_json:
        console.print_json(json.dumps([_fire(r) for r in rows]))
        return
    if not rows:
        console.print("no fires of it in the store yet")
        return
    table = Table("ended (UTC)", "state", "output", "tokens", "cost")
    table.add_column("run id", no_wrap=True)
    for r in rows:
        fire = _fire(r)
        table.add_row(
            f"{r.ended_at:%Y-%m-%d %H:%M:%S}",
            r.state,
            fire["output"] or "-",
            f"{r.input_tokens + r.output_tokens}",
            _cost(r.cost),
            r.run_id,
        )
    console.print(table)


def _fire(run: StoredRun) -> dict[str, Any]:
    if run.message is not None:
        output: str | None = run.message.text
    else:
        output = run.error_message
    if output is not None and len(output) > PREVIEW:
        output = output[:PREVIEW] + "…"
    return {
        "run_id": run.run_id,
        "ended_at": run.ended_at.isoformat(),
        "state": run.state,
        "output": output,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost": run.cost,
    }


def print_usage(
    console: Console, rows: Sequence[UsageRow], groups: Sequence[str], *, as_json: bool
) -> None:
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    if not rows:
        console.print("no runs in the store match")
        return
    table = Table(*groups, "runs", "errors", "tokens in", "tokens out", "requests", "cost")
    for r in rows:
        keys = [str(getattr(r, g)) if getattr(r, g) is not None else "-" for g in groups]
        table.add_row(
            *keys,
            str(r.runs),
            str(r.errors),
            str(r.input_tokens),
            str(r.output_tokens),
            str(r.requests),
            _cost(r.cost),
        )
    console.print(table)


def _brief(run: StoredRun) -> dict[str, Any]:
    return run.model_dump(mode="json", exclude={"prompt", "message"})


def _cost(cost: float | None) -> str:
    return "-" if cost is None else f"${cost:.6f}"
