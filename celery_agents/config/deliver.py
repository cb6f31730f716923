"""``deliver`` targets: where a run's outcome goes when it ends (a webhook or a JSON-lines file).

Pure configuration (no I/O): the run's options and the manifest validate targets with
``parse_deliver`` before anything is queued. A webhook's secret is never part of a target: the
target names the environment variable (``secret_env``) that holds it, and the process that
delivers reads it at send time, so secrets stay out of Redis, task messages and logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import UserError

Payload = Literal["thin", "full"]
MAX_TARGETS = 8  # per run
ONE_OF = "give exactly one of 'webhook' or 'file'"
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*", re.IGNORECASE)


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # thin: the outcome and its usage; full: the prompt and the answer too.
    payload: Payload = "thin"


class WebhookTarget(_Target):
    """POST the outcome to ``webhook``, signed per Standard Webhooks when ``secret_env`` names
    the variable holding the secret (``whsec_`` + base64)."""

    webhook: str
    secret_env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        # Said plainly rather than as "extra inputs are not permitted": the fix is not obvious.
        if isinstance(data, Mapping) and "secret" in data:
            raise ValueError(
                "secret: a secret may not be given inline; put it in an environment variable "
                "of the workers and name that variable with secret_env"
            )
        return data

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(f"must name an environment variable (like HOOK_SECRET), not {value!r}")
        return value


class FileTarget(_Target):
    """Append the outcome as one JSON line to ``file`` (``~`` expanded, directories made)."""

    file: str

    @field_validator("file")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a path")
        return value


def _kind(raw: Any) -> str | None:
    """Which target ``raw`` is, by the one key it has (None: neither or both)."""
    if isinstance(raw, WebhookTarget):
        return "webhook"
    if isinstance(raw, FileTarget):
        return "file"
    if isinstance(raw, Mapping):
        present = [key for key in ("webhook", "file") if key in raw]
        if len(present) == 1:
            return present[0]
    return None


DeliverTarget = Annotated[
    Annotated[WebhookTarget, Tag("webhook")] | Annotated[FileTarget, Tag("file")],
    Discriminator(_kind, custom_error_type="deliver_target", custom_error_message=ONE_OF),
]

_TARGET: TypeAdapter[DeliverTarget] = TypeAdapter(DeliverTarget)


def parse_target(raw: Mapping[str, Any] | DeliverTarget | str | bytes) -> DeliverTarget:
    """One target from a mapping, a model or its JSON (``ValidationError`` if bad)."""
    if isinstance(raw, str | bytes):
        return _TARGET.validate_json(raw)
    return _TARGET.validate_python(raw)


def parse_deliver(
    raw: Sequence[Mapping[str, Any] | DeliverTarget] | None,
) -> list[DeliverTarget]:
    """The targets of a ``deliver`` option; a ``UserError`` names the first bad one
    (``deliver[1]: webhook: ...``)."""
    if raw is None:
        return []
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise UserError("deliver: give a list of targets ({webhook: URL} or {file: PATH})")
    if len(raw) > MAX_TARGETS:
        raise UserError(f"deliver: at most {MAX_TARGETS} targets per run, got {len(raw)}")
    targets: list[DeliverTarget] = []
    for n, item in enumerate(raw):
        try:
            targets.append(_TARGET.validate_python(item))
        except ValidationError as exc:
            raise UserError(f"deliver[{n}]: {_problems(exc)}") from None
    return targets


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        # The first part of a location is the union's tag ("webhook"/"file"): not a field.
        where = ".".join(str(part) for part in err["loc"][1:])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
