"""Celery tasks (thin shells) and what clients need to send them: names and payload schema.

Importing this package imports no task bodies; the worker registers them (``workers.app``).
"""

from .names import RUN_AGENT
from .payload import RunPayload

__all__ = ["RUN_AGENT", "RunPayload"]
