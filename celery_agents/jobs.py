"""``Job``: a predefined task for an agent, with a required output type and its own tools.

job = Job(name="triage", description="Triage an incident", prompt="Triage: {incident}",
          required_return_type=Finding, tools=["fetch_logs"])
msg = await agent.run_job(job, values={"incident": "API 500s since 09:12"})
finding: Finding = msg.content
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from .errors import UserError
from .output import OutputSpec


class Job(BaseModel):
    """A job; its JSON form (``model_dump_json``) carries the output type as an ``OutputSpec``."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    prompt: str = Field(min_length=1)
    required_return_type: type[BaseModel] | str | OutputSpec | None = None
    tools: list[str] = Field(default_factory=list)
    requires_vision: bool = False
    min_context_tokens: int | None = Field(None, gt=0)

    @field_validator("required_return_type", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        return OutputSpec.model_validate(value) if isinstance(value, dict) else value

    @field_serializer("required_return_type")
    def _to_json(self, value: type[BaseModel] | str | OutputSpec | None) -> dict[str, Any] | None:
        return None if value is None else OutputSpec.of(value).model_dump(mode="json")

    def output_spec(self) -> OutputSpec | None:
        return (
            None if self.required_return_type is None else OutputSpec.of(self.required_return_type)
        )

    def output_class(self) -> type[BaseModel] | None:
        """The class results are turned into on the client (None for a bare schema)."""
        kind = self.required_return_type
        if isinstance(kind, type):
            return kind
        if isinstance(kind, str):
            from .output import import_type

            return import_type(kind)
        return None

    def render(self, values: Mapping[str, Any] | None = None) -> str:
        """The prompt with its ``{placeholders}`` filled (``{{`` and ``}}`` are literal braces,
        always); a missing value, or a prompt that is no template, is a ``UserError``."""
        given = dict(values or {})
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(self.prompt)]
            roots = {_root(name) for name in names if name is not None}
            missing = sorted(roots - set(given))
            if missing:
                hint = (
                    ""
                    if all(r.isidentifier() for r in missing)
                    else " (a literal brace is written {{ or }}, as in a JSON example)"
                )
                wanted = ", ".join(r or "{}" for r in missing)
                raise UserError(
                    f"job {self.name!r} needs values for: {wanted}{hint}", job=self.name
                )
            return self.prompt.format_map(given)
        except (ValueError, LookupError, AttributeError) as exc:  # "{", "{a.b}" on a str...
            raise UserError(
                f"job {self.name!r}: its prompt cannot be filled: {exc} (a literal brace is "
                "written {{ or }})",
                job=self.name,
            ) from None


def _root(field: str) -> str:
    """The value a replacement field names: ``incident`` of ``{incident.title}`` or
    ``{incident[0]}``; "" for ``{}``."""
    return field.split(".", 1)[0].split("[", 1)[0]
