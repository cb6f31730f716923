"""Settings from the environment, as compose and shells pass them."""

from __future__ import annotations

import os

import pytest

from celery_agents import Settings
from celery_agents.demo import _model


def test_every_empty_celery_agents_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("CELERY_AGENTS_"):
            monkeypatch.delenv(name)
    defaults = Settings()
    for field in Settings.model_fields:
        monkeypatch.setenv(f"CELERY_AGENTS_{field.upper()}", "")  # compose's `X=` or `X: ""`
    assert Settings() == defaults
    assert Settings().manifest is None  # before: Path("."), a directory


def test_an_empty_demo_model_variable_means_the_default_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-used")  # the demo then picks an OpenAI model
    monkeypatch.setenv("CELERY_AGENTS_DEMO_MODEL", "")
    with _model() as (model, _):
        assert model == "openai:gpt-4o-mini"  # before: "", an invalid model
