"""One agent run on pydantic-ai: its agent loop, tools, output modes and usage, reported as our
events through an ``Emitter``; the loop does no other I/O.

One pydantic-ai ``Agent`` serves every run of the process: the model, instructions, tools,
output type and settings are the run's own. Our rules around it:

- a tool's failure goes back to the model as the tool's result so it can correct itself;
  after ``max_tool_errors`` failures of one tool in a row, or ``max_turns`` model calls, the
  run fails with a ``ToolError``;
- an answer that does not validate against the output type is sent back once, then the run
  fails with ``OutputValidationError`` carrying the raw answer, also when the second request
  fails because the first answer filled the model's context.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_ai import Agent, RunContext, capture_run_messages
from pydantic_ai.exceptions import (
    OutputTokenLimitExceeded,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
)
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    RetryFeedbackPart,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model
from pydantic_ai.output import NativeOutput, PromptedOutput, StructuredDict, ToolOutput
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits
from pydantic_core import core_schema

from ..errors import ModelError, OutputValidationError, ToolError
from ..messages import ToolCallInfo, Usage
from ..output import OutputSpec
from ..validation import field_errors
from .journal import JournaledModel, JournaledTools, RunJournal
from .toolset import toolset_of


class Emitter(Protocol):
    async def text(self, delta: str) -> None: ...
    async def tool_call(self, call: ToolCallInfo) -> None: ...
    async def tool_result(self, call: ToolCallInfo) -> None: ...


@dataclass
class LoopResult:
    text: str
    usage: Usage = field(default_factory=Usage)
    requests: int = 0  # model requests made (answered or not)
    tool_calls: list[ToolCallInfo] = field(default_factory=list)
    model_name: str = ""
    output: Any = None  # the validated structured answer, when an output type was asked for


@dataclass(frozen=True)
class Turn:
    """A message of the run's history, as the conversation store keeps it."""

    role: str
    text: str


_AGENT: Agent[None, Any] = Agent(retries={"output": 1})


async def run_agent(
    model: Model,
    prompt: str,
    *,
    history: Sequence[Turn] = (),
    instructions: str = "",
    tools: Sequence[Any] = (),
    settings: ModelSettings | None = None,
    emit: Emitter,
    output: OutputSpec | None = None,
    output_mode: str | None = None,
    max_turns: int = 10,
    max_tool_errors: int = 3,
    result: LoopResult | None = None,
    journal: RunJournal | None = None,
) -> LoopResult:
    """Run ``model`` on ``prompt`` after ``history`` until it answers.

    ``result`` (given by the caller) is filled as the run goes: what the model calls used is
    there even when the run fails after them. ``tools`` are our registered ``Tool``s. With a
    ``journal`` that has a writer, each step is journaled, and what it found is replayed.
    """
    result = result if result is not None else LoopResult(text="")
    events = _Events(emit, result)
    toolset = toolset_of(tools, max_tool_errors - 1) if tools else None
    if journal is not None:  # its steps are counted (and journaled, with a writer)
        model = JournaledModel(model, journal)
        if toolset is not None:
            toolset = JournaledTools(toolset, journal)
    with capture_run_messages() as messages:
        try:
            run = await _AGENT.run(
                prompt,
                model=model,
                message_history=[_message(turn) for turn in history],
                instructions=instructions or None,
                output_type=_output_type(output, output_mode) if output is not None else str,
                toolsets=[toolset] if toolset is not None else None,
                model_settings=settings,
                usage_limits=UsageLimits(request_limit=max_turns),
                event_stream_handler=events.handle,
            )
        except UsageLimitExceeded:
            _used(result, messages, len(history))
            raise ToolError(
                f"the model was still calling tools after {max_turns} turns", max_turns=max_turns
            ) from None
        except UnexpectedModelBehavior as exc:
            _used(result, messages, len(history))
            raise _unexpected(exc, events, output, messages) from None
        except ModelError as exc:
            _used(result, messages, len(history))
            if output is not None and _retrying_output(messages):
                raise _invalid(
                    output, f"the model could not answer again: {exc}", messages
                ) from exc
            raise
        except BaseException:
            _used(result, messages, len(history))
            raise
    usage = run.usage
    result.usage = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
    result.requests = usage.requests
    result.model_name = run.response.model_name or ""
    if output is None:
        result.text = str(run.output)
    else:
        value = run.output
        result.output = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        result.text = json.dumps(result.output)
    return result


class _Events:
    """pydantic-ai's stream events, as our events; the run's tool calls, as they end."""

    def __init__(self, emit: Emitter, result: LoopResult) -> None:
        self._emit = emit
        self._result = result
        self._calls: dict[str, ToolCallInfo] = {}
        self.failures: dict[str, str] = {}  # tool name -> its last error
        self.answer: list[str] = []  # the text of the model's latest response, as streamed

    async def handle(self, ctx: RunContext[None], stream: AsyncIterable[AgentStreamEvent]) -> None:
        async for event in stream:
            if isinstance(event, PartStartEvent):
                if event.index == 0:
                    self.answer.clear()
                if isinstance(event.part, TextPart) and event.part.content:
                    await self._text(event.part.content)
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                if event.delta.content_delta:
                    await self._text(event.delta.content_delta)
            elif isinstance(event, FunctionToolCallEvent):
                await self._called(event)
            elif isinstance(event, FunctionToolResultEvent):
                await self._returned(event.part)

    async def _text(self, delta: str) -> None:
        self.answer.append(delta)
        await self._emit.text(delta)

    async def _called(self, event: FunctionToolCallEvent) -> None:
        part = event.part
        call = ToolCallInfo(tool_call_id=part.tool_call_id, tool_name=part.tool_name)
        self._calls[part.tool_call_id] = call
        self._result.tool_calls.append(call)  # in the order the model made them
        if event.args_valid:
            call.args = part.args_as_dict()
            await self._emit.tool_call(call)

    async def _returned(self, part: ToolReturnPart) -> None:
        call = self._calls.pop(part.tool_call_id, None)
        if call is None:  # a result without its call event: kept all the same
            call = ToolCallInfo(tool_call_id=part.tool_call_id, tool_name=part.tool_name)
            self._result.tool_calls.append(call)
        if part.outcome == "success":
            call.result = part.content
            self.failures.pop(part.tool_name, None)
        else:
            call.error = _error_text(part)
            self.failures[part.tool_name] = call.error
        await self._emit.tool_result(call)


