"""``RunPayload``: the JSON a run's task message carries. Validated before anything runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..config.deliver import MAX_TARGETS, DeliverTarget
from .tree import MAX_LINEAGE, MAX_NODES, Ancestor, BoundedAgent, GroupPayload, Handoff, Name
from .wire import Route, RunMessage, preview


class RunPayload(RunMessage):
    """One agent run. Holds no secrets: providers' keys are read on the workers."""

    version: Literal[1] = 1
    run_id: str = Field(min_length=1, max_length=64)
    agent: BoundedAgent
    prompt: str = Field(min_length=1)
    conversation_id: str = Field(min_length=1, max_length=128)
    store_history: bool = True
    # The caller named the conversation: with no history in Redis (expired), the worker
    # continues it from the run store.
    resume: bool = False
    timeout: float = Field(gt=0)
    # Set when the run is a member of a Team/TeamRun (see tasks/tree.py).
    lineage: list[Ancestor] = Field(default_factory=list, max_length=MAX_LINEAGE)
    position: list[int] = Field(default_factory=list, max_length=MAX_LINEAGE)
    prefixes: list[str] = Field(default_factory=list, max_length=MAX_LINEAGE)
    handoff: Handoff | None = None
    forwarded_from: list[Name] = Field(default_factory=list, max_length=MAX_NODES)
    background: str | None = None  # the background entry this run belongs to
    # The last stage of a TeamRun ends the TeamRun too (no task of its own for that).
    finish: GroupPayload | None = None
    route: Route = Field(default_factory=Route)
    tenant: str | None = Field(None, min_length=1, max_length=128)
    # A Team/TeamRun member: when (seconds since the epoch) its tree's timeout runs out. A
    # TeamRun's stages share its timeout; each would otherwise get all of it.
    deadline: float | None = None
    queued_at: float | None = None  # when its caller (or its tree's canvas) sent it
    # Where its outcome goes once it ended (a root run: a member's goes to its Team).
    deliver: list[DeliverTarget] = Field(default_factory=list, max_length=MAX_TARGETS)

    @property
    def task_id(self) -> str:
        """The id of the task that carries this run: the run's own, except for the last stage
        of a TeamRun, whose task ends the TeamRun too and so carries the TeamRun's id (its
        Celery result is the TeamRun's)."""
        return self.finish.run_id if self.finish is not None else self.run_id

    def time_left(self, now: float) -> float:
        """The seconds this run may take from ``now``: its timeout, or less near its tree's
        deadline (0 once past it)."""
        if self.deadline is None:
            return self.timeout
        return max(min(self.timeout, self.deadline - now), 0.0)

    @model_validator(mode="after")
    def _consistent(self) -> RunPayload:
        if len(self.lineage) != len(self.position):
            raise ValueError("lineage and position must have the same length")
        return self

    def summary(self) -> dict[str, Any]:
        """Short, secret-free description for Flower and logs."""
        return {
            "agent": self.agent.name,
            "model": self.agent.model,
            "prompt": preview(self.prompt),
            "run_id": self.run_id,
        }
