"""The exception tree. Every error that crosses the broker is JSON and round-trips.

    CeleryAgentsError
    ├── UserError                  misuse or bad configuration; raised before anything is queued
    │   ├── ConfigError            bad settings or manifest (names the file and the field)
    │   ├── UnknownAgentError
    │   ├── UnknownProviderError
    │   ├── UnknownToolError
    │   └── InvalidPayloadError    a task message that does not match the payload schema
    └── RunError                   a run that was queued and then failed
        ├── ModelError             the model provider failed (after retries) or answered garbage
        ├── ToolError
        │   └── ToolInterrupted    a tool call cut short by a worker's death, not safe to rerun
        ├── OutputValidationError  structured output did not validate (carries the raw text)
        ├── StageError             a TeamRun stage failed (names the stage)
        ├── TeamRunError           every member of a Team failed
        ├── BudgetExceeded         a tenant's daily token budget is spent
        ├── RunCancelled
        ├── RunTimeout
        └── StreamGap              a stream lost events on the way (the final message is whole)

Errors carry a message and JSON-able ``details``; ``to_json``/``error_from_json`` move them
across the broker and pub/sub, and they survive pickling too.
"""

from __future__ import annotations

from typing import Any, ClassVar

_REGISTRY: dict[str, type[CeleryAgentsError]] = {}


class CeleryAgentsError(Exception):
    """Root of every error this package raises."""

    default_message: ClassVar[str] = "celery-agents error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = details
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self).__name__, self.message, self.details))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, CeleryAgentsError)
            and (other.message, other.details) == (self.message, self.details)
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.message))

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"type": ..., "message": ..., "details": {...}}``."""
        return {"type": type(self).__name__, "message": self.message, "details": self.details}


_REGISTRY[CeleryAgentsError.__name__] = CeleryAgentsError


def _rebuild(type_name: str, message: str, details: dict[str, Any]) -> CeleryAgentsError:
    return _REGISTRY.get(type_name, RunError)(message, **details)


def error_from_json(data: dict[str, Any]) -> CeleryAgentsError:
    """Rebuild an error from its wire form; an unknown type becomes a ``RunError``."""
    type_name = str(data.get("type", "RunError"))
    message = str(data.get("message", ""))
    details = dict(data.get("details") or {})
    if type_name not in _REGISTRY:
        details.setdefault("original_type", type_name)
    return _rebuild(type_name, message, details)


class UserError(CeleryAgentsError):
    """The caller did something wrong; nothing was queued."""


class ConfigError(UserError):
    """Bad settings or manifest; the message names the file and the field."""


class UnknownAgentError(UserError):
    pass


class UnknownProviderError(UserError):
    pass


class UnknownToolError(UserError):
    pass


class InvalidPayloadError(UserError):
    """A task message that does not match the payload schema; refused before anything runs."""


class RunError(CeleryAgentsError):
    """A queued run failed."""


class ModelError(RunError):
    """The model provider failed after retries, or answered something unusable."""


class ToolError(RunError):
    pass


class ToolInterrupted(ToolError):
    """A tool call that started on a worker that died before it ended: its effect may have
    happened, so a tool not declared ``retry_safe`` is not run again."""


class OutputValidationError(RunError):
    pass


class StageError(RunError):
    pass


class TeamRunError(RunError):
    pass


class BudgetExceeded(RunError):
    """A tenant's daily token budget is spent; refused before any model call."""


class RunCancelled(RunError):
    pass


class RunTimeout(RunError):
    pass


class ClientClosed(RunError):
    """The facade was shut down or configured again while a caller awaited a run: like a
    ``RunTimeout``, the wait ended, not the run (``RunHandle.attach(run_id)`` follows it)."""


class StreamGap(RunError):
    """Events of a run's stream were lost on the way (Redis lost the run's keys, or its replay
    log no longer held them): the streamed text is not the whole answer. The run's final
    message is whole: ``result`` (also ``get_message()`` of the stream)."""

    def __init__(self, message: str | None = None, *, result: Any = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.result = result


def all_error_types() -> list[type[CeleryAgentsError]]:
    """Every registered error class (used by the round-trip test)."""
    return list(_REGISTRY.values())
