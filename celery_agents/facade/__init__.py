"""The user-facing API: ``Agent``, ``Team``, ``TeamRun``, ``RunHandle``, ``configure``."""

from .agent import Agent
from .background import BackgroundRun, BackgroundStats
from .client import configure
from .handle import RunHandle
from .manifest import team_from_manifest
from .options import RunOptions
from .stream import RunStream, TextChunk
from .team import Team, TeamRun

__all__ = [
    "Agent",
    "BackgroundRun",
    "BackgroundStats",
    "RunHandle",
    "RunOptions",
    "RunStream",
    "Team",
    "TeamRun",
    "TextChunk",
    "configure",
    "team_from_manifest",
]
