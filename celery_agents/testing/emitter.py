"""``Collected``: an agent-loop ``Emitter`` that keeps what a run emits, for tests and benches
that drive ``llm.agent_loop.run_agent`` without a worker."""

from __future__ import annotations

from ..messages import ToolCallInfo


class Collected:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: list[ToolCallInfo] = []
        self.results: list[ToolCallInfo] = []

    async def text(self, delta: str) -> None:
        self.texts.append(delta)

    async def tool_call(self, call: ToolCallInfo) -> None:
        self.calls.append(call)

    async def tool_result(self, call: ToolCallInfo) -> None:
        self.results.append(call)
