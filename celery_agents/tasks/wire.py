"""Helpers shared by the task payload schemas: strict parsing and short summaries."""

from __future__ import annotations

from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

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


def preview(prompt: str) -> str:
    """The start of a prompt, for Flower and logs (never the whole prompt)."""
    return prompt if len(prompt) <= PROMPT_PREVIEW else prompt[:PROMPT_PREVIEW] + "…"
