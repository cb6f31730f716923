from __future__ import annotations

from typing import Any

import pytest

from celery_agents.testing.scripted_server import ScriptedModelServer

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


@pytest.fixture(scope="session")
def celery_agents_manifest(_scripted_model_server: ScriptedModelServer) -> dict[str, Any]:
    return {
        "providers": {
            "scripted": {"base_url": _scripted_model_server.url, "prices": {"priced": PRICE}},
        },
        "tools": {
            "add": "tests.support.tools:add",
            "shout": "tests.support.tools:shout",
            "slow_sync": "tests.support.tools:slow_sync",
            "broken": "tests.support.tools:broken",
        },
        "agents": {
            "analyst": {"model": "scripted:analyst", "system_prompt": "You analyse."},
        },
    }
