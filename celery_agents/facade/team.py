"""``Team`` (parallel: a Celery chord) and ``TeamRun`` (sequential: a Celery chain).

    team = analyst & critic                 # Team([analyst, critic])
    chain = researcher | writer | editor    # TeamRun([researcher, writer, editor])
    msg = await team.run("analyze this")    # content: the members' outputs, in member order
    msg = chain.run_sync("analyze this")    # the last stage's message

Operators return new objects and never change their operands. ``a & b & c`` is one Team of
three; a named Team (or one with a shared prompt) stays one member: ``(a | b) & c`` is a
Team whose first member is the TeamRun.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, ClassVar, Self, TypeAlias

from ..errors import UserError
from ..events import Event, MessageEvent, RunFailed, TalkEvent
from ..jobs import Job
from ..messages import AgentResponse, ChatMessage, Talk
from ..streaming.hub import RunWatch
from ..tasks.names import RUN_TEAM
from ..tasks.tree import MAX_NAME, AgentNode, ChainNode, TeamNode, TreePayload
from ..tasks.wire import DEFAULT_PRIORITY, Route
from .agent import Agent, admit, check_tools, join_prompts, route_of, run_timeout, within_limits
from .background import BackgroundMixin, BackgroundStats
from .bridge import iterate_on_io, on_io, run_sync
from .client import get_client
from .follow import WAIT_GRACE, follow, wait_message
from .handle import RunHandle
from .stream import RunStream
from .typed import typed

Member: TypeAlias = "Agent | Team | TeamRun"


class _Group(BackgroundMixin):
    kind: ClassVar[str]
    separator: ClassVar[str]
    name: str

    def __init__(
        self,
        members: Iterable[Member],
        *,
        name: str | None = None,
        shared_prompt: str | None = None,
    ) -> None:
        self.members: list[Member] = list(members)
        if not self.members:
            raise UserError(f"a {type(self).__name__} needs at least one member")
        for member in self.members:
            if not isinstance(member, Agent | Team | TeamRun):
                raise UserError(
                    f"{type(self).__name__} members must be Agents, Teams or TeamRuns, "
                    f"got {type(member).__name__}"
                )
        self._anonymous = name is None and shared_prompt is None
        self.name = name or self.separator.join(m.name for m in self.members)
        if len(self.name) > MAX_NAME:
            raise UserError(
                f"a {type(self).__name__} name has at most {MAX_NAME} characters, got "
                f"{len(self.name)}: give it a shorter name="
            )
        self.shared_prompt = shared_prompt

    @classmethod
    def join(cls, left: Member, right: Member) -> Self:
        """``left op right``: operator-made groups of the same kind merge; others nest."""
        parts: list[Member] = []
        for side in (left, right):
            if isinstance(side, cls) and side._anonymous:
                parts.extend(side.members)
            else:
                parts.append(side)
        return cls(parts)

    def __and__(self, other: Member) -> Team:
        return Team.join(self, other)  # type: ignore[arg-type]

    def __or__(self, other: Member) -> TeamRun:
        return TeamRun.join(self, other)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.members!r}, name={self.name!r})"

    def agents(self) -> list[Agent]:
        """Every agent in the tree, depth first."""
        found: list[Agent] = []
        for member in self.members:
            found.extend([member] if isinstance(member, Agent) else member.agents())
        return found

    def to_node(
        self,
        model: str | None = None,
        job: Job | None = None,
        *,
        include_agent_tools: bool = True,
        final: bool = True,
    ) -> TeamNode | ChainNode:
        """The tree as it crosses the broker (checks every agent's provider). With a ``job``,
        members whose answer is the result get its output type: every member of a Team, the
        last stage of a TeamRun."""
        members: list[AgentNode | TeamNode | ChainNode] = []
        for index, member in enumerate(self.members):
            member_final = final and (self.kind == "team" or index == len(self.members) - 1)
            if isinstance(member, Agent):
                spec = (
                    member.job_spec(
                        job,
                        include_agent_tools=include_agent_tools,
                        model=model,
                        final=member_final,
                    )
                    if job is not None
                    else member.resolved_spec(model)
                )
                members.append(AgentNode(agent=spec, conversation_id=member.conversation_id))
            else:
                members.append(
                    member.to_node(
                        model, job, include_agent_tools=include_agent_tools, final=member_final
                    )
                )
        node_type = TeamNode if self.kind == "team" else ChainNode
        return node_type(name=self.name, shared_prompt=self.shared_prompt, members=members)

    def _tree(
        self,
        prompts: tuple[str, ...],
        store_history: bool,
        model: str | None,
        timeout: float | None,
        tenant: str | None = None,
        route: Route | None = None,
    ) -> TreePayload:
        return within_limits(
            TreePayload(
                run_id=uuid.uuid4().hex,
                node=self.to_node(model),
                prompt=join_prompts(prompts),
                store_history=store_history,
                timeout=run_timeout(timeout),
                tenant=tenant,
                route=route or Route(),
            )
        )

    async def _admit(self, tree: TreePayload) -> None:
        await admit(get_client(), self.name, _tools_in(tree.node), tree.tenant)

    async def _start(self, tree: TreePayload) -> RunWatch:
        await self._admit(tree)
        return await get_client().start(tree)

    async def run_job(
        self,
        job: Job,
        *,
        values: Mapping[str, Any] | None = None,
        store_history: bool = True,
        include_agent_tools: bool = True,
        model: str | None = None,
        timeout: float | None = None,
    ) -> ChatMessage:
        """Run ``job``: a Team's content is each member's validated answer; a TeamRun's job
        prompt enters its first stage and its last stage answers with the job's type."""
        tree = within_limits(
            TreePayload(
                run_id=uuid.uuid4().hex,
                node=self.to_node(model, job, include_agent_tools=include_agent_tools),
                prompt=job.render(values),
                store_history=store_history,
                timeout=run_timeout(timeout),
            )
        )

        async def go() -> ChatMessage:
            return await wait_message(await self._start(tree), tree.timeout + WAIT_GRACE)

        return typed(await on_io(go()), job.output_class())

    async def run(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        timeout: float | None = None,
        tenant: str | None = None,
        queue: str | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> ChatMessage:
        """Run the whole tree on the workers; returns its one message."""
        tree = self._tree(prompts, store_history, model, timeout, tenant, route_of(queue, priority))

        async def go() -> ChatMessage:
            return await wait_message(await self._start(tree), tree.timeout + WAIT_GRACE)

        return await on_io(go())

    async def submit(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        timeout: float | None = None,
        tenant: str | None = None,
        queue: str | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> RunHandle:
        """Queue the whole tree and return at once with its ``RunHandle``; the handle's
        ``cancel()`` stops every member (waiting or running) and ends the tree cancelled."""
        tree = self._tree(prompts, store_history, model, timeout, tenant, route_of(queue, priority))

        async def go() -> None:
            await self._admit(tree)
            await get_client().enqueue(tree)

        await on_io(go())
        return RunHandle(tree.run_id, timeout=tree.timeout)

    def run_sync(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        timeout: float | None = None,
    ) -> ChatMessage:
        """``run`` for synchronous code; also works inside a running event loop."""
        return run_sync(
            self.run(*prompts, store_history=store_history, model=model, timeout=timeout)
        )

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
        """Run the whole tree on the beat, like ``Agent.run_in_background``."""
        tree = self._tree(prompts, store_history, model, timeout)
        await on_io(check_tools(get_client(), self.name, _tools_in(tree.node)))
        return await self._start_background(
            RUN_TEAM,
            tree.model_dump(mode="json"),
            max_count=max_count,
            interval=interval,
            timeout=tree.timeout,
            block=block,
        )

    async def run_iter(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[ChatMessage]:
        """Team: each member's message as it finishes. TeamRun: each stage's, in order.

        Raises the run's error at the end if it failed (a Team fails only if all members do).
        """
        tree = self._tree(prompts, store_history, model, timeout)
        async for event in self._follow(tree):
            if isinstance(event, MessageEvent) and _direct(event.position):
                yield event.message

    async def _follow(self, tree: TreePayload) -> AsyncIterator[Event]:
        watch = await on_io(self._start(tree))
        try:
            async for event in iterate_on_io(follow(watch, tree.timeout + WAIT_GRACE)):
                if isinstance(event, RunFailed) and event.member is None:
                    raise event.exception()
                yield event
        finally:  # also when left before the first event (follow() then never started)
            await on_io(watch.close())


class Team(_Group):
    """Members run in parallel, as one Celery chord; ``run`` returns one message."""

    kind = "team"
    separator = "&"

    def run_stream(self, *prompts: str, **options: object) -> RunStream:
        raise UserError(
            f"team {self.name!r} runs its members in parallel and does not stream one text; "
            "follow it with `async for message in team.run_iter(...)`"
        )


class TeamRun(_Group):
    """Stages run in order, each on the previous stage's output, as one Celery chain."""

    kind = "chain"
    separator = "|"

    def run_stream(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        timeout: float | None = None,
    ) -> RunStream:
        """Token deltas of every stage, each ``TextChunk`` tagged with its agent."""
        tree = self._tree(prompts, store_history, model, timeout)
        return RunStream(
            lambda: self._start(tree), run_id=tree.run_id, name=self.name, timeout=tree.timeout
        )

    async def execute_iter(
        self,
        *prompts: str,
        store_history: bool = True,
        model: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[AgentResponse | Talk]:
        """``AgentResponse`` of stage 1, then ``Talk`` + ``AgentResponse`` per later stage.

        A failing stage ends it: what succeeded was yielded, then ``StageError`` is raised.
        """
        tree = self._tree(prompts, store_history, model, timeout)
        last: ChatMessage | None = None
        async for event in self._follow(tree):
            if isinstance(event, MessageEvent) and _direct(event.position):
                last = event.message
                yield AgentResponse(
                    agent_name=event.member or "",
                    message=event.message,
                    timing=event.message.response_time,
                )
            elif isinstance(event, TalkEvent) and event.member is None:
                yield Talk(source=event.source, targets=list(event.targets), message=last)


def _tools_in(node: AgentNode | TeamNode | ChainNode) -> set[str]:
    if isinstance(node, AgentNode):
        return set(node.agent.tools)
    return {tool for member in node.members for tool in _tools_in(member)}


def _direct(position: list[int] | None) -> bool:
    return position is not None and len(position) == 1
