"""Structured output: a pydantic type as it crosses the broker, and validation of model output.

``OutputSpec`` carries the type's JSON Schema and, when the class can be imported, its import
path. A worker that can import the class validates with it (custom validators included); one
that cannot (a class defined in a notebook) validates against the schema. The client always
turns the result into an instance of its own class.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, OutputValidationError, UserError
from .validation import field_errors

# A fenced block, ```json or ``` (any case), anywhere in the answer: models often say a word
# before or after it.
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


class OutputSpec(BaseModel):
    """What a run must answer with: a JSON Schema, and the class's import path if it has one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    json_schema: dict[str, Any]
    import_path: str | None = None

    @classmethod
    def of(cls, output_type: type[BaseModel] | str | OutputSpec) -> OutputSpec:
        """The spec of a pydantic model class, or of its ``"module:Class"`` import path."""
        if isinstance(output_type, OutputSpec):
            return output_type
        model = import_type(output_type) if isinstance(output_type, str) else output_type
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise UserError(f"an output type must be a pydantic model class, got {model!r}")
        return cls(
            name=re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64],
            json_schema=model.model_json_schema(),
            import_path=import_path_of(model),
        )

    def response_format(self) -> dict[str, Any]:
        """The OpenAI ``response_format`` asking for this schema."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.json_schema, "strict": False},
        }

    def tool(self) -> dict[str, Any]:
        """The fallback for providers without ``response_format``: a tool to answer through."""
        return {
            "type": "function",
            "function": {
                "name": FINAL_RESULT_TOOL,
                "description": f"Give the final answer as {self.name}.",
                "parameters": self.json_schema,
            },
        }

    def validate_text(self, text: str) -> Any:
        """Parse and validate the model's answer; ``OutputValidationError`` says why not.

        Returns the validated data as JSON-able values.
        """
        try:
            data = _json_in(text)
        except json.JSONDecodeError as exc:
            raise self._invalid(f"the answer is not JSON: {exc}", text) from None
        model = self.importable()
        if model is not None:
            try:
                return model.model_validate(data).model_dump(mode="json")
            except ValidationError as exc:
                raise self._invalid(field_errors(exc), text) from None
        errors = sorted(
            jsonschema.Draft202012Validator(self.json_schema).iter_errors(data),
            key=lambda e: list(e.absolute_path),
        )
        if errors:
            detail = "; ".join(
                f"{'.'.join(map(str, e.absolute_path)) or 'answer'}: {e.message}" for e in errors
            )
            raise self._invalid(detail, text)
        return data

    def importable(self) -> type[BaseModel] | None:
        """The class itself, if this process can import it."""
        if self.import_path is None:
            return None
        try:
            return import_type(self.import_path)
        except (ConfigError, UserError):
            return None

    def _invalid(self, detail: str, text: str) -> OutputValidationError:
        return OutputValidationError(
            f"the answer does not match {self.name}: {detail}", output_type=self.name, raw=text
        )


FINAL_RESULT_TOOL = "final_result"


def import_type(path: str) -> type[BaseModel]:
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise UserError(f"output type {path!r} must look like 'module:Class'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import output type {path!r}: {exc}") from None
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise UserError(f"output type {path!r} is not a pydantic model class")
    return target


def import_path_of(model: type[BaseModel]) -> str | None:
    """``module:Qualname`` if another process could import the class, else None."""
    if model.__module__ == "__main__" or "<locals>" in model.__qualname__:
        return None
    return f"{model.__module__}:{model.__qualname__}"


def _json_in(text: str) -> Any:
    """The answer as JSON: all of it, else its first fenced block."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        match = _FENCE.search(text)
        if match is None:
            raise
        return json.loads(match.group(1))
