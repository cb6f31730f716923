"""Tools the test worker loads through the manifest."""

from __future__ import annotations

import time

from celery_agents import tool


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
