"""Pydantic validation errors as one line that names each bad field."""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(exc: ValidationError, *, root: str | None = "value") -> str:
    """``"agents.a.model: Field required; tools: ..."``.

    ``root`` names an error of the whole value (one with no field path); ``None`` gives such an
    error's message alone, for validators whose messages name their own path.
    """
    parts = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or root
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
