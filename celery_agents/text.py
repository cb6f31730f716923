"""Redis replies as text: a value may arrive as ``bytes`` or ``str`` (or a number)."""

from __future__ import annotations


def as_text(value: object) -> str:
    """``value`` as ``str``, decoding ``bytes`` as UTF-8."""
    return value.decode() if isinstance(value, bytes) else str(value)
