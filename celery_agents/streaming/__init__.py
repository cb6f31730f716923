"""Redis pub/sub plus a replay log: the worker's publisher and the client's multiplexed hub."""

from .hub import EventHub, RunWatch
from .publisher import EventPublisher
from .replay import read_replay

__all__ = ["EventHub", "EventPublisher", "RunWatch", "read_replay"]
