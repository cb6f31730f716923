"""Loaded by a bench worker as a tool module (manifest ``tools``): it also registers
``test:wait1s``, an in-process model that answers after 1 s on the worker's event loop, for
row 4's figure without HTTP (what Celery and our run path allow with a free model call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from celery_agents.llm.offline import register_test_model

WAIT_MODEL = "test:wait1s"


async def _wait_then_answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    await asyncio.sleep(1.0)
    yield "x"


def noop() -> str:
    """A tool nobody calls: listing it in the manifest is what loads this module."""
    return ""


register_test_model(
    WAIT_MODEL.removeprefix("test:"), FunctionModel(stream_function=_wait_then_answer)
)
