"""The run store's records of runs that end on this worker (``store/entry.py``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..errors import CeleryAgentsError
from ..messages import ChatMessage, Usage
from ..runstate import final_state
from ..store.entry import RunEntry
from ..tasks.payload import RunPayload
from ..tasks.tree import Ancestor, GroupPayload
from ..text import as_text


def parent_of(lineage: list[Ancestor]) -> str | None:
    """The Team/TeamRun a run is a member of (a background entry above it is not one)."""
    return next((a.run_id for a in reversed(lineage) if not a.results_only), None)


def agent_entry(
    payload: RunPayload,
    *,
    prompt: str,
    attempt: int,
    worker: str,
    queued_at: float | None,
    started_at: float | None,
    usage: Usage,
    requests: int,
    cost: float | None,
    message: ChatMessage | None = None,
    error: CeleryAgentsError | None = None,
) -> RunEntry:
    return RunEntry(
        run_id=payload.run_id,
        parent_id=parent_of(payload.lineage),
        kind="agent",
        name=payload.agent.name,
        model=payload.agent.model,
        tenant=payload.tenant,
        schedule=payload.background,
        conversation_id=payload.conversation_id,
        in_history=payload.store_history and message is not None,
        state=final_state(error),
        attempt=attempt,
        worker=worker,
        error_type=type(error).__name__ if error is not None else None,
        error_message=error.message if error is not None else None,
        queued_at=queued_at,
        started_at=started_at,
        ended_at=time.time(),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        requests=requests,
        cost=cost,
        prompt=prompt,
        message=message,
    )


def never_ran(payload: RunPayload, error: CeleryAgentsError, *, worker: str) -> RunEntry:
    """The record of a run that ended before it ran (it waited for its tenant's slot for
    longer than its timeout)."""
    return agent_entry(
        payload,
        prompt=payload.prompt,
        attempt=0,
        worker=worker,
        queued_at=None,
        started_at=None,
        usage=Usage(),
        requests=0,
        cost=None,
        error=error,
    )


def group_entry(
    group: GroupPayload,
    facts: GroupFacts,
    *,
    worker: str,
    message: ChatMessage | None = None,
    error: CeleryAgentsError | None = None,
) -> RunEntry:
    """A Team's or TeamRun's record, from what Redis knows of it as it ends."""
    state = facts.state
    return RunEntry(
        run_id=group.run_id,
        parent_id=parent_of(group.lineage),
        kind="team" if group.kind == "team" else "teamrun",
        name=group.name,
        tenant=group.tenant,
        schedule=group.background,
        state=final_state(error),
        attempt=int(state.get("attempt") or 1),
        worker=state.get("worker") or worker,
        error_type=type(error).__name__ if error is not None else None,
        error_message=error.message if error is not None else None,
        queued_at=_float(state.get("queued_at")) or facts.queued_at,
        started_at=_float(state.get("running_at")),
        ended_at=time.time(),
        input_tokens=facts.usage.input_tokens,
        output_tokens=facts.usage.output_tokens,
        requests=facts.requests,
        cost=facts.cost,
        prompt=facts.prompt,
        message=message,
    )


@dataclass(frozen=True)
class GroupFacts:
    """What Redis holds of a Team/TeamRun as it ends: its run-state hash (times, worker,
    attempt; a nested group has none), its members' rolled-up usage, and the root's prompt."""

    state: dict[str, str]
    usage: Usage
    cost: float | None
    requests: int
    prompt: str | None
    queued_at: float | None  # the root's, from its payload

    @classmethod
    def parse(cls, state: dict[Any, Any], usage: dict[Any, Any], tree: Any) -> GroupFacts:
        totals = {as_text(k): as_text(v) for k, v in usage.items()}
        payload = json.loads(tree) if tree else {}
        return cls(
            state={as_text(k): as_text(v) for k, v in state.items()},
            usage=Usage(
                input_tokens=int(totals.get("input_tokens", 0)),
                output_tokens=int(totals.get("output_tokens", 0)),
            ),
            cost=round(float(totals["cost"]), 10) if "cost" in totals else None,
            requests=int(totals.get("requests", 0)),
            prompt=payload.get("prompt"),
            queued_at=payload.get("queued_at"),
        )


def _float(value: str | None) -> float | None:
    return float(value) if value else None
