"""Tools: plain functions registered by name, with JSON schemas taken from their signatures.

    from celery_agents import tool

    @tool
    async def fetch_logs(service: str, minutes: int = 60) -> str:
        "Fetch the last minutes of a service's logs."

Workers run only registered tools; a task message naming any other tool is refused.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .errors import ConfigError, UnknownToolError

F = TypeVar("F", bound=Callable[..., Any])

# Set by the worker around each tool call (``llm/journal.py``).
IDEMPOTENCY_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "celery_agents_idempotency_key", default=None
)


def idempotency_key() -> str | None:
    """Inside a tool call: ``run_id:step``, the same on every attempt of the run (a run
    redelivered after its worker died replays the call's result instead of calling again), so
    a tool can dedupe its effect downstream. None outside a tool call."""
    return IDEMPOTENCY_KEY.get()


@dataclass(frozen=True)
class Tool:
    """A registered tool: its callable, name, description and timeout. On workers it runs as a
    pydantic-ai tool (``llm.toolset``): its schema comes from the signature, its arguments are
    validated, a sync function runs off the event loop. ``retry_safe``: a call cut short by its
    worker's death may run again on the run's next attempt (else ``ToolInterrupted``)."""

    name: str
    description: str
    function: Callable[..., Any]
    timeout: float | None = None
    retry_safe: bool = False

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        retry_safe: bool = False,
    ) -> Tool:
        tool_name = name or function.__name__
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"tool {tool_name!r}: timeout must be > 0, got {timeout}")
        for param in inspect.signature(function).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(
                    f"tool {tool_name!r}: *args/**kwargs cannot be described to a model"
                )
        doc = inspect.getdoc(function) or ""
        return cls(
            name=tool_name,
            description=description or doc.split("\n\n")[0].strip(),
            function=function,
            timeout=timeout,
            retry_safe=retry_safe,
        )


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
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    retry_safe: bool = False,
) -> Callable[[F], F]: ...
def tool(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    retry_safe: bool = False,
) -> F | Callable[[F], F]:
    """Register a function as a tool (on this process's ``REGISTRY``); returns it unchanged."""

    def decorate(fn: F) -> F:
        registered = REGISTRY.register(
            Tool.from_function(
                fn, name=name, description=description, timeout=timeout, retry_safe=retry_safe
            )
        )
        fn.__celery_agents_tool__ = registered  # type: ignore[attr-defined]
        return fn

    return decorate(function) if function is not None else decorate
