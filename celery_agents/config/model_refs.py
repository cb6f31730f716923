"""Model strings (``provider:name``): which providers exist, and what to say when one is wrong.

Pure: the facade checks a model string before anything is queued, and ``config`` imports no
pydantic-ai (ARCHITECTURE.md §3), so the providers pydantic-ai knows are a constant here,
pinned to its own table by a test (``tests/test_model_refs.py``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# The prefixes pydantic-ai's ``infer_model`` builds a chat model for (pydantic-ai-slim 2.68).
PYDANTIC_AI_PROVIDERS = frozenset(
    {
        "alibaba",
        "anthropic",
        "azure",
        "azure-responses",
        "bedrock",
        "bedrock-mantle",
        "cerebras",
        "cohere",
        "crusoe",
        "deepseek",
        "fireworks",
        "github",
        "github-copilot",
        "google",
        "google-cloud",
        "google-decisions",
        "groq",
        "heroku",
        "huggingface",
        "litellm",
        "meta",
        "mistral",
        "moonshotai",
        "nebius",
        "ollama",
        "openai",
        "openai-chat",
        "openai-chatgpt",
        "openai-codex",
        "openai-decisions",
        "openai-responses",
        "openrouter",
        "ovhcloud",
        "sambanova",
        "snowflake",
        "system-one",
        "together",
        "typesafe",
        "vercel",
        "vllm",
        "xai",
        "zai",
    }
)
# Prefixes pydantic-ai 1.x took and 2.x renamed; our model strings are stable (§10), so they
# keep working under their new names.
RENAMED_PROVIDERS = {"google-gla": "google", "google-vertex": "google-cloud"}
# Ours: the embedded llama.cpp model and the offline test models.
OWN_PROVIDERS = frozenset({"local", "test"})
BUILTIN_PROVIDERS = PYDANTIC_AI_PROVIDERS | RENAMED_PROVIDERS.keys() | OWN_PROVIDERS
# pydantic-ai's Gateway routes ``gateway/<provider>:<model>`` to an upstream provider.
GATEWAY = "gateway/"

# A model family's usual provider, by the start of its name, for suggestions only.
_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), provider)
    for pattern, provider in (
        (r"(amazon|anthropic|meta|cohere|mistral|deepseek|us|eu|apac|global)\.", "bedrock"),
        (r"gpt|o\d|chatgpt|text-embedding|dall-e|davinci|whisper|tts-", "openai"),
        (r"claude", "anthropic"),
        (r"gemini|gemma", "google"),
        (r"mistral|mixtral|codestral|magistral|devstral|ministral|pixtral", "mistral"),
        (r"command", "cohere"),
        (r"grok", "xai"),
        (r"deepseek", "deepseek"),
        (r"kimi|moonshot", "moonshotai"),
        (r"glm", "zai"),
        (r"smollm", "local"),
    )
)


def is_builtin_provider(provider: str) -> bool:
    """A provider every deployment knows: pydantic-ai's (renamed ones too, and through its
    Gateway), ``local`` and ``test``."""
    if provider.startswith(GATEWAY):
        provider = provider.removeprefix(GATEWAY)
        return RENAMED_PROVIDERS.get(provider, provider) in PYDANTIC_AI_PROVIDERS
    return provider in BUILTIN_PROVIDERS


def parse_model_ref(model: str) -> tuple[str, str]:
    """``"provider:name"`` -> ``(provider, name)``.

    A string without a provider is a ``ValueError`` that names the fix
    (``model 'gpt-4o' has no provider: did you mean 'openai:gpt-4o'?``).
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model must be a non-empty 'provider:name' string")
    provider, sep, name = model.partition(":")
    if not sep:
        raise ValueError(f"model {model!r} has no provider: {_fix_for(model)}")
    if not provider or not name:
        raise ValueError(f"model {model!r} must look like 'provider:name'")
    return provider, name


def unknown_provider(model: str, provider: str, declared: Iterable[str]) -> str:
    """What to tell a user whose ``model`` names a ``provider`` nobody knows; ``declared``
    are the manifest's providers."""
    mine = sorted(set(declared) - BUILTIN_PROVIDERS)
    name = model.partition(":")[2]
    candidates = [*mine, *sorted(BUILTIN_PROVIDERS)]
    close = difflib.get_close_matches(provider, candidates, n=1, cutoff=0.75)
    guess = close[0] if close else _family(name)
    if guess is not None:
        return f"unknown provider {provider!r} in model {model!r}: did you mean '{guess}:{name}'?"
    known = ", ".join([*mine, *sorted(OWN_PROVIDERS)])
    theirs = ", ".join(sorted(PYDANTIC_AI_PROVIDERS | RENAMED_PROVIDERS.keys()))
    return (
        f"unknown provider {provider!r} in model {model!r} (known: {known}; pydantic-ai's {theirs})"
    )


def _family(name: str) -> str | None:
    lowered = name.lower()
    for pattern, provider in _FAMILIES:
        if pattern.match(lowered):
            return provider
    return None


def _fix_for(name: str) -> str:
    if name == "test":
        return "did you mean 'test:echo'?"
    provider = _family(name)
    if provider is not None:
        return f"did you mean '{provider}:{name}'?"
    return f"write it as 'provider:{name}', e.g. 'openai:{name}' or one of the manifest's providers"
