"""run_in_background and manifest schedules on a real beat, a real worker and real Redis."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis

from celery_agents import Agent, BackgroundRun, RunCancelled, RunError, Team, TeamRun, UserError
from celery_agents.keys import Keys
from celery_agents.scheduler.entries import FAILURE_LIMIT
from tests.conftest import Stack
from tests.support.entries import entry

pytestmark = pytest.mark.usefixtures("agents")

StackFactory = Callable[..., Stack]


async def test_max_count_gives_exactly_that_many_runs(shared_stack: Stack) -> None:
    s = shared_stack
    agent = Agent("pinger", "test:echo")
    stats = await agent.run_in_background("check the error rate", max_count=3, interval=0.2)
    assert agent.is_running
    last = await stats.wait()
    assert not agent.is_running and not stats.is_running
    assert stats.message_count == 3 and stats.errors == []
    assert last is not None and last.content == "check the error rate"
    assert stats.usage.output_tokens == 3 * 4  # the echoed prompt, three times
    assert len({m.run_id for m in stats.messages}) == 3
    e = entry(s, stats.id)
    assert (e.state, e.started, e.finished) == ("done", 3, 3)


async def test_block_true_returns_after_the_last_run(shared_stack: Stack) -> None:
    agent = Agent("blocker", "test:echo")
    stats = await agent.run_in_background("x", max_count=2, interval=0.1, block=True)
    assert not agent.is_running and stats.message_count == 2


async def test_runs_never_overlap_and_wait_the_interval_after_each_other(
    shared_stack: Stack,
) -> None:
    stats = await Agent("spaced", "test:echo").run_in_background("x", max_count=3, interval=0.3)
    await stats.wait()
    stamps = [m.timestamp.timestamp() for m in stats.messages]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 0.3 for gap in gaps), gaps


async def test_cancel_stops_an_endless_run_and_a_new_one_may_start(shared_stack: Stack) -> None:
    s = shared_stack
    agent = Agent("endless", "test:echo")
    stats = await agent.run_in_background("x", interval=0.05)
    with pytest.raises(UserError, match="already runs in the background"):
        await agent.run_in_background("again")
    with pytest.raises(UserError, match="no max_count and would never end"):
        await stats.wait()
    await stats.wait_for_messages(2, timeout=20)
    await agent.cancel()
    assert not agent.is_running  # at once: before, only once the event came back
    assert isinstance(stats.error, RunCancelled)
    started = entry(s, stats.id).started
    await stats.ended(timeout=10)
    e = entry(s, stats.id)
    assert e.state == "cancelled"
    client = redis.Redis.from_url(s.redis_url)
    assert client.zscore(Keys(s.prefix).schedule(), stats.id) is None  # nothing can fire it
    client.close()
    await asyncio.sleep(0.3)  # six intervals: no run may start after cancel returned
    assert entry(s, stats.id).started == started
    again = await agent.run_in_background("after cancel", max_count=1, block=True)
    assert again.message_count == 1
    await agent.cancel()  # none runs: nothing to do (nor asked of Redis: keys may be gone)
    await again.cancel()


async def test_failures_are_counted_and_the_count_honoured(shared_stack: Stack) -> None:
    s = shared_stack
    stats = await Agent("broken", "test:fail").run_in_background("x", max_count=3, interval=0.05)
    with pytest.raises(RunError, match="3 of 3 runs failed; last error: test:fail always fails"):
        await stats.wait()
    assert stats.message_count == 0 and len(stats.errors) == 3
    assert (entry(s, stats.id).started, entry(s, stats.id).state) == (3, "failed")


async def test_an_endless_run_that_keeps_failing_stops_loudly(shared_stack: Stack) -> None:
    stats = await Agent("broken", "test:fail").run_in_background("x", interval=0.02)
    await stats.ended(timeout=20)
    assert len(stats.errors) == FAILURE_LIMIT
    assert isinstance(stats.error, RunError)


async def test_teams_and_team_runs_run_in_the_background(shared_stack: Stack) -> None:
    team = Team([Agent("a", "test:echo"), Agent("b", "test:echo")])
    stats = await team.run_in_background("together", max_count=2, interval=0.05, block=True)
    assert [m.content for m in stats.messages] == [["together", "together"]] * 2
    chain = TeamRun([Agent("a", "test:echo"), Agent("b", "test:echo")])
    stats = await chain.run_in_background("in turn", max_count=2, interval=0.05, block=True)
    assert [(m.name, m.forwarded_from) for m in stats.messages] == [("b", ["a"])] * 2
    assert not team.is_running and not chain.is_running


async def test_the_count_stays_exact_when_the_beat_is_killed_midway(stack: StackFactory) -> None:
    s = stack()
    stats = await Agent("steady", "test:echo").run_in_background("x", max_count=6, interval=0.2)
    await stats.wait_for_messages(2, timeout=20)
    s.processes[-1].kill()  # kill -9 the beat: its lock expires, nothing is released
    s.beat()  # waits until it holds the lock
    await stats.wait()
    e = entry(s, stats.id)
    assert (stats.message_count, e.started, e.finished) == (6, 6, 6)


async def test_two_beats_at_once_never_fire_twice(stack: StackFactory) -> None:
    s = stack()
    s.beat(wait=False)
    s.beat(wait=False)
    stats = await Agent("watched", "test:echo").run_in_background("x", max_count=8, interval=0.02)
    await stats.wait()
    e = entry(s, stats.id)
    assert (stats.message_count, e.started, e.finished) == (8, 8, 8)
    assert len({m.run_id for m in stats.messages}) == 8


async def test_without_a_beat_run_in_background_says_how_to_start_one(stack: StackFactory) -> None:
    stack(beat=False)
    with pytest.raises(UserError, match="no beat is running.*celery-agents beat"):
        await Agent("a", "test:echo").run_in_background("x", max_count=1)


async def test_a_manifest_schedule_fires_without_any_client(stack: StackFactory) -> None:
    stack(schedules={"ping": {"agent": "writer", "prompt": "scheduled ping", "every": 0.2}})
    stats = BackgroundRun.attach("schedule:ping")
    await stats.wait_for_messages(2, timeout=20)
    assert stats.messages[0].content == "scheduled ping"
    assert stats.messages[0].name == "writer"


async def test_attach_and_cancel_from_a_second_process(shared_stack: Stack) -> None:
    s = shared_stack
    stats = await Agent("shared", "test:echo").run_in_background("x", interval=0.05)
    await stats.wait_for_messages(1, timeout=20)
    script = (
        "from celery_agents import BackgroundRun, Settings, configure\n"
        f"configure(Settings(redis_url={s.redis_url!r}, key_prefix={s.prefix!r}, "
        f"queue={s.prefix!r}))\n"
        f"run = BackgroundRun.attach({stats.id!r})\n"
        "print(run.name, run.is_running)\n"
        "run.cancel_sync()\n"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["shared", "True"]
    await stats.ended(timeout=10)
    assert entry(s, stats.id).state == "cancelled"


async def test_every_key_expires_once_background_runs_end(stack: StackFactory) -> None:
    s = stack()
    agent = Agent("tidy", "test:echo")
    for _ in range(3):
        await agent.run_in_background(
            "x", max_count=2, interval=0.01, block=True, store_history=False
        )
    await (agent & Agent("b", "test:echo")).run_in_background("x", max_count=1, block=True)
    client = redis.Redis.from_url(s.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{s.prefix}:*"))
        without_ttl = [k for k in keys if client.ttl(k) < 0 and b":beat:" not in k]
        assert keys and without_ttl == []
    finally:
        client.close()


async def test_cost_sums_over_background_runs(shared_stack: Stack) -> None:
    stats = await Agent("paid", "scripted:priced").run_in_background(
        "x", max_count=2, interval=0.01, block=True, store_history=False
    )
    costs = [m.cost for m in stats.messages]
    assert len(costs) == 2 and all(c is not None and c > 0 for c in costs)
    assert stats.cost == pytest.approx(sum(c for c in costs if c is not None))


async def test_an_entry_that_cannot_fire_does_not_stop_the_beat(stack: StackFactory) -> None:
    s = stack()
    keys = Keys(s.prefix)
    client = redis.Redis.from_url(s.redis_url)
    try:
        # A corrupt entry (its payload is no JSON) due now, before the good one.
        client.hset(keys.background("corrupt"), mapping={"name": "bad", "payload": "{not json"})
        client.sadd(keys.background_index(), "corrupt")
        client.zadd(keys.schedule(), {"corrupt": 0})
        stats = await Agent("good", "test:echo").run_in_background("x", max_count=2)
        await asyncio.wait_for(stats.wait(), 60)
        assert stats.message_count == 2  # before: the beat died on the corrupt one
        assert (client.zscore(keys.schedule(), "corrupt") or 0) > time.time()  # put off
        assert s.processes[-1].process.poll() is None
    finally:
        client.delete(keys.background("corrupt"))
        client.srem(keys.background_index(), "corrupt")
        client.zrem(keys.schedule(), "corrupt")
        client.close()


async def test_a_background_run_with_a_key_is_started_once(shared_stack: Stack) -> None:
    key = f"nightly-{time.monotonic_ns()}"
    first = await Agent("keyed", "test:echo").run_in_background(
        "x", max_count=2, interval=0.1, idempotency_key=key
    )
    again = await Agent("keyed", "test:echo").run_in_background(
        "x", max_count=2, interval=0.1, idempotency_key=key
    )
    assert again.id == first.id
    await first.wait()
    await again.wait()
    assert first.message_count == again.message_count == 2
    assert (entry(shared_stack, first.id).started, entry(shared_stack, first.id).finished) == (2, 2)


async def test_readmes_loop_runs_as_written_past_the_entrys_last_run(shared_stack: Stack) -> None:
    # README's loop: its last pass waits for a message the ended entry never sends.
    agent = Agent("looped", "test:echo")
    stats = await agent.run_in_background("check the error rate", max_count=3, interval=0.2)
    seen: list[int] = []
    while agent.is_running:
        seen.append(stats.message_count)
        await stats.wait_for_messages(stats.message_count + 1, timeout=60)
    last = await stats.wait()
    assert stats.message_count == 3 and last.content == "check the error rate"
    assert seen and seen == sorted(seen)
    await stats.wait_for_messages(4, timeout=5)  # ended: returns at once, with 3
    assert stats.message_count == 3
