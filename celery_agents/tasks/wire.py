"""Helpers shared by the task payload schemas: strict parsing and short summaries."""

from __future__ import annotations

from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InvalidPayloadError
from ..validation import field_errors

M = TypeVar("M", bound=BaseModel)
PROMPT_PREVIEW = 60


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
