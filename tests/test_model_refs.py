"""Model strings: every pydantic-ai provider prefix and ours are accepted, a missing or unknown
provider is a UserError that names the fix, and our list of prefixes is pydantic-ai's own."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any, get_args

import pytest
from pydantic_ai import models
from pydantic_ai.providers import infer_provider_class

from celery_agents import Agent, AgentsManifest
from celery_agents.config.model_refs import (
    BUILTIN_PROVIDERS,
    PYDANTIC_AI_PROVIDERS,
    RENAMED_PROVIDERS,
)
from celery_agents.errors import ConfigError, UnknownProviderError, UserError

MANIFEST = AgentsManifest.model_validate({"providers": {"scripted": {"base_url": "http://x/v1"}}})


@pytest.mark.parametrize(
    ("model", "fix"),
    [
        ("gpt-4o", "did you mean 'openai:gpt-4o'?"),
        ("o3-mini", "did you mean 'openai:o3-mini'?"),
        ("claude-sonnet-4-5", "did you mean 'anthropic:claude-sonnet-4-5'?"),
        ("gemini-2.5-flash", "did you mean 'google:gemini-2.5-flash'?"),
        ("mistral-large-latest", "did you mean 'mistral:mistral-large-latest'?"),
        ("anthropic.claude-v2", "did you mean 'bedrock:anthropic.claude-v2'?"),
        ("test", "did you mean 'test:echo'?"),
        ("qwen2.5-7b", "write it as 'provider:qwen2.5-7b', e.g. 'openai:qwen2.5-7b'"),
    ],
)
def test_a_model_without_a_provider_is_a_user_error_that_names_the_fix(
    model: str, fix: str
) -> None:
    with pytest.raises(UserError) as info:
        Agent("analyst", model)

    assert info.value.message.startswith(f"agent 'analyst': model {model!r} has no provider: ")
    assert (
        info.value.message.endswith(fix) or f"{fix} or one of the manifest's" in info.value.message
    )


def test_a_manifest_agent_without_a_provider_names_its_field_and_the_fix() -> None:
    with pytest.raises(ConfigError) as info:
        AgentsManifest.from_text("agents: {a: {model: gpt-4o}}", source="m.yaml")

    assert info.value.message.startswith("m.yaml: ")
    assert info.value.message.endswith(
        "agents.a.model: model 'gpt-4o' has no provider: did you mean 'openai:gpt-4o'?"
    )


@pytest.mark.parametrize(
    "model",
    [
        "openai:gpt-4o",
        "anthropic:claude-sonnet-4-5",
        "google:gemini-2.5-flash",
        "google-gla:gemini-2.5-flash",
        "google-vertex:gemini-2.5-pro",
        "groq:llama-3.3-70b-versatile",
        "mistral:mistral-large-latest",
        "bedrock:global.amazon.nova-2-lite-v1:0",
        "cohere:command-r7b-12-2024",
        "openrouter:openai/gpt-4o",
        "gateway/anthropic:claude-sonnet-4-5",
        "local:smollm2",
        "test:echo",
        "scripted:anything",
    ],
)
def test_every_provider_prefix_is_accepted_by_the_manifest_and_the_agent(model: str) -> None:
    provider, name = MANIFEST.check_model(model)

    assert f"{provider}:{name}" == model
    AgentsManifest.model_validate({**MANIFEST.model_dump(), "agents": {"a": {"model": model}}})
    assert Agent("a", model).model == model


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("opnai:gpt-4o", "did you mean 'openai:gpt-4o'?"),
        ("antropic:claude-x", "did you mean 'anthropic:claude-x'?"),
        ("vlm:qwen2.5-7b", "did you mean 'vllm:qwen2.5-7b'?"),
        ("scriptd:m", "did you mean 'scripted:m'?"),
        ("acme:claude-x", "did you mean 'anthropic:claude-x'?"),
        ("nope:model", "(known: scripted, local, test; pydantic-ai's alibaba, anthropic, "),
    ],
)
def test_an_unknown_provider_is_refused_with_the_closest_fix(model: str, message: str) -> None:
    provider = model.partition(":")[0]

    with pytest.raises(UnknownProviderError) as info:
        MANIFEST.check_model(model)

    assert info.value.message.startswith(f"unknown provider {provider!r} in model {model!r}")
    assert message in info.value.message
    assert info.value.details == {"provider": provider, "model": model}


# ------------------------------------------------------------- pinned against pydantic-ai


def _string_constants(node: ast.AST) -> set[str]:
    return {
        child.value
        for child in ast.walk(node)
        if isinstance(child, ast.Constant) and isinstance(child.value, str)
    }


def _source(function: Callable[..., Any]) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


def test_the_known_prefixes_are_exactly_those_pydantic_ai_builds_a_chat_model_for() -> None:
    """Read from pydantic-ai's own tables: the provider names ``infer_provider_class`` matches,
    of which those ``infer_model`` builds a model for (the rest are embedding or speech
    providers). If an upgrade adds, renames or drops one, update ``PYDANTIC_AI_PROVIDERS``."""
    providers = {
        case.value.value
        for case in ast.walk(_source(infer_provider_class))
        if isinstance(case, ast.MatchValue) and isinstance(case.value, ast.Constant)
    }
    built = set(get_args(models.OpenAIChatCompatibleProvider.__value__))
    for compare in ast.walk(_source(models.infer_model)):
        if (
            isinstance(compare, ast.Compare)
            and isinstance(compare.left, ast.Name)
            and compare.left.id in ("model_kind", "provider_name")
        ):
            built |= {s for c in compare.comparators for s in _string_constants(c)}

    assert providers & built == PYDANTIC_AI_PROVIDERS
    assert providers - built == {"elevenlabs", "sentence-transformers", "voyageai"}


def test_every_prefix_of_pydantic_ais_known_model_names_is_accepted() -> None:
    prefixes = {name.partition(":")[0] for name in models.known_model_names() if ":" in name}

    assert prefixes
    for prefix in prefixes:
        MANIFEST.check_model(f"{prefix}:some-model")
    assert {p for p in prefixes if not p.startswith("gateway/")} <= PYDANTIC_AI_PROVIDERS


def pydantic_ai_knows(provider: str) -> bool:
    try:
        infer_provider_class(provider)
    except ImportError:  # known, but its SDK is an extra we do not install
        return True
    except ValueError:
        return False
    return True


def test_renamed_prefixes_stand_for_providers_pydantic_ai_still_has() -> None:
    # pydantic-ai 2.x dropped the old names; our model strings keep them (ARCHITECTURE §10).
    assert not any(pydantic_ai_knows(old) for old in RENAMED_PROVIDERS)
    assert all(pydantic_ai_knows(new) for new in RENAMED_PROVIDERS.values())
    assert all(pydantic_ai_knows(provider) for provider in PYDANTIC_AI_PROVIDERS)
    assert PYDANTIC_AI_PROVIDERS | RENAMED_PROVIDERS.keys() | {"local", "test"} == BUILTIN_PROVIDERS
