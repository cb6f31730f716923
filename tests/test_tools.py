"""Tool schemas from signatures and argument validation (no I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from celery_agents.errors import ConfigError, ToolError
from celery_agents.tools import Tool, ToolRegistry


async def fetch_logs(service: str, minutes: int = 60) -> str:
    """Fetch the last minutes of a service's logs.

    Longer description that is not sent.
    """
    return f"{service}:{minutes}"


def test_the_schema_comes_from_the_signature_and_docstring() -> None:
    schema = Tool.from_function(fetch_logs).schema()["function"]
    assert schema["name"] == "fetch_logs"
    assert schema["description"] == "Fetch the last minutes of a service's logs."
    params = schema["parameters"]
    assert params["required"] == ["service"]
    assert params["properties"]["minutes"]["default"] == 60
    assert params["properties"]["service"]["type"] == "string"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"service": ', "not valid JSON"),
        ('{"minutes": 5}', "service: Field required"),
        ('{"service": "a", "minutes": "many"}', "minutes: Input should be a valid integer"),
        ('{"service": "a", "extra": 1}', "extra: Extra inputs are not permitted"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_bad_arguments_are_a_tool_error_naming_the_problem(arguments: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        Tool.from_function(fetch_logs).parse_args(arguments)


async def test_async_and_sync_tools_are_called() -> None:
    tool = Tool.from_function(fetch_logs)
    assert await tool.call(tool.parse_args('{"service": "api"}')) == "api:60"
    sync_tool = Tool.from_function(lambda x: x * 2, name="double")
    assert await sync_tool.call({"x": 4}) == 8


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
    tool = Tool.from_function(function, timeout=timeout)
    # In a task of its own, as a run is: asyncio would let SystemExit out of the loop.
    task = asyncio.create_task(tool.call({}))
    with pytest.raises(ToolError, match=f"tool '{function.__name__}' raised"):
        await task
    assert await asyncio.create_task(asyncio.sleep(0, "still running")) == "still running"
