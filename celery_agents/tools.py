"""Tools: plain functions registered by name, with JSON schemas taken from their signatures.

    from celery_agents import tool

    @tool
    async def fetch_logs(service: str, minutes: int = 60) -> str:
        "Fetch the last minutes of a service's logs."

Workers run only registered tools; a task message naming any other tool is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .errors import ConfigError, ToolError, UnknownToolError
from .validation import field_errors

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Tool:
    """A registered tool: its callable, its argument model and its timeout."""

    name: str
    description: str
    function: Callable[..., Any]
    args_model: type[BaseModel]
    timeout: float | None = None

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
    ) -> Tool:
        tool_name = name or function.__name__
        doc = inspect.getdoc(function) or ""
        return cls(
            name=tool_name,
            description=description or doc.split("\n\n")[0].strip(),
            function=function,
            args_model=_args_model(tool_name, function),
            timeout=timeout,
        )

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }

    def parse_args(self, arguments: str | dict[str, Any]) -> dict[str, Any]:
        """Validate the model's arguments; a ``ToolError`` says what is wrong."""
        try:
            raw = json.loads(arguments or "{}") if isinstance(arguments, str) else arguments
            if not isinstance(raw, dict):
                raise ToolError(f"tool {self.name!r}: arguments must be a JSON object")
            return self.args_model.model_validate(raw).model_dump()
        except json.JSONDecodeError as exc:
            raise ToolError(f"tool {self.name!r}: arguments are not valid JSON: {exc}") from None
        except ValidationError as exc:
            raise ToolError(
                f"tool {self.name!r}: invalid arguments: {field_errors(exc, root='arguments')}"
            ) from None

    async def call(self, args: dict[str, Any]) -> Any:
        """Run the tool; sync functions run off the event loop."""
        coro = self._run(args)
        if self.timeout is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, self.timeout)
        except TimeoutError:
            raise ToolError(f"tool {self.name!r} timed out after {self.timeout}s") from None

    async def _run(self, args: dict[str, Any]) -> Any:
        try:
            if inspect.iscoroutinefunction(self.function):
                return await self.function(**args)
            return await asyncio.to_thread(self.function, **args)
        except (SystemExit, KeyboardInterrupt) as exc:
            # Out of a task, asyncio lets these stop the worker's event loop, and every run on
            # it with the loop: from a tool (a script's sys.exit()), they are its failure.
            raise ToolError(f"tool {self.name!r} raised {type(exc).__name__}({exc})") from None


class ToolRegistry:
    """Tools by name."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> Tool:
        self._tools[tool.name] = tool
        return tool

    def names(self) -> set[str]:
        return set(self._tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownToolError(
                f"tool {name!r} is not registered on this worker (registered: {known})", tool=name
            ) from None

    def load(self, name: str, import_path: str) -> Tool:
        """Import ``module:attribute`` and register it under ``name``."""
        module_name, _, attr = import_path.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"tools.{name}: {import_path!r} must look like 'module:function'")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"tools.{name}: cannot import {import_path!r}: {exc}") from None
        found = (
            target if isinstance(target, Tool) else getattr(target, "__celery_agents_tool__", None)
        )
        if found is None:
            found = Tool.from_function(target, name=name)
        return self.register(dataclasses.replace(found, name=name))


REGISTRY = ToolRegistry()
"""The process's tools: ``@tool`` registers here, and workers load the manifest's tools here."""


@overload
def tool(function: F, /) -> F: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[F], F]: ...
def tool(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> F | Callable[[F], F]:
    """Register a function as a tool (on this process's ``REGISTRY``); returns it unchanged."""

    def decorate(fn: F) -> F:
        registered = REGISTRY.register(
            Tool.from_function(fn, name=name, description=description, timeout=timeout)
        )
        fn.__celery_agents_tool__ = registered  # type: ignore[attr-defined]
        return fn

    return decorate(function) if function is not None else decorate


def _args_model(tool_name: str, function: Callable[..., Any]) -> type[BaseModel]:
    signature = inspect.signature(function)
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {tool_name!r}: *args/**kwargs cannot be described to a model")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    return create_model(f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields)
