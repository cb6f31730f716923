"""``Runnable``: the run* methods of Agent, Team and TeamRun, written once.

A kind says only what differs: the node it sends (``to_node``: one agent, or a tree), the runs
``run_iter`` makes of its prompts, and which of a run's events ``run_iter`` yields. The options
(one ``RunOptions``), the checks before queueing, idempotency keys, sending, following and
typing the answer are here, so the three kinds cannot drift apart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeAlias, Unpack

from pydantic import BaseModel

from ..errors import UserError
from ..events import Event, RunFailed
from ..jobs import Job
from ..messages import ChatMessage
from ..streaming.hub import RunWatch
from ..tasks.names import RUN_AGENT, RUN_TEAM
from ..tasks.payload import RunPayload
from ..tasks.tree import AgentNode, ChainNode, TeamNode, TreePayload
from .admission import admit, run_timeout, within_limits
from .background import BackgroundMixin, BackgroundStats
from .bridge import iterate_on_io, on_io, run_sync
from .client import AgentsClient, get_client
from .follow import WAIT_GRACE, follow, wait_message
from .handle import RunHandle
from .options import RunKwargs, RunOptions, join_prompts
from .stream import RunStream
from .typed import typed

Node: TypeAlias = AgentNode | TeamNode | ChainNode
Payload: TypeAlias = RunPayload | TreePayload


class Runnable(BackgroundMixin):
    """Something that runs on the workers: an Agent, a Team or a TeamRun.

    Every run* method takes the prompt(s), then keyword-only options (``RunOptions``).
    """

    output_class: type[BaseModel] | None = None  # answers are turned into instances of it
    # Its conversation may continue from the run store: an Agent's that was named, or that a
    # run of it has written to (a new one's is empty: no store read for it).
    resumes = False

    # -- what differs per kind ----------------------------------------------------------

    @property
    def name(self) -> str:
        raise NotImplementedError

    def to_node(
        self,
        model: str | None = None,
        job: Job | None = None,
        *,
        include_agent_tools: bool = True,
        final: bool = True,
        conversation_id: str | None = None,
    ) -> Node:
        """What crosses the broker (checking every agent's provider). With a ``job``, the
        agents whose answer is the result (``final``) get its output type; with a
        ``conversation_id``, every agent continues that conversation instead of its own."""
        raise NotImplementedError

    def _runs(self, prompts: tuple[str, ...]) -> list[str]:
        """The prompts of the runs ``run_iter`` makes: one run of them all, by default."""
        return [join_prompts(prompts)]

    def _yields(self, event: Event) -> ChatMessage | None:
        """The message ``run_iter`` yields for ``event``, if any."""
        raise NotImplementedError

    def _check_streams(self) -> None:
        """Raise ``UserError`` if this kind has no one text to stream."""

    # -- the run* methods ---------------------------------------------------------------

    async def run(self, *prompts: str, **options: Unpack[RunKwargs]) -> ChatMessage:
        """Run once on the workers (the prompts joined as one); returns the run's message."""
        opts = RunOptions.of(options)
        return await self._result(self._payload(join_prompts(prompts), opts), opts)

    def run_sync(self, *prompts: str, **options: Unpack[RunKwargs]) -> ChatMessage:
        """``run`` for synchronous code; also works inside a running event loop."""
        return run_sync(self.run(*prompts, **options))

    async def run_job(
        self,
        job: Job,
        *,
        values: Mapping[str, Any] | None = None,
        include_agent_tools: bool = True,
        **options: Unpack[RunKwargs],
    ) -> ChatMessage:
        """Run ``job`` (its prompt filled with ``values``); the content is validated as its
        ``required_return_type`` (a Team's: each member's answer; a TeamRun's: the last
        stage's). ``include_agent_tools=False`` gives the runs only the job's tools. Its
        requirements are checked before anything is queued."""
        opts = RunOptions.of(options)
        payload = self._payload(job.render(values), opts, job, include_agent_tools)
        return await self._result(payload, opts, job.output_class())

    async def run_iter(
        self, *prompts: str, **options: Unpack[RunKwargs]
    ) -> AsyncIterator[ChatMessage]:
        """Agent: one run per prompt (a ``str`` is one prompt), in order. Team: each member's
        message as it finishes. TeamRun: each stage's, in order.

        Raises the run's error at the end if it failed (a Team fails only if all members do).
        """
        opts = RunOptions.of(options)
        runs = self._runs(prompts)
        if opts.idempotency_key and len(runs) > 1:
            raise UserError(
                f"an idempotency_key names one run; run_iter of {self.name!r} would make "
                f"{len(runs)}: give one prompt, or no key"
            )
        for prompt in runs:
            async for event in self._events(self._payload(prompt, opts), opts):
                message = self._yields(event)
                if message is not None:
                    yield self._typed(message)

    def run_stream(self, *prompts: str, **options: Unpack[RunKwargs]) -> RunStream:
        """``async with x.run_stream(p) as s:`` then ``s.stream()`` yields text deltas, each
        ``TextChunk`` tagged with its agent (Agents and TeamRuns; a Team refuses)."""
        self._check_streams()
        opts = RunOptions.of(options)
        payload = self._payload(join_prompts(prompts), opts)
        return RunStream(
            lambda: open_run(payload, opts.idempotency_key),
            run_id=payload.run_id,
            name=self.name,
            timeout=payload.timeout,
            convert=self._typed,
        )

    async def submit(self, *prompts: str, **options: Unpack[RunKwargs]) -> RunHandle:
        """Queue a run and return at once with its ``RunHandle``. ``queue`` routes it to the
        workers consuming that queue; ``priority`` 9 overtakes everything waiting below it.
        A Team's handle ``cancel()`` stops every member, waiting or running."""
        opts = RunOptions.of(options)
        payload = self._payload(join_prompts(prompts), opts)
        run_id = await on_io(send_run(payload, opts.idempotency_key))
        return RunHandle(run_id, timeout=payload.timeout)

    async def run_in_background(
        self,
        *prompts: str,
        max_count: int | None = None,
        interval: float = 1.0,
        block: bool = False,
        **options: Unpack[RunKwargs],
    ) -> BackgroundStats:
        """Run on the beat: a run, then ``interval`` seconds, then the next; exactly
        ``max_count`` runs (None: until ``cancel()``). ``block`` returns when it is done.
        With ``idempotency_key``, a second call with the same key follows the first's entry."""
        opts = RunOptions.of(options)
        payload = self._payload(join_prompts(prompts), opts)
        await on_io(_admit(get_client(), payload))
        return await self._start_background(
            RUN_AGENT if isinstance(payload, RunPayload) else RUN_TEAM,
            payload.model_dump(mode="json"),
            max_count=max_count,
            interval=interval,
            timeout=payload.timeout,
            block=block,
            idempotency_key=opts.idempotency_key,
        )

    # -- the core -----------------------------------------------------------------------

    def _payload(
        self,
        prompt: str,
        options: RunOptions,
        job: Job | None = None,
        include_agent_tools: bool = True,
    ) -> Payload:
        """The task message of one run, checked against the size limits."""
        node = self.to_node(
            options.model,
            job,
            include_agent_tools=include_agent_tools,
            conversation_id=options.conversation_id,
        )
        common: dict[str, Any] = {
            "run_id": uuid.uuid4().hex,
            "prompt": prompt,
            "store_history": options.store_history,
            "timeout": run_timeout(options.timeout),
            "tenant": options.tenant,
            "route": options.route(),
            "queued_at": time.time(),
            "deliver": options.targets,
        }
        if isinstance(node, AgentNode):
            resume = options.conversation_id is not None or self.resumes
            if options.store_history and options.conversation_id is None:
                self.resumes = True  # its own conversation has a past from now on
            return within_limits(
                RunPayload(
                    **common,
                    agent=node.agent,
                    conversation_id=node.conversation_id,
                    resume=resume,
                )
            )
        return within_limits(TreePayload(**common, node=node))

    async def _result(
        self, payload: Payload, options: RunOptions, output_class: type[BaseModel] | None = None
    ) -> ChatMessage:
        running = _wait(payload, options.idempotency_key)
        del payload  # sent, it is not kept while the run goes (a client may wait on thousands)
        return self._typed(await on_io(running), output_class)

    def _typed(
        self, message: ChatMessage, output_class: type[BaseModel] | None = None
    ) -> ChatMessage:
        return typed(message, output_class or self.output_class)

    async def _events(self, payload: Payload, options: RunOptions) -> AsyncIterator[Event]:
        """The run's events, up to its end; its failure raised."""
        wait = payload.timeout + WAIT_GRACE
        watch = await on_io(open_run(payload, options.idempotency_key))
        try:
            async for event in iterate_on_io(follow(watch, wait)):
                if isinstance(event, RunFailed) and event.member is None:
                    raise event.exception()
                yield event
        finally:  # also when left before the first event (follow() then never started)
            await on_io(watch.close())


# Everything below runs on the I/O loop.


async def open_run(payload: Payload, idempotency_key: str | None = None) -> RunWatch:
    """Check, subscribe, send: a watch on the run. With a key another call claimed, a watch
    on that call's run instead (replayed from its start)."""
    client = get_client()
    await _admit(client, payload)
    owner = await _owner(client, idempotency_key, payload.run_id)
    if owner != payload.run_id:  # someone ran it already, or runs it now: attach
        return await client.watch(owner)
    watch = await client.start(payload)
    if idempotency_key:
        try:
            await client.confirm(idempotency_key)
        except BaseException:
            await watch.close()
            raise
    return watch


async def send_run(payload: Payload, idempotency_key: str | None = None) -> str:
    """Check and send without following; the run's id (with a claimed key, the owner's)."""
    client = get_client()
    await _admit(client, payload)
    owner = await _owner(client, idempotency_key, payload.run_id)
    if owner != payload.run_id:
        return owner
    await client.enqueue(payload)
    if idempotency_key:
        await client.confirm(idempotency_key)
    return payload.run_id


async def _wait(payload: Payload, idempotency_key: str | None) -> ChatMessage:
    wait = payload.timeout + WAIT_GRACE
    watch = await open_run(payload, idempotency_key)
    del payload  # not held while waiting
    return await wait_message(watch, wait)


async def _owner(client: AgentsClient, idempotency_key: str | None, run_id: str) -> str:
    """The run that owns the key: ``run_id`` if this call claimed it (or gave no key)."""
    return await client.claim(idempotency_key, run_id) if idempotency_key else run_id


async def _admit(client: AgentsClient, payload: Payload) -> None:
    if isinstance(payload, RunPayload):
        await admit(client, payload.agent.name, set(payload.agent.tools), payload.tenant)
    else:
        await admit(client, payload.node.name, tools_in(payload.node), payload.tenant)


def tools_in(node: Node) -> set[str]:
    """Every tool an agent of the tree may call."""
    if isinstance(node, AgentNode):
        return set(node.agent.tools)
    return {tool for member in node.members for tool in tools_in(member)}
