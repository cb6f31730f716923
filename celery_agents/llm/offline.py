"""Offline, deterministic models for tests and dry runs: ``test:<behaviour>``.

Behaviours: ``echo`` (answers with the last user message), ``tools`` (calls every offered
tool once, then reports their results), ``fail`` (raises ``ModelError``). ``FunctionModel``
wraps a function (plain or ``async``: an async one may wait, as a model would); register it
with ``register_test_model`` to use it as ``test:<name>``.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from ..errors import ModelError, UnknownProviderError
from ..messages import Usage
from .base import ModelRequest, ModelResponse, ToolCallRequest

Answer = str | ModelResponse
FunctionHandler = Callable[[ModelRequest], Answer | Awaitable[Answer]]
_FUNCTION_MODELS: dict[str, FunctionHandler] = {}
_WORDS = re.compile(r"\s*\S+\s*|\s+")


def register_test_model(name: str, handler: FunctionHandler) -> None:
    """Make ``test:<name>`` answer with ``handler(request)`` on this process (a worker)."""
    _FUNCTION_MODELS[name] = handler


class FunctionModel:
    """A model whose answer is computed by a Python function; streamed word by word."""

    def __init__(self, handler: FunctionHandler, *, ref: str = "test:function") -> None:
        self._handler = handler
        self._ref = ref

    @property
    def ref(self) -> str:
        return self._ref

    async def stream(self, request: ModelRequest) -> AsyncGenerator[str | ModelResponse]:
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        response = answer if isinstance(answer, ModelResponse) else _text_response(request, answer)
        for piece in _WORDS.findall(response.text):
            yield piece
        yield ModelResponse(
            text=response.text,
            tool_calls=response.tool_calls,
            usage=response.usage if response.usage.total_tokens else _usage(request, response.text),
            model_name=self._ref,
            finish_reason="tool_calls" if response.tool_calls else "stop",
        )


class TestModel(FunctionModel):
    """A built-in offline behaviour: ``TestModel("echo")`` is what ``test:echo`` runs."""

    __test__ = False  # not a pytest test class

    def __init__(self, behaviour: str = "echo") -> None:
        if behaviour not in _BUILTIN:
            raise _unknown(behaviour)
        super().__init__(_BUILTIN[behaviour], ref=f"test:{behaviour}")


def offline_model(behaviour: str) -> FunctionModel:
    """The model for ``test:<behaviour>``: a registered function, else a built-in."""
    if behaviour in _FUNCTION_MODELS:
        return FunctionModel(_FUNCTION_MODELS[behaviour], ref=f"test:{behaviour}")
    return TestModel(behaviour)


def _unknown(behaviour: str) -> UnknownProviderError:
    ref = f"test:{behaviour}"
    known = ", ".join(sorted({*_BUILTIN, *_FUNCTION_MODELS}))
    return UnknownProviderError(f"unknown test model {ref!r} (known: {known})", model=ref)


def last_user_text(request: ModelRequest) -> str:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _echo(request: ModelRequest) -> str:
    return last_user_text(request)


def _fail(request: ModelRequest) -> str:
    raise ModelError("test:fail always fails", model="test:fail")


def _tools(request: ModelRequest) -> str | ModelResponse:
    results = [m for m in request.messages if m.get("role") == "tool"]
    if results or not request.tools:
        return "; ".join(str(m.get("content")) for m in results) or _echo(request)
    calls = [
        ToolCallRequest(
            id=f"call_{i}",
            name=spec["function"]["name"],
            arguments=json.dumps(_sample_args(spec["function"].get("parameters", {}))),
        )
        for i, spec in enumerate(request.tools)
    ]
    return ModelResponse(text="", tool_calls=calls)


_BUILTIN: dict[str, FunctionHandler] = {"echo": _echo, "fail": _fail, "tools": _tools}
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


def _text_response(request: ModelRequest, text: str) -> ModelResponse:
    return ModelResponse(text=text, usage=_usage(request, text))


def _usage(request: ModelRequest, text: str) -> Usage:
    prompt_words = sum(len(str(m.get("content") or "").split()) for m in request.messages)
    return Usage(input_tokens=prompt_words, output_tokens=len(text.split()))
