"""The agent loop: call the model, run the tools it asks for, feed results back, repeat.

Tool failures go back to the model as the tool's result so it can correct itself; after
``max_tool_errors`` failures in a row, or ``max_turns`` model calls, the run fails with a
``ToolError``. The loop reports progress through an ``Emitter`` and does no other I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.manifest import ModelSettings
from ..errors import ModelError, OutputValidationError, ToolError, UnknownToolError
from ..messages import ToolCallInfo, Usage
from ..output import FINAL_RESULT_TOOL, OutputSpec
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
    output: Any = None  # the validated structured answer, when an output type was asked for


async def run_agent_loop(
    model: Model,
    messages: list[dict[str, Any]],
    *,
    tools: Mapping[str, Tool],
    settings: ModelSettings,
    emit: Emitter,
    output: OutputSpec | None = None,
    output_mode: str = "json_schema",
    max_turns: int = 10,
    max_tool_errors: int = 3,
    result: LoopResult | None = None,
) -> LoopResult:
    """Run ``model`` over ``messages`` until it answers without asking for tools.

    ``result`` (given by the caller) is filled as the run goes: what the model calls used is
    there even when the run fails after them.

    With ``output`` the answer must validate against it (through ``response_format``, or a
    ``final_result`` tool when ``output_mode`` is ``tool``); an invalid answer is sent back
    once with the validation error, then fails with ``OutputValidationError``.
    """
    via_tool = output is not None and output_mode == "tool"
    schemas = [t.schema() for t in tools.values()]
    if output is not None and via_tool:
        schemas.append(output.tool())
    request_format = output.response_format() if output is not None and not via_tool else None
    result = result if result is not None else LoopResult(text="")
    errors_in_a_row = 0
    second_chances = 1
    for _turn in range(max_turns):
        request = ModelRequest(
            messages,
            schemas,
            settings,
            response_format=request_format,
            tool_choice="required" if via_tool else None,
        )
        response = await _call_model(model, request, emit)
        result.usage = result.usage + response.usage
        result.model_name = response.model_name
        final = _final_answer(response, via_tool)
        if final is not None and output is not None:
            try:
                result.output = output.validate_text(final)
            except OutputValidationError as exc:
                if second_chances == 0:
                    raise
                second_chances -= 1
                messages.extend(_correction(response, via_tool, exc.message))
                continue
            result.text = final
            return result
        if not response.tool_calls:
            result.text = response.text
            return result
        messages.append(_assistant_tool_message(response))
        for request_call in response.tool_calls:
            call = await _run_tool(
                tools, request_call.id, request_call.name, request_call.arguments, emit
            )
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


def _final_answer(response: ModelResponse, via_tool: bool) -> str | None:
    """The text to validate, if this response is the final answer."""
    if via_tool:
        for call in response.tool_calls:
            if call.name == FINAL_RESULT_TOOL:
                return call.arguments
    return response.text if not response.tool_calls else None


def _correction(response: ModelResponse, via_tool: bool, problem: str) -> list[dict[str, Any]]:
    """Messages that show the model its invalid answer and what was wrong with it."""
    fix = f"{problem}. Answer again, with only a JSON value that matches the schema."
    if via_tool and response.tool_calls:
        call = next(c for c in response.tool_calls if c.name == FINAL_RESULT_TOOL)
        return [
            _assistant_tool_message(response),
            *(
                {
                    "role": "tool",
                    "tool_call_id": c.id,
                    "content": f"error: {fix}" if c is call else "error: not run",
                }
                for c in response.tool_calls
            ),
        ]
    return [{"role": "assistant", "content": response.text}, {"role": "user", "content": fix}]


async def _call_model(model: Model, request: ModelRequest, emit: Emitter) -> ModelResponse:
    # Closed as soon as it gave its response: what it holds (a lease, a connection) goes now.
    async with aclosing(model.stream(request)) as items:
        async for item in items:
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
