"""The background entries' scripts on a real Redis: what a paused entry keeps."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from celery_agents.keys import Keys
from celery_agents.scheduler.entries import Entries, EntryTemplate


@pytest.fixture
def entries(agents_redis_url: str) -> Iterator[Entries]:
    client = redis.Redis.from_url(agents_redis_url)
    try:
        yield Entries(client, Keys(f"entries-{uuid.uuid4().hex[:8]}"))
    finally:
        client.close()


def test_a_run_that_ends_after_its_entry_was_paused_leaves_the_entry_kept(
    entries: Entries,
) -> None:
    now = time.time()
    template = EntryTemplate.model_validate(
        {
            "name": "a",
            "task": "celery_agents.run_agent",
            "payload": {},
            "interval": 1.0,
            "timeout": 60,
        }
    )
    entries.create("e1", template, now, 600)
    assert entries.claim("e1", now, "run-1", 600) == 1  # the run is in flight
    assert entries.pause_resume("e1", "pause", now, 600) == b"paused"
    entries.complete("e1", "run-1", True, "{}", now + 1, 600, 60)
    client, keys = entries.client, entries.keys
    assert client.ttl(keys.background("e1")) == -1  # paused: kept, however long
    assert client.ttl(keys.background_done("e1")) == -1
    assert entries.pause_resume("e1", "resume", now, 600) == b"active"
    assert client.ttl(keys.background("e1")) > 0
