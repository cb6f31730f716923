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

from collections.abc import AsyncIterator, Iterable
from typing import ClassVar, Self, Unpack

from ..errors import UserError
from ..events import Event, MessageEvent, TalkEvent
from ..jobs import Job
from ..messages import AgentResponse, ChatMessage, Talk
from ..tasks.tree import MAX_NAME, ChainNode, TeamNode
from .options import RunKwargs, RunOptions, join_prompts
from .runnable import Node, Runnable


class Member(Runnable):
    """What a Team or a TeamRun is made of (an Agent, a Team, a TeamRun): it runs, and it
    composes: ``a & b`` is a Team, ``a | b`` a TeamRun."""

    def __and__(self, other: Member) -> Team:
        return Team.join(self, other)

    def __or__(self, other: Member) -> TeamRun:
        return TeamRun.join(self, other)

    def agents(self) -> list[Member]:
        """Every agent in the tree, depth first (an agent: itself)."""
        return [self]


class _Group(Member):
    kind: ClassVar[str]
    separator: ClassVar[str]

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
            if not isinstance(member, Member):
                raise UserError(
                    f"{type(self).__name__} members must be Agents, Teams or TeamRuns, "
                    f"got {type(member).__name__}"
                )
        self._anonymous = name is None and shared_prompt is None
        self._name = name or self.separator.join(m.name for m in self.members)
        if len(self._name) > MAX_NAME:
            raise UserError(
                f"a {type(self).__name__} name has at most {MAX_NAME} characters, got "
                f"{len(self._name)}: give it a shorter name="
            )
        self.shared_prompt = shared_prompt

    @property
    def name(self) -> str:
        return self._name

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.members!r}, name={self.name!r})"

    def agents(self) -> list[Member]:
        found: list[Member] = []
        for member in self.members:
            found.extend(member.agents())
        return found

    def to_node(
        self,
        model: str | None = None,
        job: Job | None = None,
        *,
        include_agent_tools: bool = True,
        final: bool = True,
        conversation_id: str | None = None,
    ) -> TeamNode | ChainNode:
        """The tree as it crosses the broker. With a ``job``, the members whose answer is the
        result get its output type: every member of a Team, the last stage of a TeamRun."""
        members: list[Node] = [
            member.to_node(
                model,
                job,
                include_agent_tools=include_agent_tools,
                final=final and (self.kind == "team" or index == len(self.members) - 1),
                conversation_id=conversation_id,
            )
            for index, member in enumerate(self.members)
        ]
        node_type = TeamNode if self.kind == "team" else ChainNode
        return node_type(name=self.name, shared_prompt=self.shared_prompt, members=members)

    def _yields(self, event: Event) -> ChatMessage | None:
        if isinstance(event, MessageEvent) and _direct(event.position):
            return event.message
        return None


class Team(_Group):
    """Members run in parallel, as one Celery chord; ``run`` returns one message."""

    kind = "team"
    separator = "&"

    def _check_streams(self) -> None:
        raise UserError(
            f"team {self.name!r} runs its members in parallel and does not stream one text; "
            "follow it with `async for message in team.run_iter(...)`"
        )


class TeamRun(_Group):
    """Stages run in order, each on the previous stage's output, as one Celery chain."""

    kind = "chain"
    separator = "|"

    async def execute_iter(
        self, *prompts: str, **options: Unpack[RunKwargs]
    ) -> AsyncIterator[AgentResponse | Talk]:
        """``AgentResponse`` of stage 1, then ``Talk`` + ``AgentResponse`` per later stage.

        A failing stage ends it: what succeeded was yielded, then ``StageError`` is raised.
        """
        opts = RunOptions.of(options)
        last: ChatMessage | None = None
        async for event in self._events(self._payload(join_prompts(prompts), opts), opts):
            if isinstance(event, MessageEvent) and _direct(event.position):
                last = event.message
                yield AgentResponse(
                    agent_name=event.member or "",
                    message=event.message,
                    timing=event.message.response_time,
                )
            elif isinstance(event, TalkEvent) and event.member is None:
                yield Talk(source=event.source, targets=list(event.targets), message=last)


def _direct(position: list[int] | None) -> bool:
    return position is not None and len(position) == 1
