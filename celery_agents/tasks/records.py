"""What a member run hands to its chord body or next chain stage (JSON, never an exception)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ..errors import CeleryAgentsError, RunError, error_from_json
from ..messages import ChatMessage


class MemberRecord(BaseModel):
    """``ok`` with the member's message, ``failed`` with its error, or ``skipped`` (an earlier
    TeamRun stage failed: its failure is passed along unchanged to the end of the chain)."""

    status: Literal["ok", "failed", "skipped"]
    name: str
    run_id: str
    # Where in the tree the record was made (for a skip: where the failure happened).
    position: list[int] = []
    message: ChatMessage | None = None
    error: dict[str, Any] | None = None

    def failed_inside(self, position: list[int]) -> bool:
        """True if the failure this record carries happened at or below ``position``."""
        return self.position[: len(position)] == position

    @classmethod
    def parse(cls, data: Any, *, name: str = "?") -> MemberRecord:
        """A record from a task result; anything else counts as that member's failure."""
        try:
            return cls.model_validate(data)
        except ValueError:
            error = RunError(f"member {name!r} returned an unreadable result")
            return cls(status="failed", name=name, run_id="", error=error.to_json())

    def exception(self) -> CeleryAgentsError:
        return error_from_json(self.error or {"type": "RunError", "message": "unknown failure"})

    def skipped(self) -> MemberRecord:
        return self.model_copy(update={"status": "skipped"})

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
