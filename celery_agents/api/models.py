"""The bodies the runs API takes and gives (their JSON Schemas are the OpenAPI document's)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..messages import ChatMessage
from ..runstate import RunRecord
from ..store.queries import StoredRun
from .errors import ErrorBody

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def utc(when: dt.datetime | None) -> dt.datetime | None:
    """A query's time: one without a zone is UTC."""
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when


class RunRequest(BaseModel):
    """``{"agent": NAME, "prompt": TEXT, ...options}``: NAME is an agent or a team of the
    server's manifest. The run counts against the key's tenant."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=200, description="An agent or a team.")
    prompt: str = Field(min_length=1, max_length=1_000_000, pattern=r"\S")
    model: str | None = Field(None, min_length=1, max_length=256, description="e.g. test:echo")
    conversation_id: str | None = Field(None, min_length=1, max_length=128)
    store_history: bool = True
    timeout: float | None = Field(None, gt=0, le=86_400, description="Seconds the run may take.")
    priority: int = Field(5, ge=0, le=9, description="0 (bulk) to 9 (most urgent).")
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The same key again (same tenant, while the result is kept) answers with "
        "the first run instead of starting another.",
    )
    tenant: str | None = Field(
        None, min_length=1, max_length=128, description="Admin keys only: run for this tenant."
    )

    def options(self, tenant: str) -> dict[str, Any]:
        """The facade's run options (``RunOptions``) for a run of ``tenant``."""
        chosen = self.model_dump(exclude={"agent", "prompt", "tenant"}, exclude_none=True)
        if "idempotency_key" in chosen:  # one tenant's key never finds another's run
            chosen["idempotency_key"] = f"tenant:{tenant}:{chosen['idempotency_key']}"
        return {**chosen, "tenant": tenant}


class RunAnswer(BaseModel):
    """A run as ``POST /v1/runs`` answers it: ``result`` once it succeeded (with
    ``?wait=true``), ``error`` once it failed."""

    run_id: str
    status: str
    result: ChatMessage | None = None
    error: ErrorBody | None = None


class RunView(RunAnswer):
    """A run's record: from Redis while it runs (and for ``result_ttl`` after), from the run
    store after that. Usage fields are there once it ended."""

    name: str | None = None
    kind: str | None = None
    tenant: str | None = None
    parent_id: str | None = None
    schedule: str | None = None
    model: str | None = None
    attempt: int = 0
    worker: str | None = None
    queued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    requests: int | None = None
    cost: float | None = None
    prompt: str | None = None

    @classmethod
    def of_stored(cls, stored: StoredRun) -> RunView:
        error = None
        if stored.state != "succeeded":
            error = ErrorBody(
                type=stored.error_type or "RunError", message=stored.error_message or stored.state
            )
        return cls(
            **stored.model_dump(exclude={"message", "state", "conversation_id", "in_history"}),
            status=stored.state,
            result=stored.message,
            error=error,
        )

    @classmethod
    def of_record(cls, record: RunRecord) -> RunView:
        def at(name: str) -> dt.datetime | None:
            t = record.times.get(name)
            return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)

        return cls(
            run_id=record.run_id,
            status=record.state,
            name=record.name,
            tenant=record.tenant,
            attempt=record.attempt,
            worker=record.worker,
            queued_at=at("queued"),
            started_at=at("running"),
            ended_at=at(record.state) if record.state in TERMINAL else None,
        )


class CancelAnswer(BaseModel):
    run_id: str
    status: str = Field(description="What the run was when the cancel was sent.")
