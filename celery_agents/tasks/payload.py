"""``RunPayload``: the JSON a run's task message carries. Validated before anything runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config.manifest import AgentSpec
from ..errors import InvalidPayloadError
from ..validation import field_errors

PROMPT_PREVIEW = 60


class RunPayload(BaseModel):
    """One agent run. Holds no secrets: providers' keys are read on the workers."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    run_id: str = Field(min_length=1, max_length=64)
    agent: AgentSpec
    prompt: str = Field(min_length=1)
    conversation_id: str = Field(min_length=1, max_length=128)
    store_history: bool = True
    timeout: float = Field(gt=0)

    @classmethod
    def parse(cls, data: Any) -> RunPayload:
        """Validate a task message's payload; an ``InvalidPayloadError`` names the bad fields."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            fields = field_errors(exc, root="payload")
            raise InvalidPayloadError(f"invalid run payload: {fields}") from None

    def summary(self) -> dict[str, Any]:
        """Short, secret-free description for Flower and logs (never the whole prompt)."""
        prompt = (
            self.prompt
            if len(self.prompt) <= PROMPT_PREVIEW
            else self.prompt[:PROMPT_PREVIEW] + "…"
        )
        return {
            "agent": self.agent.name,
            "model": self.agent.model,
            "prompt": prompt,
            "run_id": self.run_id,
        }
