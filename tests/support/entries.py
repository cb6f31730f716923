"""Reading a background entry back, as the beat and workers left it."""

from __future__ import annotations

import redis

from celery_agents.keys import Keys
from celery_agents.scheduler.entries import Entry
from tests.conftest import Stack


def entry(s: Stack, entry_id: str) -> Entry:
    client = redis.Redis.from_url(s.redis_url)
    try:
        return Entry.from_hash(entry_id, client.hgetall(Keys(s.prefix).background(entry_id)))
    finally:
        client.close()
