"""The background entries' scripts on a real Redis: what a paused entry keeps, and each
schedule policy, fire by fire (the beat's part played by the test, with its clock)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from celery_agents.keys import Keys
from celery_agents.scheduler.entries import Entries, Entry, EntryTemplate
from celery_agents.scheduler.policy import plan_fire
from celery_agents.text import as_text


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
    entries.complete("e1", "run-1", True, "{}", now + 1, 600, 60, now=now, day="2026-12-06")
    client, keys = entries.client, entries.keys
    assert client.ttl(keys.background("e1")) == -1  # paused: kept, however long
    assert client.ttl(keys.background_done("e1")) == -1
    assert entries.pause_resume("e1", "resume", now, 600) == b"active"
    assert client.ttl(keys.background("e1")) > 0


def grid_entry(entries: Entries, entry_id: str, now: float, **policy: object) -> None:
    template = EntryTemplate.model_validate(
        {
            "name": entry_id,
            "task": "celery_agents.run_agent",
            "payload": {},
            "interval": 10.0,
            "timeout": 60,
            "policy": policy,
            "max_count": policy.pop("max_count", None),
        }
    )
    entries.create(entry_id, template, now, 600)


def fire(entries: Entries, entry_id: str, now: float, run_id: str, skip: str = "") -> list[str]:
    """What the beat does with the entry's due fire at ``now``."""
    e = Entry.from_hash(entry_id, entries.read(entry_id))
    assert e.policy is not None
    plan = None
    if not e.extra and e.nominal is not None:
        plan = plan_fire(
            e.grid, e.nominal, now, catchup_window=e.policy.catchup_window, end_at=e.policy.end_at
        )
    following = plan.next_nominal if plan is not None else None
    entries.client.zadd(entries.keys.schedule(), {entry_id: now})  # it came due
    reply = entries.fire(
        entry_id,
        now,
        run_id,
        600,
        extra=bool(e.extra),
        plan=plan,
        next_score=following,
        skip=skip,
        ttl_end=60,
    )
    return [as_text(v) for v in reply]


def end(entries: Entries, entry_id: str, run_id: str, now: float, ok: bool = True) -> str:
    result = "{}" if ok else '{"type": "ModelError", "message": "down"}'
    return as_text(
        entries.complete(
            entry_id,
            run_id,
            ok,
            result,
            now,
            600,
            60,
            now=now,
            day="2026-12-06",
            reason="" if ok else "ModelError: down",
        )
    )


def state(entries: Entries, entry_id: str) -> Entry:
    return Entry.from_hash(entry_id, entries.read(entry_id))


def test_overlap_skip_counts_a_fire_that_comes_while_a_run_is_in_flight(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "g", now, overlap="skip")
    assert fire(entries, "g", now, "r1") == ["fired", "1"]
    assert fire(entries, "g", now + 10, "r2") == ["skipped"]
    assert end(entries, "g", "r1", now + 11) == "next"
    assert fire(entries, "g", now + 20, "r3") == ["fired", "2"]
    e = state(entries, "g")
    assert (e.started, e.finished, e.skipped, e.nominal) == (2, 1, 1, now + 30)


def test_buffer_one_keeps_one_fire_for_when_the_run_ends(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "b", now, overlap="buffer_one")
    assert fire(entries, "b", now, "r1")[0] == "fired"
    assert fire(entries, "b", now + 10, "r2") == ["buffered"]
    assert fire(entries, "b", now + 20, "r3") == ["skipped"]  # one is buffered, no more
    assert end(entries, "b", "r1", now + 21) == "next"
    assert entries.client.zscore(entries.keys.schedule(), "b") == now + 21  # at once
    assert fire(entries, "b", now + 21, "r4") == ["fired", "2"]
    e = state(entries, "b")
    assert (e.extra, e.skipped, e.nominal) == (0, 1, now + 30)  # the grid did not move


def test_cancel_other_cancels_the_run_in_flight_for_the_new_one(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "c", now, overlap="cancel_other")
    fire(entries, "c", now, "r1")
    assert fire(entries, "c", now + 10, "r2") == ["fired", "2", "r1"]
    assert end(entries, "c", "r1", now + 11) == "stale"  # cancelled: not counted
    assert end(entries, "c", "r2", now + 12) == "next"
    e = state(entries, "c")
    assert (e.started, e.finished, e.cancelled_other) == (2, 1, 1)


