"""The embedded `local` model (llama.cpp + SmolLM2) through a real worker. Shape, not wording."""

from __future__ import annotations

import pytest

from celery_agents import Agent

pytestmark = [pytest.mark.local_model, pytest.mark.usefixtures("agents")]


async def test_a_local_run_and_stream_return_text_with_usage() -> None:
    agent = Agent("local", "local:smollm2", "You are concise.", model_settings={"max_tokens": 24})
    msg = await agent.run("Name one colour.", timeout=120)
    assert isinstance(msg.content, str) and msg.content.strip()
    assert msg.usage is not None and msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0

    async with agent.run_stream("Name one animal.", timeout=120) as stream:
        chunks = [chunk async for chunk in stream.stream()]
        final = await stream.get_message()
    assert len(chunks) > 1
    assert "".join(chunks) == final.content and final.content.strip()
    assert final.usage is not None and final.usage.output_tokens > 0
