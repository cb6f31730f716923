"""Output types the test worker can import (so it validates with the class itself)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class Finding(BaseModel):
    severity: Literal["low", "medium", "high"]
    summary: str

    @field_validator("summary")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the summary is blank")
        return value


class Verdict(BaseModel):
    """A shape small enough for the embedded SmolLM2 to fill under a JSON-schema grammar (the
    grammar also bounds the string, so a small model cannot ramble past the token cap)."""

    healthy: bool
    reason: str = Field(max_length=80)