def test_allow_all_runs_fires_side_by_side_and_counts_each(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "a", now, overlap="allow_all", max_count=2)
    fire(entries, "a", now, "r1")
    fire(entries, "a", now + 10, "r2")
    assert {as_text(r) for r, _ in entries.running("a")} == {"r1", "r2"}
    assert fire(entries, "a", now + 20, "r3") == ["max"]
    assert end(entries, "a", "r1", now + 21) == "next"  # r2 still runs
    assert end(entries, "a", "r2", now + 22) == "end"
    assert state(entries, "a").state == "done"


def test_pause_after_failures_pauses_with_the_reason(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "p", now, pause_after_failures=2)
    fire(entries, "p", now, "r1")
    assert end(entries, "p", "r1", now + 1, ok=False) == "next"
    fire(entries, "p", now + 10, "r2")
    assert end(entries, "p", "r2", now + 11, ok=False) == "paused"
    e = state(entries, "p")
    assert e.state == "paused"
    assert e.pause_reason == "paused after 2 failed runs in a row; the last: ModelError: down"
    assert entries.client.zscore(entries.keys.schedule(), "p") is None
    assert entries.client.ttl(entries.keys.background("p")) == -1


def test_a_missed_fire_older_than_the_catchup_window_is_skipped_and_counted(
    entries: Entries,
) -> None:
    now = time.time()
    grid_entry(entries, "m", now, catchup_window=5)
    fire(entries, "m", now, "r1")
    end(entries, "m", "r1", now + 1)
    # No beat from now + 1 to now + 35: the fires at +10, +20, +30 went by.
    assert fire(entries, "m", now + 35, "r2") == ["missed"]
    e = state(entries, "m")
    assert (e.started, e.missed, e.nominal) == (1, 3, now + 40)


def test_a_missed_fire_inside_the_catchup_window_fires_once(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "k", now, catchup_window=60)
    fire(entries, "k", now, "r1")
    end(entries, "k", "r1", now + 1)
    assert fire(entries, "k", now + 35, "r2") == ["fired", "2"]  # once, for +10, +20, +30
    e = state(entries, "k")
    assert (e.started, e.missed, e.nominal) == (2, 2, now + 40)


def test_a_fire_over_budget_is_skipped_with_its_reason(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "t", now, tokens_per_day=5)
    assert fire(entries, "t", now, "r1", skip="budget: 7 of 5 tokens used today") == ["budget"]
    e = state(entries, "t")
    assert (e.started, e.skipped, e.last_skip) == (0, 1, "budget: 7 of 5 tokens used today")


def test_the_end_at_time_ends_the_schedule_once_its_last_run_ended(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "e", now, end_at=now + 15)
    fire(entries, "e", now, "r1")
    assert fire(entries, "e", now + 10, "r2") == ["skipped"]  # r1 runs; no grid time is left
    assert state(entries, "e").nominal is None
    assert end(entries, "e", "r1", now + 16) == "end"
    assert state(entries, "e").state == "done"


def test_a_trigger_fires_now_and_leaves_the_grid_alone(entries: Entries) -> None:
    now = time.time()
    grid_entry(entries, "x", now)
    fire(entries, "x", now, "r1")
    end(entries, "x", "r1", now + 1)
    assert as_text(entries.trigger("x", 1, now + 2)) == "queued"
    assert fire(entries, "x", now + 2, "r2") == ["fired", "2"]
    assert state(entries, "x").nominal == now + 10


def test_every_runs_tokens_count_against_the_days_budget_failed_ones_too(
    entries: Entries,
) -> None:
    now = time.time()
    grid_entry(entries, "u", now, tokens_per_day=1000)
    usage = entries.keys.run_usage("u")  # what the workers add up as the entry's runs end
    fire(entries, "u", now, "r1")
    entries.client.hincrby(usage, "input_tokens", 30)
    entries.client.hincrby(usage, "output_tokens", 12)
    end(entries, "u", "r1", now + 1)
    fire(entries, "u", now + 10, "r2")
    entries.client.hincrby(usage, "input_tokens", 50)
    end(entries, "u", "r2", now + 11, ok=False)
    e = state(entries, "u")
    assert (e.day, e.day_tokens, e.last_tokens) == ("2026-12-06", 92, 50)


def test_a_due_entry_with_no_fire_left_to_make_is_not_due_again_at_once(
    entries: Entries,
) -> None:
    now = time.time()
    grid_entry(entries, "n", now)
    fire(entries, "n", now, "r1")
    end(entries, "n", "r1", now + 1)
    entries.client.zadd(entries.keys.schedule(), {"n": now + 2})  # due, but nothing to fire
    reply = entries.fire(
        "n", now + 2, "r2", 600, extra=True, plan=None, next_score=None, skip="", ttl_end=60
    )
    assert [as_text(v) for v in reply] == ["none"]
    assert entries.client.zscore(entries.keys.schedule(), "n") == now + 10  # its grid time
