"""Our registered tools as a pydantic-ai toolset.

pydantic-ai takes each tool's schema from its signature, validates the model's arguments, runs
a sync function off the event loop and applies ``@tool(timeout=)``. ``Forgiving`` adds our
rule: whatever a tool raises goes back to the model as the call's result, so it can correct
itself (pydantic-ai would fail the run), within the tool's retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai import Tool as PydanticAITool
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry, ToolFailed
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from ..errors import CeleryAgentsError, ConfigError
from ..tools import Tool

_CONTROL = (ModelRetry, ToolFailed, CallDeferred, ApprovalRequired)  # pydantic-ai's own
_TOOLS: dict[Tool, PydanticAITool[Any]] = {}
_TOOLSETS: dict[tuple[Tool, ...], AbstractToolset[Any]] = {}


class Forgiving(WrapperToolset[Any]):
    """A tool's exception is the model's to read, not the run's end."""

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        try:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        except _CONTROL:
            raise
        except CeleryAgentsError as exc:
            raise ModelRetry(exc.message) from None
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            # SystemExit too: out of a task, asyncio lets it stop the worker's event loop.
            raise ModelRetry(f"{type(exc).__name__}: {exc}") from None


def pydantic_ai_tool(tool: Tool, retries: int) -> PydanticAITool[Any]:
    """``tool`` as pydantic-ai's (built once: its schema is worked out here)."""
    known = _TOOLS.get(tool)
    if known is None or known.max_retries != retries:
        try:
            known = PydanticAITool(
                tool.function,
                takes_ctx=False,
                name=tool.name,
                description=tool.description or None,
                max_retries=retries,
                timeout=tool.timeout,
            )
        except Exception as exc:  # a signature pydantic-ai cannot describe
            raise ConfigError(f"tool {tool.name!r} cannot be offered to a model: {exc}") from None
        _TOOLS[tool] = known
    return known


def toolset_of(tools: Sequence[Tool], retries: int) -> AbstractToolset[Any]:
    """One toolset per set of tools, reused by every run that offers them."""
    key = tuple(tools)
    toolset = _TOOLSETS.get(key)
    if toolset is None:
        toolset = Forgiving(FunctionToolset([pydantic_ai_tool(t, retries) for t in tools]))
        _TOOLSETS[key] = toolset
    return toolset
