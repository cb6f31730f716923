"""``execute_run``: one agent run on a worker, from payload to published result.

Loads history, runs the agent loop, streams events, stores history, and always ends the run's
stream with ``run.done`` or ``run.failed``, whatever went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import CeleryAgentsError, RunError, RunTimeout
from ..events import RunDone, RunFailed, RunStarted, TextDelta, ToolCallEvent, ToolResultEvent
from ..llm.agent_loop import run_agent_loop
from ..messages import ChatMessage, ToolCallInfo, Usage
from ..tasks.payload import RunPayload
from .pricing import cost_of
from .runtime import WorkerRuntime

log = logging.getLogger("celery_agents.run")


class _Publishing:
    """The agent loop's ``Emitter``: each progress step becomes an event on the run's channel."""

    def __init__(self, runtime: WorkerRuntime, run_id: str) -> None:
        self._publish = runtime.publisher.publish
        self._run_id = run_id

    async def text(self, delta: str) -> None:
        await self._publish(TextDelta(run_id=self._run_id, text=delta))

    async def tool_call(self, call: ToolCallInfo) -> None:
        await self._publish(
            ToolCallEvent(
                run_id=self._run_id,
                tool_call_id=call.tool_call_id,
                tool_name=call.tool_name,
                args=call.args,
            )
        )

    async def tool_result(self, call: ToolCallInfo) -> None:
        await self._publish(
            ToolResultEvent(
                run_id=self._run_id,
                tool_call_id=call.tool_call_id,
                tool_name=call.tool_name,
                result=call.result,
                error=call.error,
            )
        )


async def execute_run(
    runtime: WorkerRuntime, payload: RunPayload, *, attempt: int = 1
) -> ChatMessage:
    """Run ``payload``; returns the assistant message or raises the run's error (both published)."""
    run_id, agent = payload.run_id, payload.agent
    started = time.monotonic()
    await runtime.publisher.publish(
        RunStarted(
            run_id=run_id,
            agent=agent.name,
            model=agent.model,
            attempt=attempt,
            worker=runtime.hostname,
        )
    )
    log.info("run start run_id=%s agent=%s model=%s", run_id, agent.name, agent.model)
    try:
        async with asyncio.timeout(payload.timeout):
            message = await _run(runtime, payload, started)
    except TimeoutError:
        error: CeleryAgentsError = RunTimeout(
            f"run {run_id} timed out after {payload.timeout}s",
            run_id=run_id,
            timeout=payload.timeout,
        )
    except CeleryAgentsError as exc:
        error = exc
    except Exception as exc:  # a bug must still end the stream, never leave the caller waiting
        log.exception("run %s crashed", run_id)
        error = RunError(f"run {run_id} failed: {type(exc).__name__}: {exc}", run_id=run_id)
    else:
        await runtime.publisher.publish(RunDone(run_id=run_id, message=message))
        usage = message.usage or Usage()
        log.info(
            "run end run_id=%s agent=%s model=%s status=succeeded tokens_in=%d tokens_out=%d "
            "duration=%.3f",
            run_id,
            agent.name,
            agent.model,
            usage.input_tokens,
            usage.output_tokens,
            time.monotonic() - started,
        )
        return message
    await publish_failure(runtime, run_id, error)
    log.info(
        "run end run_id=%s agent=%s model=%s status=failed error=%s duration=%.3f",
        run_id,
        agent.name,
        agent.model,
        type(error).__name__,
        time.monotonic() - started,
    )
    raise error


async def publish_failure(runtime: WorkerRuntime, run_id: str, error: CeleryAgentsError) -> None:
    await runtime.publisher.publish(RunFailed(run_id=run_id, error=error.to_json()))


async def _run(runtime: WorkerRuntime, payload: RunPayload, started: float) -> ChatMessage:
    agent = payload.agent
    tools = {name: runtime.tools.get(name) for name in agent.tools}  # refuses unregistered names
    model = await runtime.models.get(agent.model)
    history = await runtime.history.load(payload.conversation_id)
    user = ChatMessage(
        content=payload.prompt,
        role="user",
        run_id=payload.run_id,
        conversation_id=payload.conversation_id,
    )
    result = await run_agent_loop(
        model,
        _chat_messages(agent.system_prompt, [*history, user]),
        tools=tools,
        settings=agent.model_settings,
        emit=_Publishing(runtime, payload.run_id),
        max_turns=runtime.settings.max_tool_turns,
    )
    message = ChatMessage(
        content=result.text,
        role="assistant",
        name=agent.name,
        model=agent.model,
        run_id=payload.run_id,
        conversation_id=payload.conversation_id,
        usage=result.usage,
        cost=cost_of(runtime.manifest, agent.model, result.usage),
        response_time=round(time.monotonic() - started, 6),
        tool_calls=result.tool_calls,
    )
    if payload.store_history:
        await runtime.history.append(payload.conversation_id, payload.run_id, [user, message])
    return message


def _chat_messages(system_prompt: str, history: list[ChatMessage]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.extend({"role": m.role, "content": m.text} for m in history)
    return messages
