"""Turning a run's validated JSON answer into instances of the caller's own output class."""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from ..errors import OutputValidationError
from ..messages import ChatMessage
from ..validation import field_errors


def typed(message: ChatMessage, output_class: type[BaseModel] | None) -> ChatMessage:
    """``message`` with its content as ``output_class`` instances (a Team's: one per member)."""
    if output_class is None:
        return message
    if message.associated_messages and isinstance(message.content, list):
        members = [typed(m, output_class) for m in message.associated_messages]
        return message.model_copy(
            update={"content": [m.content for m in members], "associated_messages": members}
        )
    try:
        content = output_class.model_validate(message.content)
    except ValidationError as exc:
        raise OutputValidationError(
            f"{message.name or 'the run'}: the answer does not match {output_class.__name__}: "
            f"{field_errors(exc)}",
            output_type=output_class.__name__,
            raw=json.dumps(message.content, default=str),
        ) from None
    return message.model_copy(update={"content": content})
