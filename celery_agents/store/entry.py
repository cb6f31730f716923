"""``RunEntry``: what the store keeps of one ended run (an agent run, a Team, a TeamRun)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..messages import ChatMessage

RunKind = Literal["agent", "team", "teamrun"]
# A schedule's fire skipped for its budget is recorded too, as a run that never ran.
EndState = Literal["succeeded", "failed", "cancelled", "timed_out", "skipped"]


class RunEntry(BaseModel):
    """One ended run. Times are epoch seconds; ``prompt`` and ``message`` are left out when
    the store keeps metadata only (``CELERY_AGENTS_STORE_CONTENT=false``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: str
    parent_id: str | None = None  # the Team/TeamRun the run is a member of
    kind: RunKind = "agent"
    name: str
    model: str | None = None
    tenant: str | None = None
    schedule: str | None = None  # the background entry or manifest schedule that fired it
    conversation_id: str | None = None
    in_history: bool = False  # its prompt and answer were appended to the conversation
    state: EndState
    attempt: int = 1
    worker: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost: float | None = None
    prompt: str | None = None
    message: ChatMessage | None = None

    def without_content(self) -> RunEntry:
        return self.model_copy(update={"prompt": None, "message": None})
