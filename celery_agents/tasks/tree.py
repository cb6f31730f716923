"""The JSON a Team/TeamRun run carries: the whole tree, validated before anything runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..config.deliver import MAX_TARGETS, DeliverTarget
from ..config.manifest import AgentSpec
from .wire import Route, RunMessage, WireModel, preview

MAX_DEPTH = 8
MAX_NODES = 256
# Teams and TeamRuns above a run: the tree's depth, plus the background entry above it.
MAX_LINEAGE = MAX_DEPTH + 1
# Names travel in every member's routing (``ROUTING_FIELDS``), so they are bounded; generous
# enough for an operator-made name like ``a&b&c...`` of many members.
MAX_NAME = 4096

Name = Annotated[str, Field(max_length=MAX_NAME)]


def _bounded_agent_name(agent: AgentSpec) -> AgentSpec:
    if len(agent.name) > MAX_NAME:
        raise ValueError(f"an agent name has at most {MAX_NAME} characters")
    return agent


BoundedAgent = Annotated[AgentSpec, AfterValidator(_bounded_agent_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentNode(_Strict):
    kind: Literal["agent"] = "agent"
    agent: BoundedAgent
    conversation_id: str = Field(min_length=1, max_length=128)

    @property
    def name(self) -> str:
        return self.agent.name


class TeamNode(_Strict):
    """Members run in parallel (a chord)."""

    kind: Literal["team"] = "team"
    name: Name = Field(min_length=1)
    shared_prompt: str | None = None
    members: list[Node] = Field(min_length=1)


class ChainNode(_Strict):
    """Stages run in order, each on the previous one's output (a chain)."""

    kind: Literal["chain"] = "chain"
    name: Name = Field(min_length=1)
    shared_prompt: str | None = None
    members: list[Node] = Field(min_length=1)


Node = Annotated[AgentNode | TeamNode | ChainNode, Field(discriminator="kind")]
GroupNode = Annotated[TeamNode | ChainNode, Field(discriminator="kind")]


class TreePayload(RunMessage):
    """One Team or TeamRun run."""

    version: Literal[1] = 1
    run_id: str = Field(min_length=1, max_length=64)
    node: GroupNode
    prompt: str = Field(min_length=1)
    store_history: bool = True
    timeout: float = Field(gt=0)
    # Set by the beat for a run of a background entry (the entry is the root's ancestor).
    lineage: list[Ancestor] = Field(default_factory=list, max_length=MAX_LINEAGE)
    position: list[int] = Field(default_factory=list, max_length=MAX_LINEAGE)
    background: str | None = None
    route: Route = Field(default_factory=Route)
    tenant: str | None = Field(None, min_length=1, max_length=128)
    queued_at: float | None = None  # when its caller sent it
    deliver: list[DeliverTarget] = Field(default_factory=list, max_length=MAX_TARGETS)

    @model_validator(mode="after")
    def _bounded(self) -> TreePayload:
        count = 0

        def walk(node: AgentNode | TeamNode | ChainNode, depth: int) -> None:
            nonlocal count
            count += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"teams nest at most {MAX_DEPTH} levels deep")
            if count > MAX_NODES:
                raise ValueError(f"a team run has at most {MAX_NODES} nodes")
            if not isinstance(node, AgentNode):
                for member in node.members:
                    walk(member, depth + 1)

        walk(self.node, 1)
        return self

    def summary(self) -> dict[str, Any]:
        """Short, secret-free description for Flower and logs."""
        return {
            "team": self.node.name,
            "kind": self.node.kind,
            "prompt": preview(self.prompt),
            "run_id": self.run_id,
        }


class Ancestor(_Strict):
    """A Team/TeamRun above a run: its events are published there too."""

    run_id: Name  # a run's id, or a background entry's (a manifest schedule's: named after it)
    name: Name
    # A background entry above its runs wants their results, not every token.
    results_only: bool = False


class Handoff(_Strict):
    """Set on the first run of a TeamRun stage: it announces the hand-off (a ``talk``)."""

    chain: Ancestor
    target: Name


class GroupPayload(WireModel):
    """What ``collect_team`` / ``finish_chain`` need about their Team or TeamRun."""

    run_id: str
    name: str
    kind: Literal["team", "chain"]
    lineage: list[Ancestor] = Field(default_factory=list)
    position: list[int] = Field(default_factory=list)
    forwarded_from: list[str] = Field(default_factory=list)
    background: str | None = None
    tenant: str | None = None
    deliver: list[DeliverTarget] = Field(default_factory=list)  # the root's, where it ends
