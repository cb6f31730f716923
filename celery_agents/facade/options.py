"""``RunOptions``: the keyword options of every run* method of Agent, Team and TeamRun.

    await agent.run("analyze", store_history=False, tenant="acme", idempotency_key="daily")

``RunKwargs`` spells the same options for type checkers (``**options: Unpack[RunKwargs]``);
``RunOptions.of`` validates them into the one frozen model the run* core reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..config.deliver import DeliverTarget, FileTarget, WebhookTarget, parse_deliver
from ..errors import UserError
from ..tasks.wire import DEFAULT_PRIORITY, Route
from ..validation import field_errors


class RunKwargs(TypedDict, total=False):
    """The keyword options a run* method takes (all optional); see ``RunOptions``."""

    store_history: bool
    model: str | None
    conversation_id: str | None
    timeout: float | None
    tenant: str | None
    queue: str | None
    priority: int
    idempotency_key: str | None
    deliver: Sequence[Mapping[str, object] | WebhookTarget | FileTarget] | None


class RunOptions(BaseModel):
    """How to run: the same options, with the same meaning, for an Agent, a Team, a TeamRun.

    - ``store_history``: append the run's messages to the conversation (False: read only).
    - ``model``: a per-call model, instead of each agent's own.
    - ``conversation_id``: the conversation to continue, instead of each agent's own.
    - ``timeout``: seconds the run may take (default: ``Settings.run_timeout``).
    - ``tenant``: whose budget and run caps the run counts against.
    - ``queue`` / ``priority``: where the run's tasks go; priority 0 (bulk) to 9 (most urgent).
    - ``idempotency_key``: a second call with the same key (from any process, while the first
      run's result is kept) follows the first run instead of starting another.
    - ``deliver``: where the run's outcome goes once it ended, e.g. ``[{"webhook": URL,
      "secret_env": "HOOK_SECRET"}, {"file": "out.jsonl"}]`` (``config/deliver.py``); for
      ``run_in_background``, each run's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    store_history: bool = True
    model: str | None = None
    conversation_id: str | None = None
    timeout: float | None = None
    tenant: str | None = None
    queue: str | None = None
    priority: int = DEFAULT_PRIORITY
    idempotency_key: str | None = None
    # Spelled as callers pass it; held as the parsed targets (``targets``).
    deliver: Sequence[Mapping[str, object] | WebhookTarget | FileTarget] | None = None

    @field_validator("deliver", mode="before")
    @classmethod
    def _targets(cls, value: object) -> tuple[DeliverTarget, ...]:
        return tuple(parse_deliver(value))  # type: ignore[arg-type]  # it says what is wrong

    @property
    def targets(self) -> list[DeliverTarget]:
        """Where the run's outcome goes (parsed: each a ``WebhookTarget`` or ``FileTarget``)."""
        return parse_deliver(self.deliver)

    @classmethod
    def of(cls, options: Mapping[str, object]) -> RunOptions:
        """The options a caller passed, validated (``UserError`` naming a bad one)."""
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            raise UserError(f"run options: {field_errors(exc)}") from None

    def route(self) -> Route:
        try:
            return Route(queue=self.queue, priority=self.priority)
        except ValidationError as exc:
            raise UserError(f"routing: {field_errors(exc)}") from None


def join_prompts(prompts: tuple[str, ...]) -> str:
    """The prompts of one run, as one text (refusing none, non-str and empty ones)."""
    if not prompts:
        raise UserError("a run needs a prompt")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise UserError(f"prompts must be str, got {type(prompt).__name__}")
    text = "\n\n".join(prompts)
    if not text.strip():
        raise UserError("the prompt is empty")
    return text
