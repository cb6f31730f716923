"""``execute_run``: one agent run on a worker, from payload to published result.

Loads history, runs the agent loop, streams events, stores history, and always ends the run's
stream with ``run.done`` or ``run.failed``, whatever went wrong. Inside a TeamRun the run's
prompt is the previous stage's output, and the first run of a stage announces the hand-off.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic_ai.settings import ModelSettings as PydanticAISettings

from ..config.manifest import ModelSettings, parse_model_ref
from ..deadletters import keep, worth_keeping
from ..errors import CeleryAgentsError, RunCancelled, RunError, RunTimeout, UnknownToolError
from ..events import RunStarted, TalkEvent, TextDelta, ToolCallEvent, ToolResultEvent
from ..llm.agent_loop import LoopResult, Turn, run_agent
from ..llm.guard import estimated
from ..llm.journal import RunJournal
from ..llm.settings import as_pydantic_ai
from ..messages import ChatMessage, Participant, ToolCallInfo, Usage
from ..runstate import final_state
from ..store.entry import RunEntry
from ..store.queries import as_turns, conversation_turns
from ..streaming.outbox import Outbox
from ..streaming.publisher import Fenced
from ..tasks.names import RUN_AGENT
from ..tasks.payload import RunPayload
from ..tasks.records import MemberRecord
from ..tenants import reserve, spend
from ..tools import Tool
from .accounting import record_run
from .channel import RunChannel, add_usage
from .journal import RedisSteps, resumed
from .leases import AlreadyRan, Claim, LeaseLost, RunningElsewhere
from .pricing import cost_of
from .published import Published
from .runtime import WorkerRuntime
from .store_entries import agent_entry

log = logging.getLogger("celery_agents.run")


class _Publishing:
    """The agent loop's ``Emitter``: each progress step becomes an event of the run. A run
    resumed after its worker died publishes only what the earlier attempts did not (``seen``):
    the replayed steps, and the part of a streamed answer that went out before the death."""

    def __init__(self, channel: RunChannel, seen: Published | None = None) -> None:
        self._channel = channel
        self._run_id = channel.run_id
        self._seen = seen

    async def text(self, delta: str) -> None:
        if self._seen is not None:
            delta = self._seen.unseen(delta)
            if not delta:
                return
        await self._channel.emit(TextDelta(run_id=self._run_id, text=delta))

    async def tool_call(self, call: ToolCallInfo) -> None:
        if self._seen is not None and call.tool_call_id in self._seen.calls:
            return
        await self._channel.emit(
            ToolCallEvent(
                run_id=self._run_id,
                tool_call_id=call.tool_call_id,
                tool_name=call.tool_name,
                args=call.args,
            )
        )

    async def tool_result(self, call: ToolCallInfo) -> None:
        if self._seen is not None and call.tool_call_id in self._seen.results:
            return
        await self._channel.emit(
            ToolResultEvent(
                run_id=self._run_id,
                tool_call_id=call.tool_call_id,
                tool_name=call.tool_name,
                result=call.result,
                error=call.error,
            )
        )


def run_channel(runtime: WorkerRuntime, payload: RunPayload) -> RunChannel:
    return RunChannel(
        runtime.publisher,
        payload.run_id,
        payload.agent.name,
        tuple(payload.lineage),
        tuple(payload.position),
        Outbox(runtime.publisher),
    )


async def execute_run(
    runtime: WorkerRuntime,
    payload: RunPayload,
    *,
    previous: MemberRecord | None = None,
) -> ChatMessage:
    """Run ``payload`` (on ``previous``'s output inside a TeamRun); returns the assistant
    message or raises the run's error, both published.

    Raises ``AlreadyRan`` / ``RunningElsewhere`` (publishing nothing) for a delivery of a run
    that already ended or that another live execution holds, and ``LeaseLost`` (writing
    nothing) once this execution's lease lapsed under it."""
    run_id = payload.run_id
    channel = run_channel(runtime, payload)
    started = time.monotonic()
    ancestors = tuple(a.run_id for a in payload.lineage)
    # The history comes with the claim: one round trip before the model call.
    claim, history = await runtime.leases.claim(
        run_id,
        ancestors,
        about={"name": payload.agent.name, "tenant": payload.tenant or ""},
        beside=lambda pipe: runtime.history.load_in(pipe, payload.conversation_id),
    )
    if claim.verdict == "done":
        raise AlreadyRan(run_id, claim.state)
    if claim.verdict == "busy":
        raise RunningElsewhere(run_id, claim.retry_in)
    task = asyncio.current_task()
    if task is not None:  # no await since the claim: a cancel from now on reaches the run
        runtime.inflight[run_id] = (task, ancestors)
    if channel.outbox is not None:  # its progress goes out only while it holds the lease
        channel.outbox.fence = runtime.leases.fence(run_id)
    try:
        return await _execute_claimed(runtime, payload, channel, previous, started, claim, history)
    finally:
        runtime.inflight.pop(run_id, None)
        runtime.cancelled.discard(run_id)
        runtime.lost.discard(run_id)
        runtime.leases.release(run_id)


async def _execute_claimed(
    runtime: WorkerRuntime,
    payload: RunPayload,
    channel: RunChannel,
    previous: MemberRecord | None,
    started: float,
    claim: Claim,
    history: list[bytes],
) -> ChatMessage:
    run_id, agent = payload.run_id, payload.agent
    task = asyncio.current_task()
    if payload.handoff is not None and previous is not None and claim.attempt == 1:
        chain = payload.handoff.chain
        await channel.ancestor(chain.run_id).emit(
            TalkEvent(
                run_id=chain.run_id,
                source=Participant(name=previous.name),
                targets=[Participant(name=payload.handoff.target)],
            )
        )
    await channel.emit(
        RunStarted(
            run_id=run_id,
            agent=agent.name,
            model=agent.model,
            attempt=claim.attempt,
            worker=runtime.hostname,
        )
    )
    if payload.lineage:
        # A member's start is on record before its model is called: if its worker dies, the
        # Team's caller is told which members never ended. A single run's record says so.
        await channel.flush()
    log.info(
        "run start run_id=%s agent=%s model=%s attempt=%d",
        run_id,
        agent.name,
        agent.model,
        claim.attempt,
    )
    progress = LoopResult(text="")
    restored: list[tuple[str, ChatMessage, ChatMessage]] = []  # turns back from the store
    reserved = 0  # tokens of the tenant's budget held for this run, settled at its end
    try:
        if claim.cancelled or runtime.was_cancelled(run_id, runtime.inflight_ancestors(run_id)):
            raise RunCancelled(f"run {run_id} was cancelled before it started", run_id=run_id)
        async with asyncio.timeout(payload.time_left(time.time())):
            if payload.tenant is not None:  # before any model call
                hold = estimated(len(payload.prompt), agent.model_settings.max_tokens)
                reserved = await reserve(
                    runtime.redis, runtime.keys, runtime.manifest, payload.tenant, hold
                )
            messages = runtime.history.parse(history)  # a bad entry fails the run, reported
            if not messages and payload.resume:
                restored = await _restored(runtime, payload)
                messages = [m for _, asked, answered in restored for m in (asked, answered)]
            journal, seen = await _journal(runtime, payload, claim)
            user, message = await _run(
                runtime, payload, channel, previous, started, messages, progress, journal, seen
            )
            if payload.tenant:
                spent = (message.usage or Usage()).total_tokens
                await spend(runtime.redis, runtime.keys, payload.tenant, spent - reserved)
    except Fenced:  # a progress event found the lease gone: stop, say nothing more
        raise LeaseLost(run_id) from None
    except asyncio.CancelledError:
        if run_id in runtime.lost and task is not None:  # its lease lapsed: stop, say nothing
            task.uncancel()
            raise LeaseLost(run_id) from None
        if run_id not in runtime.cancelled or task is None:
            raise  # the worker is shutting down: not ours to report
        task.uncancel()
        error: CeleryAgentsError = RunCancelled(f"run {run_id} was cancelled", run_id=run_id)
    except TimeoutError:
        error = RunTimeout(
            f"run {run_id} timed out after {payload.timeout:g}s",
            run_id=run_id,
            timeout=payload.timeout,
        )
    except CeleryAgentsError as exc:
        error = exc
    except Exception as exc:  # a bug must still end the stream, never leave the caller waiting
        log.exception("run %s crashed", run_id)
        error = RunError(f"run {run_id} failed: {type(exc).__name__}: {exc}", run_id=run_id)
    else:
        ttl = runtime.settings.result_ttl
        # One round trip: the history, the usage and the record first, then the result event,
        # so whoever sees the result reads the final state, the rolled-up usage and the turn.
        async with runtime.leases.fenced(run_id) as pipe:
            if payload.store_history:  # written before the result is out, as in one call
                for turn_id, asked, answered in restored:  # Redis holds the whole history again
                    runtime.history.append_in(
                        pipe, payload.conversation_id, turn_id, [asked, answered]
                    )
                runtime.history.append_in(pipe, payload.conversation_id, run_id, [user, message])
            usage = message.usage or Usage()
            add_usage(
                pipe,
                runtime.keys,
                channel.lineage,
                usage,
                message.cost,
                ttl=ttl,
                requests=progress.requests,
            )
            runtime.record(
                pipe,
                lambda: _entry(
                    runtime.hostname,
                    payload,
                    previous,
                    claim,
                    started,
                    progress,
                    usage,
                    message.cost,
                    message,
                ),
                payload.deliver,
            )
            record_run(
                pipe,
                runtime.keys,
                agent.name,
                message.usage,
                message.cost,
                ok=True,
                state=(run_id, "succeeded", ttl),
            )
            # ended: the record now answers claims, and the journal has nothing left to replay
            pipe.delete(runtime.keys.run_lock(run_id), runtime.keys.run_journal(run_id))
            await channel.done(message, after=pipe)
        runtime.deliveries_queued(payload.deliver)
        _log_end(payload, started, "succeeded", message.usage)
        return message
    if not payload.lineage and worth_keeping(error):
        # Kept before the failure is published: whoever sees it can find the dead letter.
        await keep(
            runtime.redis, runtime.keys, run_id, RUN_AGENT, payload.model_dump(mode="json"), error
        )
    used = progress.usage  # the model calls made before the failure: paid for all the same
    cost = cost_of(runtime.manifest, agent.model, used) if used.total_tokens else None
    if payload.tenant and used.total_tokens != reserved:
        await spend(runtime.redis, runtime.keys, payload.tenant, used.total_tokens - reserved)
    async with runtime.leases.fenced(run_id) as pipe:
        state = (run_id, final_state(error), runtime.settings.result_ttl)
        if used.total_tokens or progress.requests:
            add_usage(
                pipe,
                runtime.keys,
                channel.lineage,
                used,
                cost,
                ttl=state[2],
                requests=progress.requests,
            )
        runtime.record(
            pipe,
            lambda: _entry(
                runtime.hostname,
                payload,
                previous,
                claim,
                started,
                progress,
                used,
                cost,
                error=error,
            ),
            payload.deliver,
        )
        record_run(pipe, runtime.keys, agent.name, used, cost, ok=False, state=state)
        pipe.delete(runtime.keys.run_lock(run_id), runtime.keys.run_journal(run_id))
        await channel.failed(error, after=pipe)
    runtime.deliveries_queued(payload.deliver)
    _log_end(payload, started, f"failed error={type(error).__name__}", used)
    raise error


async def _run(
    runtime: WorkerRuntime,
    payload: RunPayload,
    channel: RunChannel,
    previous: MemberRecord | None,
    started: float,
    history: list[ChatMessage],
    progress: LoopResult,
    journal: RunJournal,
    seen: Published | None,
) -> tuple[ChatMessage, ChatMessage]:
    """The run's prompt (as the user's message) and its answer; ``progress`` holds what the
    model calls used, whatever happens."""
    agent = payload.agent
    tools = _registered_tools(runtime, payload)
    journal.retry_safe = {t.name for t in tools if t.retry_safe}
    model = await runtime.models.get(agent.model)
    user = ChatMessage(
        content=prompt_of(payload, previous),
        role="user",
        run_id=payload.run_id,
        conversation_id=payload.conversation_id,
    )
    provider = parse_model_ref(agent.model)[0]
    result = await run_agent(
        model,
        user.text,
        history=[Turn(m.role, m.text) for m in history],
        instructions=agent.system_prompt,
        tools=tools,
        settings=request_settings(runtime, provider, agent.model_settings),
        emit=_Publishing(channel, seen),
        output=agent.output_type,
        output_mode=output_mode(runtime, provider),
        max_turns=runtime.settings.max_tool_turns,
        result=progress,
        journal=journal,
    )
    if journal.replayed:
        log.info(
            "run %s: %d journaled steps replayed (the model and tools were not called again)",
            payload.run_id,
            journal.replayed,
        )
    message = ChatMessage(
        content=result.output if agent.output_type is not None else result.text,
        role="assistant",
        name=agent.name,
        model=agent.model,
        run_id=payload.run_id,
        conversation_id=payload.conversation_id,
        usage=result.usage,
        cost=cost_of(runtime.manifest, agent.model, result.usage),
        response_time=round(time.monotonic() - started, 6),
        tool_calls=result.tool_calls,
        forwarded_from=payload.forwarded_from,
    )
    return user, message


async def _journal(
    runtime: WorkerRuntime, payload: RunPayload, claim: Claim
) -> tuple[RunJournal, Published | None]:
    """The run's journal (with what an earlier attempt journaled), and on a later attempt
    what the earlier ones published (one round trip, only then)."""
    run_id = payload.run_id
    fence = runtime.leases.fence(run_id)
    writer = None
    if runtime.settings.journal and fence is not None:
        writer = RedisSteps(runtime.redis, runtime.keys, run_id, fence, runtime.settings.result_ttl)
    if claim.attempt == 1:
        return RunJournal(run_id, writer), None
    found, seen = await resumed(runtime.redis, runtime.keys, run_id)
    return RunJournal(run_id, writer, found=found if writer is not None else {}), seen


async def _restored(
    runtime: WorkerRuntime, payload: RunPayload
) -> list[tuple[str, ChatMessage, ChatMessage]]:
    """The turns of a named conversation that Redis forgot, from the run store (none without
    a store). A store that cannot be read fails the run: an answer without its conversation
    would be wrong, not late."""
    if runtime.store is None:
        return []
    try:
        return as_turns(await conversation_turns(runtime.store, payload.conversation_id))
    except Exception as exc:
        raise RunError(
            f"run {payload.run_id}: conversation {payload.conversation_id!r} is no longer in "
            f"Redis, and the run store could not be read: {type(exc).__name__}: {exc}",
            run_id=payload.run_id,
        ) from None


def prompt_of(payload: RunPayload, previous: MemberRecord | None) -> str:
    """The prompt the model is given: the run's (inside a TeamRun, the previous stage's
    output), after the shared prompts of the Teams above it."""
    prompt = payload.prompt
    if previous is not None and previous.message is not None:
        prompt = as_prompt(previous.message)
    return "\n\n".join([*payload.prefixes, prompt])


def _entry(
    worker: str,
    payload: RunPayload,
    previous: MemberRecord | None,
    claim: Claim,
    started: float,
    progress: LoopResult,
    usage: Usage,
    cost: float | None,
    message: ChatMessage | None = None,
    *,
    error: CeleryAgentsError | None = None,
) -> RunEntry:
    """The run's record for the store; ``started`` is the claim's monotonic time."""
    return agent_entry(
        payload,
        prompt=prompt_of(payload, previous),
        attempt=claim.attempt,
        worker=worker,
        queued_at=payload.queued_at,
        started_at=time.time() - (time.monotonic() - started),
        usage=usage,
        requests=progress.requests,
        cost=cost,
        message=message,
        error=error,
    )


def request_settings(
    runtime: WorkerRuntime, provider: str, ours: ModelSettings
) -> PydanticAISettings:
    """pydantic-ai's settings for the run's model requests: the agent's sampling options, and
    for real providers our request timeout, no SDK retries (ours), the local model's cap."""
    settings = as_pydantic_ai(ours)
    if provider == "test":
        return settings
    if provider == "local" and ours.max_tokens is None:
        settings["max_tokens"] = runtime.settings.local_max_tokens
    settings["timeout"] = runtime.settings.model_request_timeout
    settings["max_retries"] = 0  # GuardedModel retries, within the fleet's limits
    return settings


def output_mode(runtime: WorkerRuntime, provider: str) -> str | None:
    """The output mode of typed runs on ``provider``: the manifest's, else native
    (``response_format``) on OpenAI-compatible providers, else pydantic-ai's default."""
    chosen = runtime.manifest.provider(provider).structured_output
    if chosen is None and runtime.models.openai_compatible(provider):
        return "json_schema"
    return chosen


def _registered_tools(runtime: WorkerRuntime, payload: RunPayload) -> list[Tool]:
    """The run's tools; a message naming anything not registered here is refused, and logged
    (a crafted message may name ``os.system``: it is a name, never an import)."""
    missing = sorted(set(payload.agent.tools) - runtime.tools.names())
    if missing:
        log.warning(
            "refused run run_id=%s: tools not registered on this worker: %s",
            payload.run_id,
            ", ".join(missing),
        )
        raise UnknownToolError(
            f"tool(s) {', '.join(map(repr, missing))} are not registered on this worker "
            f"(registered: {', '.join(sorted(runtime.tools.names())) or 'none'})",
            tools=missing,
            run_id=payload.run_id,
        )
    return [runtime.tools.get(name) for name in payload.agent.tools]


def as_prompt(message: ChatMessage) -> str:
    """How a message becomes the next TeamRun stage's prompt: a Team's answer lists each
    member's output under the member's name (nested Teams likewise)."""
    members = message.associated_messages
    if not members:
        return message.text
    names = message.metadata.get("members") or [m.name for m in members]
    return "\n\n".join(f"{name}:\n{as_prompt(m)}" for name, m in zip(names, members, strict=False))


def _log_end(payload: RunPayload, started: float, status: str, usage: Usage | None) -> None:
    usage = usage or Usage()
    log.info(
        "run end run_id=%s agent=%s model=%s status=%s tokens_in=%d tokens_out=%d duration=%.3f",
        payload.run_id,
        payload.agent.name,
        payload.agent.model,
        status,
        usage.input_tokens,
        usage.output_tokens,
        time.monotonic() - started,
    )
