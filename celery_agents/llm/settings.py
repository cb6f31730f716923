"""Our ``ModelSettings`` (the manifest's and ``Agent(model_settings=)``'s) as pydantic-ai's."""

from __future__ import annotations

from typing import Any, cast

from pydantic_ai.settings import ModelSettings as PydanticAISettings

from ..config.manifest import ModelSettings

_SAME_NAMES = (
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)


def as_pydantic_ai(ours: ModelSettings) -> PydanticAISettings:
    """The options that are set, under pydantic-ai's names; ``extra_body`` goes through."""
    settings: dict[str, Any] = {
        name: getattr(ours, name) for name in _SAME_NAMES if getattr(ours, name) is not None
    }
    if ours.stop:
        settings["stop_sequences"] = list(ours.stop)
    if ours.extra_body:
        settings["extra_body"] = dict(ours.extra_body)
    return cast(PydanticAISettings, settings)