def _error_text(part: ToolReturnPart) -> str:
    content = part.content
    if isinstance(content, list):  # validation error details
        return "; ".join(
            f"{'.'.join(map(str, e.get('loc', ()))) or 'arguments'}: {e.get('msg', e)}"
            for e in content
        )
    return str(content)


def _output_type(spec: OutputSpec, mode: str | None) -> Any:
    target = spec.importable() or _schema_checked(spec.model_dump_json())
    if mode == "json_schema":
        return NativeOutput(target, name=spec.name)
    if mode == "tool":
        return ToolOutput(target)
    if mode == "prompted":
        return PromptedOutput(target, name=spec.name)
    return target  # the provider's default, as pydantic-ai picks it


@functools.lru_cache(maxsize=256)
def _schema_checked(spec_json: str) -> type[Any]:
    """A dict checked against the schema of an output type this worker cannot import."""
    spec = OutputSpec.model_validate_json(spec_json)
    base = StructuredDict(dict(spec.json_schema), name=spec.name)

    def check(value: Any) -> Any:
        try:
            spec.validate_text(json.dumps(value))
        except OutputValidationError as exc:
            raise ValueError(exc.message) from None
        return value

    class Checked(base):  # type: ignore[valid-type,misc]
        @classmethod
        def __get_pydantic_core_schema__(
            cls, source: Any, handler: GetCoreSchemaHandler
        ) -> core_schema.CoreSchema:
            return core_schema.no_info_after_validator_function(
                check, super().__get_pydantic_core_schema__(source, handler)
            )

    return Checked


def _message(turn: Turn) -> ModelMessage:
    if turn.role == "assistant":
        return ModelResponse(parts=[TextPart(turn.text)])
    return ModelRequest(parts=[UserPromptPart(turn.text)])


def _used(result: LoopResult, messages: list[ModelMessage], past: int) -> None:
    """What the model calls of a run that failed used (the ``past`` history excluded)."""
    responses = [m for m in messages[past:] if isinstance(m, ModelResponse)]
    result.usage = Usage(
        input_tokens=sum(m.usage.input_tokens for m in responses),
        output_tokens=sum(m.usage.output_tokens for m in responses),
    )
    result.requests = len(responses)


def _unexpected(
    exc: UnexpectedModelBehavior,
    events: _Events,
    output: OutputSpec | None,
    messages: list[ModelMessage],
) -> Exception:
    for tool, error in events.failures.items():
        if f"Tool {tool!r} exceeded max retries" in exc.message:
            return ToolError(
                f"tool {tool!r} failed {_count(exc.message) + 1} times in a row: {error}",
                tool=tool,
            )
    if output is not None and isinstance(exc, OutputTokenLimitExceeded):
        raw = "".join(events.answer) or _raw_answer(messages)
        return _invalid(output, f"the answer was cut off: {exc.message}", messages, raw=raw)
    if output is not None and "output retries" in exc.message:
        return _invalid(output, _why(exc.__cause__) or exc.message, messages)
    return ModelError(f"the model's answer could not be used: {exc.message}")


def _why(cause: BaseException | None) -> str:
    """A validation failure as ``field: problem``, the way our other errors say it."""
    below = cause
    while below is not None and not isinstance(below, ValidationError):
        below = below.__cause__  # pydantic-ai's ToolRetryError wraps pydantic's error
    if below is not None:
        return field_errors(below, root="answer")
    return str(cause) if cause is not None else ""


def _count(message: str) -> int:
    digits = message.split("max retries count of ", 1)[-1].split(".", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _retrying_output(messages: list[ModelMessage]) -> bool:
    """Whether the last request sent a structured answer back to be corrected."""
    requests = [m for m in messages if isinstance(m, ModelRequest)]
    if not requests:
        return False
    return any(
        isinstance(p, RetryFeedbackPart)
        or (
            isinstance(p, ToolReturnPart)
            and p.outcome == "retried"
            and p.tool_name == "final_result"
        )
        for p in requests[-1].parts
    )


def _invalid(
    output: OutputSpec,
    detail: str,
    messages: list[ModelMessage],
    *,
    raw: str | None = None,
) -> OutputValidationError:
    return OutputValidationError(
        f"the answer does not match {output.name}: {detail}",
        output_type=output.name,
        raw=_raw_answer(messages) if raw is None else raw,
    )


def _raw_answer(messages: list[ModelMessage]) -> str:
    """The model's last answer as it sent it: its text, else its output tool's arguments."""
    for message in reversed(messages):
        if isinstance(message, ModelResponse):
            text = "".join(p.content for p in message.parts if isinstance(p, TextPart))
            if text:
                return text
            calls = [p for p in message.parts if isinstance(p, ToolCallPart)]
            if calls:
                return calls[-1].args_as_json_str()
    return ""
