"""Handing ended runs' records to the store: a Redis stream the writers drain.

A record rides on the pipeline that ends its run (no round trip of its own), so recording
never slows a run, and a database that is away never fails one: records wait in the stream
(up to ``store_backlog_max``) until a writer lands them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from ..keys import Keys
from .entry import RunEntry
from .url import store_id

FIELD = "entry"
# Like every key, the stream expires: once no run has ended for this long (and no writer
# drained it meanwhile), the records still in it are dropped.
BACKLOG_TTL = 30 * 86_400


class StoreHandoff:
    def __init__(self, keys: Keys, url: URL, *, content: bool, cap: int) -> None:
        self.stream = keys.store_records(store_id(url))
        self._content = content
        self._cap = cap

    def queue(self, pipe: Any, entry: RunEntry) -> None:
        """Queue ``entry`` on ``pipe`` (the run's last round trip)."""
        if not self._content:
            entry = entry.without_content()
        data = entry.model_dump_json(exclude_defaults=True)
        pipe.xadd(self.stream, {FIELD: data}, maxlen=self._cap, approximate=True)
        pipe.expire(self.stream, BACKLOG_TTL)
