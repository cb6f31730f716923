"""Tools the test worker loads through the manifest."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from celery_agents import idempotency_key, tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


def slow_sync(seconds: float = 0.0) -> str:
    """A plain function, registered by import path only; runs off the event loop."""
    time.sleep(seconds)
    return "done"


@tool
def broken() -> str:
    """Always raises."""
    raise RuntimeError("the tool is broken")


@tool
async def fetch_logs(service: str, minutes: int = 60) -> str:
    """Fetch the last minutes of a service's logs."""
    return f"{service}: 3 errors in the last {minutes} minutes"


@tool
def get_metrics(service: str) -> dict[str, float]:
    """Current error rate and latency of a service."""
    return {"error_rate": 0.02, "p99_ms": 840.0}


@tool
async def pause(seconds: float = 1.5) -> str:
    """Waits a moment: long enough for a caller to see the call in progress."""
    await asyncio.sleep(seconds)
    return "paused"


@tool(timeout=0.2)
async def sleepy() -> str:
    """Takes far longer than its timeout."""
    await asyncio.sleep(30)
    return "never"


def _entered(ledger: str) -> bool:
    """Append this call's idempotency key to ``ledger``; whether it was the first call."""
    path = Path(ledger)
    first = not path.exists()
    with path.open("a") as f:
        f.write(f"{idempotency_key()}\n")
    return first


@tool
def charge(ledger: str) -> str:
    """An effect: one line in the ledger per call."""
    _entered(ledger)
    return f"charged {idempotency_key()}"


@tool
async def stuck_charge(ledger: str) -> str:
    """An effect, then (the first time) a hang long enough for its worker to be killed in it."""
    if _entered(ledger):
        await asyncio.sleep(60)
    return "charged"


@tool(retry_safe=True)
async def stuck_lookup(ledger: str) -> str:
    """As ``stuck_charge``, but declared safe to run again."""
    if _entered(ledger):
        await asyncio.sleep(60)
    return "looked up"
