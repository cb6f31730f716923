"""Tools as the model sees and calls them: schemas from signatures, validated arguments, and
failures that go back to the model (in process, on pydantic-ai's ``FunctionModel``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from celery_agents.errors import ConfigError, ToolError
from celery_agents.llm.agent_loop import LoopResult, run_agent
from celery_agents.llm.toolset import pydantic_ai_tool
from celery_agents.testing.emitter import Collected
from celery_agents.tools import Tool, ToolRegistry


async def fetch_logs(service: str, minutes: int = 60) -> str:
    """Fetch the last minutes of a service's logs.

    Longer description that is not sent.
    """
    return f"{service}:{minutes}"


def calling(name: str, arguments: str, times: int = 1) -> FunctionModel:
    """A model that calls ``name`` with ``arguments`` ``times`` times, then says what it got."""

    async def answer(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        asked = sum(isinstance(m, ModelResponse) for m in messages)
        if asked < times:
            yield {0: DeltaToolCall(name=name, json_args=arguments, tool_call_id=f"c{asked}")}
        else:
            yield "done"

    return FunctionModel(stream_function=answer)  # runs are streamed


async def run(tool: Tool, arguments: str, times: int = 1) -> LoopResult:
    return await run_agent(
        calling(tool.name, arguments, times), "go", emit=Collected(), tools=[tool]
    )


def test_the_schema_comes_from_the_signature_and_docstring() -> None:
    definition = pydantic_ai_tool(Tool.from_function(fetch_logs), 2).tool_def
    assert definition.name == "fetch_logs"
    assert definition.description == "Fetch the last minutes of a service's logs."
    params = definition.parameters_json_schema
    assert params["required"] == ["service"]
    assert params["properties"]["minutes"]["default"] == 60
    assert params["properties"]["service"]["type"] == "string"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"service": ', "Invalid JSON"),
        ('{"minutes": 5}', "service: Field required"),
        ('{"service": "a", "minutes": "many"}', "minutes: Input should be a valid integer"),
        ('{"service": "a", "extra": 1}', "extra: Extra inputs are not permitted"),
    ],
)
async def test_bad_arguments_go_back_to_the_model_naming_the_problem(
    arguments: str, message: str
) -> None:
    result = await run(Tool.from_function(fetch_logs), arguments)
    [call] = result.tool_calls
    assert call.error is not None and message in call.error and call.result is None
    assert result.text == "done"  # the model was told, and the run went on


async def test_async_and_sync_tools_are_called() -> None:
    result = await run(Tool.from_function(fetch_logs), '{"service": "api"}')
    assert [c.result for c in result.tool_calls] == ["api:60"]

    def double(x: int) -> int:
        return x * 2

    result = await run(Tool.from_function(double), json.dumps({"x": 4}))
    assert [c.result for c in result.tool_calls] == [8]


async def test_a_tool_that_keeps_failing_ends_the_run_naming_its_last_error() -> None:
    def broken(x: int) -> int:
        raise ValueError(f"no {x}")

    with pytest.raises(ToolError, match=r"tool 'broken' failed 3 times in a row: ValueError: no 1"):
        await run(Tool.from_function(broken), '{"x": 1}', times=5)


async def test_a_tool_over_its_timeout_is_a_failure_the_model_reads() -> None:
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    result = await run(Tool.from_function(slow, timeout=0.05), "{}")
    [call] = result.tool_calls
    assert call.error is not None and "timed out after 0.05" in call.error.lower()


def test_a_signature_a_model_cannot_be_told_is_refused_at_registration() -> None:
    def variadic(*args: Any) -> None:
        pass

    with pytest.raises(ConfigError, match=r"\*args/\*\*kwargs cannot be described"):
        Tool.from_function(variadic)
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        Tool.from_function(fetch_logs, timeout=0)


def test_the_registry_names_what_it_has() -> None:
    registry = ToolRegistry()
    registry.load("logs", "tests.test_tools:fetch_logs")
    assert registry.get("logs").name == "logs"
    with pytest.raises(
        Exception, match=r"'nope' is not registered on this worker \(registered: logs\)"
    ):
        registry.get("nope")
    with pytest.raises(ConfigError, match="tools.bad: cannot import"):
        registry.load("bad", "tests.no_such_module:f")


def exits() -> None:
    raise SystemExit(3)  # a script's sys.exit(3), made a tool


async def interrupts() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("function", [exits, interrupts])
async def test_a_tool_that_exits_fails_as_a_tool_and_leaves_the_loop_running(
    function: Any, timeout: float | None
) -> None:
    # In a task of its own, as a run is: asyncio would let SystemExit out of the loop.
    task = asyncio.create_task(run(Tool.from_function(function, timeout=timeout), "{}"))
    result = await task
    [call] = result.tool_calls
    assert call.error is not None and call.error.startswith(("SystemExit", "KeyboardInterrupt"))
    assert await asyncio.create_task(asyncio.sleep(0, "still running")) == "still running"
