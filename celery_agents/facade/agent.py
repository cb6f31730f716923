"""``Agent``: an LLM agent whose runs execute on Celery workers.

agent = Agent(name="analyst", model="openai:gpt-4o-mini", system_prompt="You analyse.")
msg = await agent.run("analyze this")
msg = agent.run_sync("analyze this")
async with agent.run_stream("analyze") as stream:
    async for chunk in stream.stream(): ...
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..config.manifest import AgentsManifest, AgentSpec, ModelSettings, parse_model_ref
from ..errors import UnknownProviderError, UnknownToolError, UserError
from ..jobs import Job
from ..messages import ChatMessage
from ..output import OutputSpec, import_type
from ..streaming.hub import RunWatch
from ..tasks.names import RUN_AGENT
from ..tasks.payload import RunPayload
from ..tasks.tree import MAX_NAME
from ..tasks.wire import DEFAULT_PRIORITY, Limits, Route, RunMessage
from ..tenants import check_budget
from ..tools import REGISTRY
from ..validation import field_errors
from .background import BackgroundMixin, BackgroundStats
from .bridge import on_io, run_sync
from .client import AgentsClient, get_client
from .follow import WAIT_GRACE, wait_message
from .handle import RunHandle
from .stream import RunStream
from .typed import typed

if TYPE_CHECKING:
    from .team import Member, Team, TeamRun

P = TypeVar("P", bound=RunMessage)


class Agent(BackgroundMixin):
    """An agent definition plus its own conversation (``conversation_id``)."""

    def __init__(
        self,
        name: str,
        model: str,
        system_prompt: str = "",
        *,
        tools: Iterable[str] = (),
        output_type: Any = None,
        model_settings: dict[str, Any] | ModelSettings | None = None,
        conversation_id: str | None = None,
        description: str = "",
    ) -> None:
        self.output_class = output_class_of(output_type)
        try:
            self.spec = AgentSpec.model_validate(
                {
                    "name": name,
                    "model": model,
                    "system_prompt": system_prompt,
                    "tools": list(tools),
                    "model_settings": model_settings or {},
                    "description": description,
                    "output_type": output_type and OutputSpec.of(output_type),
                }
            )
            parse_model_ref(model)
        except ValidationError as exc:
            raise UserError(f"agent {name!r}: {field_errors(exc)}", agent=name) from None
        except ValueError as exc:
            raise UserError(f"agent {name!r}: {exc}", agent=name) from None
        if not name:
            raise UserError("an agent needs a non-empty name")
        if len(name) > MAX_NAME:
            raise UserError(f"an agent name has at most {MAX_NAME} characters, got {len(name)}")
        self.conversation_id = conversation_id or uuid.uuid4().hex

    @classmethod
    def from_spec(cls, spec: AgentSpec, *, conversation_id: str | None = None) -> Agent:
        return cls(
            spec.name,
            spec.model,
            spec.system_prompt,
            tools=spec.tools,
            model_settings=spec.model_settings,
            conversation_id=conversation_id,
            description=spec.description,
            output_type=spec.output_type,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model(self) -> str:
        return self.spec.model

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, model={self.model!r})"

    # -- running -------------------------------------------------------------------------

    async def run(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> ChatMessage:
        """Run once on a worker; returns the assistant's message (prompts joined as one).

        With ``idempotency_key``, a second call with the same key (from any process, while the
        first run's result is kept) returns that run's result instead of running again.
        """
        payload = self._payload(
            join_prompts(prompts),
            store_history,
            model,
            conversation_id,
            timeout,
            route=route_of(queue, priority),
            tenant=tenant,
        )
        running = _run(payload, idempotency_key)
        del payload  # sent, it is not kept while the run goes (a client may wait on thousands)
        return typed(await on_io(running), self.output_class)

    async def run_job(
        self,
        job: Job,
        *,
        values: Mapping[str, Any] | None = None,
        store_history: bool = True,
        include_agent_tools: bool = True,
        model: str | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,
    ) -> ChatMessage:
        """Run ``job`` (its prompt filled with ``values``); ``content`` is an instance of its
        ``required_return_type``. Its requirements are checked before anything is queued."""
        spec = self.job_spec(job, include_agent_tools=include_agent_tools, model=model)
        payload = self._payload(
            job.render(values), store_history, model, conversation_id, timeout, spec=spec
        )
        return typed(await on_io(_run(payload)), job.output_class() or self.output_class)

    def run_sync(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> ChatMessage:
        """``run`` for synchronous code; also works inside a running event loop."""
        return run_sync(
            self.run(
                *prompts,
                store_history=store_history,
                model=model,
                conversation_id=conversation_id,
                timeout=timeout,
                queue=queue,
                priority=priority,
                idempotency_key=idempotency_key,
                tenant=tenant,
            )
        )

    async def run_iter(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[ChatMessage]:
        """One run per prompt, in order (a ``str`` is one prompt)."""
        for prompt in prompts:
            yield await self.run(
                prompt,
                store_history=store_history,
                model=model,
                conversation_id=conversation_id,
                timeout=timeout,
            )

    def run_stream(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,
    ) -> RunStream:
        """``async with agent.run_stream(p) as s:`` then ``s.stream()`` yields text deltas."""
        payload = self._payload(
            join_prompts(prompts), store_history, model, conversation_id, timeout
        )
        return RunStream(
            lambda: start_run(payload),
            run_id=payload.run_id,
            name=self.name,
            timeout=payload.timeout,
            convert=lambda message: typed(message, self.output_class),
        )

    async def submit(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> RunHandle:
        """Queue a run and return at once with its ``RunHandle``. ``queue`` routes it to the
        workers consuming that queue; ``priority`` 9 overtakes everything waiting below it."""
        payload = self._payload(
            join_prompts(prompts),
            store_history,
            model,
            conversation_id,
            timeout,
            route=route_of(queue, priority),
            tenant=tenant,
        )
        client = get_client()

        async def go() -> str:  # one hop to the I/O loop for all of it
            await admit(client, payload.agent.name, set(payload.agent.tools), tenant)
            if idempotency_key:
                owner = await client.claim(idempotency_key, payload.run_id)
                if owner != payload.run_id:
                    return owner
            await client.enqueue(payload)
            if idempotency_key:
                await client.confirm(idempotency_key)
            return payload.run_id

        return RunHandle(await on_io(go()), timeout=payload.timeout)

    async def run_in_background(
        self,
        *prompts: str,
        max_count: int | None = None,
        interval: float = 1.0,
        block: bool = False,
        store_history: bool = True,
        model: str | None = None,
        timeout: float | None = None,
    ) -> BackgroundStats:
        """Run on the beat: a run, then ``interval`` seconds, then the next; exactly
        ``max_count`` runs (None: until ``cancel()``). ``block`` returns when it is done."""
        payload = self._payload(join_prompts(prompts), store_history, model, None, timeout)
        await on_io(check_tools(get_client(), self.name, set(payload.agent.tools)))
        return await self._start_background(
            RUN_AGENT,
            payload.model_dump(mode="json"),
            max_count=max_count,
            interval=interval,
            timeout=payload.timeout,
            block=block,
        )

    # -- history -------------------------------------------------------------------------

    async def get_history(self, conversation_id: str | None = None) -> list[ChatMessage]:
        """The conversation's messages, oldest first."""
        return await on_io(get_client().load_history(conversation_id or self.conversation_id))

    async def clear_history(self, conversation_id: str | None = None) -> None:
        await on_io(get_client().clear_history(conversation_id or self.conversation_id))

    # -- helpers -------------------------------------------------------------------------

    def resolved_spec(self, model: str | None = None) -> AgentSpec:
        """The spec a run sends (with a per-call model), checked against known providers."""
        spec = self.spec
        if model is not None:
            spec = spec.model_copy(update={"model": model})
        try:
            get_client().manifest.check_model(spec.model)
        except ValueError as exc:
            raise UserError(f"model: {exc}") from None
        except UnknownProviderError as exc:
            raise UnknownProviderError(f"agent {self.name!r}: {exc}", **exc.details) from None
        return spec

    def job_spec(
        self,
        job: Job,
        *,
        include_agent_tools: bool = True,
        model: str | None = None,
        final: bool = True,
    ) -> AgentSpec:
        """The spec of this agent running ``job``: the job's tools (with or without the
        agent's), and, for a run whose answer is the result (``final``), its output type."""
        spec = self.resolved_spec(model)
        check_job(job, spec.model, get_client().manifest)
        tools = list(spec.tools) if include_agent_tools else []
        tools += [t for t in job.tools if t not in tools]
        update: dict[str, Any] = {"tools": tools}
        if final and job.required_return_type is not None:
            update["output_type"] = job.output_spec()
        return spec.model_copy(update=update)

    def __and__(self, other: Member) -> Team:
        from .team import Team

        return Team.join(self, other)

    def __or__(self, other: Member) -> TeamRun:
        from .team import TeamRun

        return TeamRun.join(self, other)

    def _payload(
        self,
        prompt: str,
        store_history: bool,
        model: str | None,
        conversation_id: str | None,
        timeout: float | None,
        *,
        spec: AgentSpec | None = None,
        route: Route | None = None,
        tenant: str | None = None,
    ) -> RunPayload:
        return within_limits(
            RunPayload(
                route=route or Route(),
                tenant=tenant,
                run_id=uuid.uuid4().hex,
                agent=spec or self.resolved_spec(model),
                prompt=prompt,
                conversation_id=conversation_id or self.conversation_id,
                store_history=store_history,
                timeout=run_timeout(timeout),
            )
        )


async def _run(payload: RunPayload, idempotency_key: str | None = None) -> ChatMessage:
    wait = payload.timeout + WAIT_GRACE
    client = get_client()
    if idempotency_key:
        owner = await client.claim(idempotency_key, payload.run_id)
        if owner != payload.run_id:  # someone ran it already, or runs it now: attach
            return await wait_message(await client.watch(owner), wait)
    watch = await start_run(payload)
    del payload  # not held while waiting
    if idempotency_key:
        try:
            await client.confirm(idempotency_key)
        except BaseException:
            await watch.close()
            raise
    return await wait_message(watch, wait)


async def start_run(payload: RunPayload) -> RunWatch:
    """Check the run's tools, subscribe, send (on the I/O loop)."""
    client = get_client()
    await admit(client, payload.agent.name, set(payload.agent.tools), payload.tenant)
    return await client.start(payload)


async def admit(client: AgentsClient, who: str, tools: set[str], tenant: str | None) -> None:
    """Refused here, before anything is queued: tools no one can run, a tenant over budget."""
    await check_tools(client, who, tools)
    if tenant is not None:
        await check_budget(client.redis, client.keys, client.manifest, tenant)


async def check_tools(client: AgentsClient, who: str, wanted: set[str]) -> None:
    """Refuse tool names no one can run: not in the manifest, here, or on a live worker."""
    if not wanted:
        return
    known = set(client.manifest.tools) | REGISTRY.names()
    if wanted - known:
        known |= await client.worker_tools()
    missing = sorted(wanted - known)
    if missing:
        raise UnknownToolError(
            f"{who!r}: unknown tool(s) {', '.join(missing)}: not in the manifest, not "
            "registered here, and not offered by any live worker",
            tools=missing,
        )


def route_of(queue: str | None, priority: int) -> Route:
    try:
        return Route(queue=queue, priority=priority)
    except ValidationError as exc:
        raise UserError(f"routing: {field_errors(exc)}") from None


def check_job(job: Job, model: str, manifest: AgentsManifest) -> None:
    """A job whose requirements the model is known not to meet fails before queueing."""
    info = manifest.model_info(model)
    if job.requires_vision and info.vision is False:
        raise UserError(
            f"job {job.name!r} requires vision, but {model} is marked without it",
            job=job.name,
            model=model,
        )
    if (
        job.min_context_tokens
        and info.context_tokens
        and info.context_tokens < job.min_context_tokens
    ):
        raise UserError(
            f"job {job.name!r} needs {job.min_context_tokens} context tokens, but {model} "
            f"has {info.context_tokens}",
            job=job.name,
            model=model,
        )


def output_class_of(output_type: Any) -> type[BaseModel] | None:
    """The class answers are turned into on this side (None for a bare ``OutputSpec``)."""
    if output_type is None or isinstance(output_type, OutputSpec):
        return None
    if isinstance(output_type, str):
        return import_type(output_type)
    if isinstance(output_type, type) and issubclass(output_type, BaseModel):
        return output_type
    raise UserError(f"output_type must be a pydantic model class, got {output_type!r}")


def within_limits(payload: P) -> P:
    """``payload``, refused (``InvalidPayloadError``) before sending if it is over the
    configured prompt or message size limits; every run the facade starts passes here."""
    payload.check_limits(Limits.of(get_client().settings))
    return payload


def run_timeout(timeout: float | None) -> float:
    if timeout is not None and timeout <= 0:
        raise UserError(f"timeout must be positive, got {timeout}")
    return timeout or get_client().settings.run_timeout


def join_prompts(prompts: tuple[str, ...]) -> str:
    if not prompts:
        raise UserError("a run needs a prompt")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise UserError(f"prompts must be str, got {type(prompt).__name__}")
    text = "\n\n".join(prompts)
    if not text.strip():
        raise UserError("the prompt is empty")
    return text
