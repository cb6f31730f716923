"""Offline, deterministic models for tests and dry runs: ``test:<behaviour>``.

They are pydantic-ai's own ``FunctionModel``s. Behaviours: ``echo`` (answers with the last
user message, word by word), ``tools`` (calls every offered tool once, then reports their
results), ``fail`` (raises ``ModelError``). Any pydantic-ai model (a ``FunctionModel``, its
``TestModel``) can be registered as ``test:<name>`` on a worker with ``register_test_model``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from ..errors import ModelError, UnknownProviderError

_REGISTERED: dict[str, Model] = {}
_WORDS = re.compile(r"\s*\S+\s*|\s+")


def register_test_model(name: str, model: Model) -> None:
    """Make ``test:<name>`` answer with ``model`` (any pydantic-ai model) on this process."""
    _REGISTERED[name] = model


def offline_model(behaviour: str) -> Model:
    """The model for ``test:<behaviour>``: a registered one, else a built-in."""
    if behaviour in _REGISTERED:
        return _REGISTERED[behaviour]
    answer = _BUILTIN.get(behaviour)
    if answer is None:
        ref = f"test:{behaviour}"
        known = ", ".join(sorted({*_BUILTIN, *_REGISTERED}))
        raise UnknownProviderError(f"unknown test model {ref!r} (known: {known})", model=ref)
    return _function_model(answer, f"test:{behaviour}")


Answer = Callable[[list[ModelMessage], AgentInfo], str | list[ToolCallPart]]


def _function_model(answer: Answer, ref: str) -> FunctionModel:
    def whole(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        out = answer(messages, info)
        return ModelResponse(parts=[TextPart(out)] if isinstance(out, str) else list(out))

    async def streamed(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        out = answer(messages, info)
        if isinstance(out, str):
            for piece in _WORDS.findall(out):
                yield piece
            return
        for index, call in enumerate(out):
            yield {index: _delta(call)}

    return FunctionModel(whole, stream_function=streamed, model_name=ref)


def _delta(call: ToolCallPart) -> DeltaToolCall:
    return DeltaToolCall(
        name=call.tool_name, json_args=call.args_as_json_str(), tool_call_id=call.tool_call_id
    )


def last_user_text(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in reversed(message.parts):
                if isinstance(part, UserPromptPart):
                    return part.content if isinstance(part.content, str) else str(part.content)
    return ""


def _echo(messages: list[ModelMessage], info: AgentInfo) -> str:
    return last_user_text(messages)


def _fail(messages: list[ModelMessage], info: AgentInfo) -> str:
    raise ModelError("test:fail always fails", model="test:fail")


def _tools(messages: list[ModelMessage], info: AgentInfo) -> str | list[ToolCallPart]:
    last = messages[-1]
    results = [
        p for p in getattr(last, "parts", ()) if isinstance(p, ToolReturnPart | RetryPromptPart)
    ]
    if results or not info.function_tools:
        return "; ".join(str(p.content) for p in results) or last_user_text(messages)
    return [
        ToolCallPart(
            tool.name,
            json.dumps(_sample_args(tool.parameters_json_schema)),
            tool_call_id=f"call_{i}",
        )
        for i, tool in enumerate(info.function_tools)
    ]


_BUILTIN: dict[str, Answer] = {"echo": _echo, "fail": _fail, "tools": _tools}
_SAMPLES: dict[str, Any] = {
    "string": "a",
    "integer": 1,
    "number": 1.0,
    "boolean": True,
    "array": [],
    "object": {},
}


def _sample_args(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties", {})
    return {
        name: _SAMPLES.get(props[name].get("type", "string"), "a")
        for name in schema.get("required", [])
    }
