"""Loaded by a bench worker as a tool module (manifest ``tools``): it also registers
``test:wait1s``, an in-process model that answers after 1 s on the worker's event loop, for
row 4's figure without HTTP (what Celery and our run path allow with a free model call)."""

from __future__ import annotations

import asyncio

from celery_agents.llm.base import ModelRequest
from celery_agents.llm.offline import register_test_model

WAIT_MODEL = "test:wait1s"


async def _wait_then_answer(request: ModelRequest) -> str:
    await asyncio.sleep(1.0)
    return "x"


def noop() -> str:
    """A tool nobody calls: listing it in the manifest is what loads this module."""
    return ""


register_test_model(WAIT_MODEL.removeprefix("test:"), _wait_then_answer)
