"""The user-facing API: ``Agent``, ``RunStream``, ``RunHandle`` and ``configure``."""

from .agent import Agent
from .client import configure
from .handle import RunHandle
from .stream import RunStream

__all__ = ["Agent", "RunHandle", "RunStream", "configure"]
