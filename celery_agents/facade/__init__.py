"""The user-facing API: ``Agent``, ``Team``, ``TeamRun``, ``RunHandle``, ``configure``."""

from .agent import Agent
from .background import BackgroundRun, BackgroundStats
from .client import configure
from .handle import RunHandle
from .stream import RunStream, TextChunk
from .team import Team, TeamRun

__all__ = [
    "Agent",
    "BackgroundRun",
    "BackgroundStats",
    "RunHandle",
    "RunStream",
    "Team",
    "TeamRun",
    "TextChunk",
    "configure",
]
