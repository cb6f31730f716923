"""Celery tasks (thin shells) and what clients need to send them: names and payload schema.

Importing this package imports no task bodies; the worker registers them (``workers.app``).
"""

from .names import COLLECT_TEAM, FINISH_CHAIN, RUN_AGENT, RUN_TEAM
from .payload import RunPayload
from .tree import TreePayload

__all__ = ["COLLECT_TEAM", "FINISH_CHAIN", "RUN_AGENT", "RUN_TEAM", "RunPayload", "TreePayload"]
