"""Import layering (ARCHITECTURE.md §3), checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("celery", "redis", "openai", "kombu", "pydantic_ai", "anthropic")


def imported_after(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "celery_agents.messages",
        "celery_agents.events",
        "celery_agents.errors",
        "celery_agents.config",
        "celery_agents.tools",
    ],
)
def test_pure_modules_import_no_engine(module: str) -> None:
    loaded = imported_after(module)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_llm_imports_openai_but_never_celery() -> None:
    loaded = imported_after("celery_agents.llm.agent_loop, celery_agents.llm.providers")
    assert "openai" in loaded and "celery" not in loaded


def test_the_facade_never_imports_the_worker_side() -> None:
    loaded = imported_after("celery_agents.facade")
    assert "celery_agents.tasks.app" in loaded
    assert not {m for m in loaded if m.startswith("celery_agents.workers")}


def test_the_public_api_is_importable_from_the_top() -> None:
    import celery_agents

    for name in celery_agents.__all__:
        assert getattr(celery_agents, name) is not None
