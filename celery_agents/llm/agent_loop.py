"""The agent loop: call the model, run the tools it asks for, feed results back, repeat.

Tool failures go back to the model as the tool's result so it can correct itself; after
``max_tool_errors`` failures in a row, or ``max_turns`` model calls, the run fails with a
``ToolError``. The loop reports progress through an ``Emitter`` and does no other I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.manifest import ModelSettings
from ..errors import ModelError, ToolError, UnknownToolError
from ..messages import ToolCallInfo, Usage
from ..tools import Tool
from .base import Model, ModelRequest, ModelResponse


class Emitter(Protocol):
    async def text(self, delta: str) -> None: ...
    async def tool_call(self, call: ToolCallInfo) -> None: ...
    async def tool_result(self, call: ToolCallInfo) -> None: ...


@dataclass
class LoopResult:
    text: str
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCallInfo] = field(default_factory=list)
    model_name: str = ""


async def run_agent_loop(
    model: Model,
    messages: list[dict[str, Any]],
    *,
    tools: Mapping[str, Tool],
    settings: ModelSettings,
    emit: Emitter,
    max_turns: int = 10,
    max_tool_errors: int = 3,
) -> LoopResult:
    """Run ``model`` over ``messages`` until it answers without asking for tools."""
    schemas = [t.schema() for t in tools.values()]
    result = LoopResult(text="")
    errors_in_a_row = 0
    for _turn in range(max_turns):
        response = await _call_model(model, ModelRequest(messages, schemas, settings), emit)
        result.usage = result.usage + response.usage
        result.model_name = response.model_name
        if not response.tool_calls:
            result.text = response.text
            return result
        messages.append(_assistant_tool_message(response))
        for request in response.tool_calls:
            call = await _run_tool(tools, request.id, request.name, request.arguments, emit)
            result.tool_calls.append(call)
            errors_in_a_row = errors_in_a_row + 1 if call.error else 0
            if errors_in_a_row >= max_tool_errors:
                raise ToolError(
                    f"tool {call.tool_name!r} failed {errors_in_a_row} times in a row: "
                    f"{call.error}",
                    tool=call.tool_name,
                )
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call.tool_call_id,
                    "content": f"error: {call.error}" if call.error else _as_text(call.result),
                }
            )
    raise ToolError(
        f"the model was still calling tools after {max_turns} turns", max_turns=max_turns
    )


async def _call_model(model: Model, request: ModelRequest, emit: Emitter) -> ModelResponse:
    async for item in model.stream(request):
        if isinstance(item, str):
            await emit.text(item)
        else:
            return item
    raise ModelError(f"{model.ref}: the model stream ended without a response", model=model.ref)


async def _run_tool(
    tools: Mapping[str, Tool], call_id: str, name: str, arguments: str, emit: Emitter
) -> ToolCallInfo:
    call = ToolCallInfo(tool_call_id=call_id, tool_name=name)
    try:
        tool = tools.get(name)
        if tool is None:
            raise UnknownToolError(f"the model called {name!r}, which this run does not offer")
        call.args = tool.parse_args(arguments)
        await emit.tool_call(call)
        call.result = await tool.call(call.args)
        _as_text(call.result)  # a result the model cannot read is the tool's error
    except (ToolError, UnknownToolError) as exc:
        call.result, call.error = None, exc.message
    except Exception as exc:  # the tool's own bug: the model is told, the run goes on
        call.result, call.error = None, f"{type(exc).__name__}: {exc}"
    await emit.tool_result(call)
    return call


def _assistant_tool_message(response: ModelResponse) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": response.text or None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in response.tool_calls
        ],
    }


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"tool result is not JSON-serialisable: {exc}") from None
