"""The step journal of one run: each model response and each tool call with its result,
written before the run acts on it, and replayed when the run is delivered again.

A redelivered run (attempt 2 or later) replays its journaled steps in order without calling
the model or a tool again, then goes on live from the first step that is not in the journal.
Steps are numbered by model request (``3``) and tool call (``3.call_id``: the call's id is in
the journaled response, so it is stable across attempts) and carry a fingerprint of their
request; a step whose fingerprint differs (the prompt, the history or the tool's arguments
changed) ends the replay there.

A tool call is journaled twice: ``started`` before it runs and ``done`` after. A call found
started but not done (its worker died in it) runs again only if its tool is ``retry_safe``;
any other fails the run with ``ToolInterrupted``: its effect may have happened.

The wrappers are pydantic-ai's own extension points (``WrapperModel``, ``WrapperToolset``,
``CompletedStreamedResponse``); where the steps are kept is the ``StepWriter``'s business.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic_ai import RunContext
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelResponse
from pydantic_ai.models import (
    CompletedStreamedResponse,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.toolsets import WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool
from pydantic_core import to_jsonable_python

from ..errors import ToolInterrupted
from ..tools import IDEMPOTENCY_KEY

# Fields that change from one attempt to the next without changing what was asked.
_UNSTABLE = frozenset({"timestamp", "run_id", "conversation_id", "provider_response_id"})


class StepWriter(Protocol):
    async def write(self, step: str, entry: dict[str, Any]) -> None:
        """Keep ``entry`` as ``step`` before returning (raises if this execution may not)."""
        ...


@dataclass
class RunJournal:
    """The journal of one execution of a run: the steps it found, and the steps it writes."""

    run_id: str
    writer: StepWriter | None  # None: journaling is off (steps are still counted, for the keys)
    found: dict[str, dict[str, Any]] = field(default_factory=dict)  # an earlier attempt's
    retry_safe: Collection[str] = ()  # tools that may run again after an interrupted call
    model_step: int = 0
    replayed: int = 0  # steps taken from the journal, not made again
    diverged: bool = False  # a step differed from the journal's: the rest runs live

    def replay(self, step: str, fingerprint: str) -> dict[str, Any] | None:
        if self.diverged:
            return None
        entry = self.found.get(step)
        if entry is None:
            return None
        if entry.get("fp") != fingerprint:
            self.diverged = True
            return None
        return entry

    async def write(self, step: str, entry: dict[str, Any]) -> None:
        if self.writer is not None:
            await self.writer.write(step, entry)


def fingerprint(value: Any) -> str:
    """A short hash of ``value``'s JSON with the fields that differ between attempts left out."""
    data = json.dumps(_stable(to_jsonable_python(value)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _UNSTABLE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _request_fingerprint(
    messages: list[ModelMessage], settings: ModelSettings | None, params: ModelRequestParameters
) -> str:
    tools = [t.name for t in params.function_tools] + [t.name for t in params.output_tools]
    return fingerprint(
        [ModelMessagesTypeAdapter.dump_python(messages, mode="json"), settings or {}, tools]
    )


def _dump(response: ModelResponse) -> Any:
    return ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]


def _load(data: Any) -> ModelResponse:
    (response,) = ModelMessagesTypeAdapter.validate_python([data])
    assert isinstance(response, ModelResponse)
    return response


class JournaledModel(WrapperModel):
    """A model whose responses are journaled, and replayed on a later attempt."""

    def __init__(self, wrapped: Any, journal: RunJournal) -> None:
        super().__init__(wrapped)
        self._journal = journal

    def _next(
        self,
        messages: list[ModelMessage],
        settings: ModelSettings | None,
        params: ModelRequestParameters,
    ) -> tuple[str, str, dict[str, Any] | None]:
        journal = self._journal
        journal.model_step += 1
        step = str(journal.model_step)
        if journal.writer is None:  # counted all the same: the tools' idempotency keys
            return step, "", None
        fp = _request_fingerprint(messages, settings, params)
        return step, fp, journal.replay(step, fp)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        step, fp, entry = self._next(messages, model_settings, model_request_parameters)
        if entry is not None:
            self._journal.replayed += 1
            return _load(entry["response"])
        response = await super().request(messages, model_settings, model_request_parameters)
        if self._journal.writer is not None:
            await self._journal.write(step, {"fp": fp, "response": _dump(response)})
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        step, fp, entry = self._next(messages, model_settings, model_request_parameters)
        if entry is not None:
            self._journal.replayed += 1
            # Its events again, as the live stream sent them (the publisher drops what the
            # caller already has): the run's handlers see the same answer either way.
            yield CompletedStreamedResponse(
                _load(entry["response"]),
                model_request_parameters=model_request_parameters,
                replay_events=True,
            )
            return
        async with super().request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as streamed:
            yield streamed
        if self._journal.writer is not None:
            # Consumed: journaled before the run acts on it (calls its tools, or ends).
            await self._journal.write(step, {"fp": fp, "response": _dump(streamed.get())})


class JournaledTools(WrapperToolset[Any]):
    """Tool calls journaled when they start and when they end; replayed on a later attempt.
    Every call runs with its idempotency key set (``idempotency_key()``)."""

    def __init__(self, wrapped: Any, journal: RunJournal) -> None:
        super().__init__(wrapped)
        self._journal = journal

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        journal = self._journal
        step = f"{journal.model_step}.{ctx.tool_call_id}"
        if journal.writer is None:
            return await self._keyed(step, name, tool_args, ctx, tool)
        fp = fingerprint([name, tool_args])
        entry = journal.replay(step, fp)
        if entry is not None and entry.get("state") == "done":
            journal.replayed += 1
            if "retry" in entry:
                raise ModelRetry(entry["retry"])
            return entry["result"]
        if entry is not None and name not in journal.retry_safe:
            raise ToolInterrupted(
                f"tool {name!r} was interrupted by its worker's death in an earlier attempt of "
                f"run {journal.run_id}, and its effect may have happened; mark it "
                "@tool(retry_safe=True) if running it again is safe",
                tool=name,
                run_id=journal.run_id,
            )
        await journal.write(step, {"fp": fp, "state": "started"})
        try:
            result = await self._keyed(step, name, tool_args, ctx, tool)
        except ModelRetry as exc:  # the tool failed: the model reads why, on replay too
            await journal.write(step, {"fp": fp, "state": "done", "retry": str(exc.message)})
            raise
        done = {"fp": fp, "state": "done", "result": to_jsonable_python(result)}
        await journal.write(step, done)
        return result

    async def _keyed(
        self,
        step: str,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[Any],
        tool: ToolsetTool[Any],
    ) -> Any:
        token = IDEMPOTENCY_KEY.set(f"{self._journal.run_id}:{step}")
        try:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        finally:
            IDEMPOTENCY_KEY.reset(token)
