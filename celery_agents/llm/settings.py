"""Our ``ModelSettings`` (the manifest's and ``Agent(model_settings=)``'s) as pydantic-ai's."""

from __future__ import annotations

from pydantic_ai.settings import ModelSettings as PydanticAISettings

from ..config.manifest import ModelSettings


def as_pydantic_ai(ours: ModelSettings) -> PydanticAISettings:
    """The options that are set, under pydantic-ai's names; ``extra_body`` goes through."""
    settings: PydanticAISettings = {}
    if ours.temperature is not None:
        settings["temperature"] = ours.temperature
    if ours.top_p is not None:
        settings["top_p"] = ours.top_p
    if ours.max_tokens is not None:
        settings["max_tokens"] = ours.max_tokens
    if ours.seed is not None:
        settings["seed"] = ours.seed
    if ours.presence_penalty is not None:
        settings["presence_penalty"] = ours.presence_penalty
    if ours.frequency_penalty is not None:
        settings["frequency_penalty"] = ours.frequency_penalty
    if ours.stop:
        settings["stop_sequences"] = list(ours.stop)
    if ours.extra_body:
        settings["extra_body"] = dict(ours.extra_body)
    return settings
