"""celery-agents: LLM agents run as Celery jobs, streamed back through Redis pub/sub.

The public names load on first use, so importing a light module (``celery_agents.messages``,
``celery_agents.config``) does not pull in Celery, Redis or OpenAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Agent": "facade",
    "BackgroundRun": "facade",
    "BackgroundStats": "facade",
    "RunHandle": "facade",
    "RunOptions": "facade",
    "RunStream": "facade",
    "Team": "facade",
    "TeamRun": "facade",
    "TextChunk": "facade",
    "configure": "facade",
    "team_from_manifest": "facade",
    "runs": "facade.stored",
    "run": "facade.stored",
    "usage": "facade.stored",
    "schedule_history": "facade.stored",
    "StoredRun": "store.queries",
    "UsageRow": "store.queries",
    "AgentsManifest": "config",
    "Settings": "config",
    "AgentResponse": "messages",
    "ChatMessage": "messages",
    "Talk": "messages",
    "Usage": "messages",
    "Event": "events",
    "Job": "jobs",
    "RunRecord": "runstate",
    "OutputValidationError": "errors",
    "tool": "tools",
    "idempotency_key": "tools",
    "BudgetExceeded": "errors",
    "CeleryAgentsError": "errors",
    "ClientClosed": "errors",
    "ConfigError": "errors",
    "ModelError": "errors",
    "RunCancelled": "errors",
    "RunError": "errors",
    "RunTimeout": "errors",
    "StageError": "errors",
    "StreamGap": "errors",
    "TeamRunError": "errors",
    "ToolError": "errors",
    "ToolInterrupted": "errors",
    "UnknownAgentError": "errors",
    "UnknownProviderError": "errors",
    "UnknownToolError": "errors",
    "UserError": "errors",
}
__all__ = [
    "Agent",
    "AgentResponse",
    "AgentsManifest",
    "BackgroundRun",
    "BackgroundStats",
    "BudgetExceeded",
    "CeleryAgentsError",
    "ChatMessage",
    "ClientClosed",
    "ConfigError",
    "Event",
    "Job",
    "ModelError",
    "OutputValidationError",
    "RunCancelled",
    "RunError",
    "RunHandle",
    "RunOptions",
    "RunRecord",
    "RunStream",
    "RunTimeout",
    "Settings",
    "StageError",
    "StoredRun",
    "StreamGap",
    "Talk",
    "Team",
    "TeamRun",
    "TeamRunError",
    "TextChunk",
    "ToolError",
    "ToolInterrupted",
    "UnknownAgentError",
    "UnknownProviderError",
    "UnknownToolError",
    "Usage",
    "UsageRow",
    "UserError",
    "configure",
    "idempotency_key",
    "run",
    "runs",
    "schedule_history",
    "team_from_manifest",
    "tool",
    "usage",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'celery_agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from .config import AgentsManifest, Settings
    from .errors import (
        BudgetExceeded,
        CeleryAgentsError,
        ClientClosed,
        ConfigError,
        ModelError,
        OutputValidationError,
        RunCancelled,
        RunError,
        RunTimeout,
        StageError,
        StreamGap,
        TeamRunError,
        ToolError,
        ToolInterrupted,
        UnknownAgentError,
        UnknownProviderError,
        UnknownToolError,
        UserError,
    )
    from .events import Event
    from .facade import (
        Agent,
        BackgroundRun,
        BackgroundStats,
        RunHandle,
        RunOptions,
        RunStream,
        Team,
        TeamRun,
        TextChunk,
        configure,
        team_from_manifest,
    )
    from .facade.stored import run, runs, schedule_history, usage
    from .jobs import Job
    from .messages import AgentResponse, ChatMessage, Talk, Usage
    from .runstate import RunRecord
    from .store.queries import StoredRun, UsageRow
    from .tools import idempotency_key, tool
