"""Helpers shared by the task payload schemas: strict parsing, size limits, short summaries."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config.settings import Settings
from ..errors import InvalidPayloadError
from ..validation import field_errors

M = TypeVar("M", bound=BaseModel)
PROMPT_PREVIEW = 60

# The routing a worker adds to a Team's member messages (the tree above it) and when it sent
# them. It repeats names the tree already carries, so it does not count against
# ``max_payload_bytes``: a tree that fits yields members that fit. The schemas bound it
# instead (entries and name lengths; a time is one number).
ROUTING_FIELDS = frozenset({"lineage", "position", "forwarded_from", "handoff", "queued_at"})


def parse_payload(model: type[M], data: Any) -> M:
    """Validate a task message's payload; an ``InvalidPayloadError`` names the bad fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = field_errors(exc, root="payload")
        raise InvalidPayloadError(f"invalid {model.__name__} payload: {fields}") from None


class WireModel(BaseModel):
    """A strict model that crosses the broker; ``parse`` is its validating entry point."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate a task message's payload; an ``InvalidPayloadError`` names the bad fields."""
        return parse_payload(cls, data)


@dataclass(frozen=True)
class Limits:
    """How much one run may carry (``Settings.max_prompt_chars`` / ``max_payload_bytes``)."""

    max_prompt_chars: int
    max_payload_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_prompt_chars, settings.max_payload_bytes)


@functools.cache
def process_limits() -> Limits:
    """This process's limits, from its ``CELERY_AGENTS_*`` environment (read once): what a
    worker enforces on every run message it receives."""
    return Limits.of(Settings())


class RunMessage(WireModel):
    """The payload of a task that starts a run (one agent, or a Team/TeamRun tree): its prompt
    and its size are bounded, on the client before sending and on the worker before running."""

    @classmethod
    def parse(cls, data: Any, limits: Limits | None = None) -> Self:
        """Check the limits (before validating: a huge message costs nothing more), then
        validate. ``limits`` defaults to this process's (``process_limits``)."""
        check_limits(data, limits or process_limits())
        return parse_payload(cls, data)

    def check_limits(self, limits: Limits) -> None:
        """Refuse (``InvalidPayloadError``) a payload over ``limits``, before it is sent."""
        check_limits(self.model_dump(mode="json"), limits)


def check_limits(data: Any, limits: Limits) -> None:
    """``InvalidPayloadError`` naming the limit, the actual size and the setting to change."""
    if not isinstance(data, dict):
        return  # not a payload at all: validation says so
    prompt = data.get("prompt")
    if isinstance(prompt, str) and len(prompt) > limits.max_prompt_chars:
        raise _too_large(
            "prompt too long",
            f"{len(prompt):,} characters",
            "max_prompt_chars",
            limits.max_prompt_chars,
            len(prompt),
        )
    size = payload_bytes(data)
    if size > limits.max_payload_bytes:
        raise _too_large(
            "run message too large",
            f"{size:,} bytes of JSON",
            "max_payload_bytes",
            limits.max_payload_bytes,
            size,
        )


def payload_bytes(data: dict[str, Any]) -> int:
    """The size a payload counts against ``max_payload_bytes``: its compact JSON in UTF-8,
    without the routing fields (``ROUTING_FIELDS``)."""
    counted = {key: value for key, value in data.items() if key not in ROUTING_FIELDS}
    try:
        text = json.dumps(counted, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return 0  # not JSON: validation refuses it with a better message
    return len(text.encode("utf-8", errors="surrogatepass"))


def _too_large(
    what: str, actual: str, setting: str, maximum: int, size: int
) -> InvalidPayloadError:
    env = f"CELERY_AGENTS_{setting.upper()}"
    return InvalidPayloadError(
        f"{what}: {actual}, over the limit of {maximum:,} ({setting}; raise it with {env} "
        "on clients and workers alike)",
        limit=setting,
        maximum=maximum,
        actual=size,
        env=env,
    )


DEFAULT_PRIORITY = 5


class Route(BaseModel):
    """Where a run's tasks go: a queue (None: the default) and a priority, 0 (bulk) to 9
    (most urgent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str | None = Field(None, min_length=1, max_length=200)
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=9)

    def options(self, broker_url: str) -> dict[str, Any]:
        """Celery's send options. Kombu's Redis transport serves priority 0 first, RabbitMQ
        serves the highest first: our scale is RabbitMQ's, turned around for Redis."""
        redis_like = broker_url.startswith(("redis://", "rediss://", "unix://"))
        options: dict[str, Any] = {"priority": 9 - self.priority if redis_like else self.priority}
        if self.queue:
            options["queue"] = self.queue
        return options


def preview(prompt: str) -> str:
    """The start of a prompt, for Flower and logs (never the whole prompt)."""
    return prompt if len(prompt) <= PROMPT_PREVIEW else prompt[:PROMPT_PREVIEW] + "…"
