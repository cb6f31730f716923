"""Pydantic validation errors as one line that names each bad field."""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(exc: ValidationError, *, root: str = "value") -> str:
    """``"agents.a.model: Field required; tools: ..."`` (``root`` names a top-level error)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or root}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )
