"""Schedules as operators use them: by the name `schedules list` prints, their history from
the run store, and manifest schedules that keep what was done to them across beat restarts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import yaml

import celery_agents
from celery_agents import Agent, UserError
from celery_agents.keys import Keys
from celery_agents.scheduler.entries import Entry
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer
from tests.conftest import Stack
from tests.support.entries import entry
from tests.support.store import wait_stored
from tests.test_cli import cli
from tests.test_delivered_runs import read_lines

pytestmark = pytest.mark.usefixtures("agents")

StackFactory = Callable[..., Stack]
HOURLY = {"agent": "writer", "prompt": "hourly report", "every": 3600}


async def until(
    s: Stack, entry_id: str, ready: Callable[[Entry], bool], *, timeout: float = 20.0
) -> Entry:
    """The entry once ``ready(entry)``."""
    deadline = time.monotonic() + timeout
    while not ready(e := entry(s, entry_id)):
        assert time.monotonic() < deadline, f"{entry_id} never got there: {e}"
        await asyncio.sleep(0.05)
    return e


async def fired(s: Stack, entry_id: str, count: int) -> Entry:
    """The entry once ``count`` of its runs have finished."""
    return await until(s, entry_id, lambda e: e.finished >= count)


def restart_beat(s: Stack, manifest: Path | None = None) -> None:
    """Kill -9 the beat and start a new one (on ``manifest``, if given)."""
    kill_beat(s)
    if manifest is not None:
        s.manifest = manifest
    s.beat()


def with_schedule(s: Stack, name: str, spec: dict[str, object]) -> Path:
    data = yaml.safe_load(s.manifest.read_text())
    changed = s.manifest.with_name(f"changed-{s.prefix}.yaml")
    changed.write_text(yaml.safe_dump({**data, "schedules": {name: spec}}))
    return changed


async def test_every_schedules_command_takes_the_name_list_prints(stack: StackFactory) -> None:
    s = stack(schedules={"hourly-report": HOURLY})
    env = s.processes[0].env
    first = await fired(s, "schedule:hourly-report", 1)
    listed = cli("schedules", "list", env=env)
    assert "hourly-report" in listed.stdout, listed.stderr
    shown = cli("schedules", "show", "hourly-report", env=env)
    assert shown.returncode == 0 and "id: schedule:hourly-report" in shown.stdout, shown.stderr
    paused = cli("schedules", "pause", "hourly-report", env=env)
    assert paused.stdout.strip() == "schedule:hourly-report: paused", paused.stderr
    status = cli("status", env=env)
    assert "background entries: 1 paused" in status.stdout, status.stdout
    resumed = cli("schedules", "resume", "hourly-report", env=env)
    assert resumed.stdout.strip() == "schedule:hourly-report: active"
    assert "background entries: 1 active" in cli("status", env=env).stdout
    triggered = cli("schedules", "trigger", "hourly-report", env=env)
    assert triggered.stdout.strip() == "schedule:hourly-report: fires now", triggered.stderr
    second = await fired(s, "schedule:hourly-report", 2)
    assert second.nominal == first.nominal  # a fire by hand leaves the grid where it was

    assert first.last is not None
    run_id = json.loads(first.last)["run_id"]
    await wait_stored(run_id)
    history = cli("schedules", "history", "hourly-report", "--json", env=env)
    fires = json.loads(history.stdout)
    assert history.returncode == 0 and len(fires) >= 1, history.stderr
    assert run_id in {f["run_id"] for f in fires}
    assert {f["state"] for f in fires} == {"succeeded"}
    assert all(f["output"] == "hourly report" and f["output_tokens"] > 0 for f in fires)
    table = cli("schedules", "history", "hourly-report", env=env)
    assert "hourly report" in table.stdout and run_id in table.stdout

    removed = cli("schedules", "remove", "hourly-report", env=env)
    assert removed.stdout.strip() == "schedule:hourly-report: cancelled", removed.stderr
    assert entry(s, "schedule:hourly-report").state == "cancelled"


async def test_a_name_two_entries_share_must_be_given_as_an_id(shared_stack: Stack) -> None:
    env = shared_stack.processes[0].env
    one = await Agent("twin", "test:echo").run_in_background("x", interval=60)
    two = await Agent("twin", "test:echo").run_in_background("x", interval=60)
    try:
        shown = cli("schedules", "show", "twin", env=env)
        assert shown.returncode == 1
        assert "2 entries are named 'twin'" in shown.stderr
        assert one.id in shown.stderr and two.id in shown.stderr
        assert cli("schedules", "show", one.id, env=env).returncode == 0
    finally:
        await one.cancel()
        await two.cancel()


async def test_history_lists_a_background_runs_fires_from_python(shared_stack: Stack) -> None:
    stats = await Agent("historian", "test:echo").run_in_background(
        "tell the story", max_count=3, interval=0.01, block=True
    )
    for message in stats.messages:
        await wait_stored(message.run_id)
    fires = await celery_agents.schedule_history("historian")
    assert [f.run_id for f in fires] == [m.run_id for m in reversed(stats.messages)]
    assert all(f.schedule == stats.id and f.message is not None for f in fires)
    assert [f.run_id for f in await celery_agents.schedule_history(stats.id, limit=2)] == [
        f.run_id for f in fires[:2]
    ]
    with pytest.raises(UserError, match="no background run or schedule 'nobody'"):
        await celery_agents.schedule_history("nobody")


async def test_a_removed_manifest_schedule_stays_removed_until_its_entry_changes(
    stack: StackFactory,
) -> None:
    s = stack(schedules={"nightly": HOURLY})
    await fired(s, "schedule:nightly", 1)
    assert cli("schedules", "remove", "nightly", env=s.processes[0].env).returncode == 0
    restart_beat(s)
    kept = entry(s, "schedule:nightly")
    assert (kept.state, kept.started) == ("cancelled", 1)  # not made anew
    shown = cli("schedules", "show", "nightly", env=s.processes[0].env)
    assert "state: cancelled" in shown.stdout

    restart_beat(s, with_schedule(s, "nightly", {**HOURLY, "prompt": "a new report"}))
    back = await until(  # its entry changed: it is back, anew
        s, "schedule:nightly", lambda e: e.state == "active" and e.finished == 1
    )
    assert (back.started, back.payload["prompt"]) == (1, "a new report")


async def test_counters_and_pause_survive_beat_restarts(stack: StackFactory) -> None:
    s = stack(schedules={"weekly": HOURLY})
    await fired(s, "schedule:weekly", 1)
    client = redis.Redis.from_url(s.redis_url)
    try:
        assert client.ttl(Keys(s.prefix).background("schedule:weekly")) == -1  # never expires
    finally:
        client.close()
    restart_beat(s)
    assert (entry(s, "schedule:weekly").state, entry(s, "schedule:weekly").started) == (
        "active",
        1,
    )
    assert cli("schedules", "pause", "weekly", env=s.processes[0].env).returncode == 0
    restart_beat(s)
    paused = entry(s, "schedule:weekly")
    assert (paused.state, paused.started, paused.finished) == ("paused", 1, 1)


def kill_beat(s: Stack) -> None:
    for process in [p for p in s.processes if "beat" in str(p.process.args)]:
        process.kill()
        s.processes.remove(process)


async def until_time(t: float) -> None:
    """Wait for the wall clock to pass ``t`` (the event these tests wait on is time itself)."""
    await asyncio.sleep(max(t - time.time(), 0) + 0.01)
    assert time.time() > t


@pytest.mark.parametrize(("window", "caught_up"), [(60, True), (1, False)])
async def test_fires_missed_while_no_beat_ran_are_caught_up_once_within_the_window(
    stack: StackFactory, window: float, caught_up: bool
) -> None:
    every = 4.0
    s = stack(schedules={"catchy": {**HOURLY, "every": every, "catchup_window": window}})
    first = await fired(s, "schedule:catchy", 1)
    assert first.nominal is not None
    kill_beat(s)
    await until_time(first.nominal + every + 0.5)  # two fire times go by with no beat
    restarted = time.time()
    s.beat()
    if caught_up:
        e = await until(s, "schedule:catchy", lambda e: e.finished >= 2)
        assert e.started == 2  # one fire for both
    else:
        e = await until(s, "schedule:catchy", lambda e: e.missed >= 2)
        assert e.started == 1  # none: both were older than the window
    assert e.nominal is not None and e.nominal > restarted  # the grid goes on from there
    assert (e.nominal - first.nominal) % every == pytest.approx(0, abs=1e-6)
    passed = (e.nominal - first.nominal) / every  # grid times from first.nominal on
    assert e.missed == passed - (1 if caught_up else 0)


async def test_overlap_skip_never_overlaps_a_long_run_and_counts_the_skips(
    stack: StackFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(
        Reply(text="slow one", latency=2.0), Reply(text="slow two", latency=2.0), model="slow"
    )
    s = stack(
        agents={"slowpoke": {"model": "scripted:slow"}},
        schedules={
            "busy": {"agent": "slowpoke", "prompt": "x", "every": 0.5, "max_count": 2},
        },
    )
    done = await until(s, "schedule:busy", lambda e: e.state == "done", timeout=30)
    assert (done.started, done.finished, done.errors) == (2, 2, 0)
    assert done.skipped >= 4  # about three fire times went by during each 2 s run
    deadline = time.monotonic() + 10
    while len(runs := await celery_agents.runs(schedule=done.id)) < 2:
        assert time.monotonic() < deadline, f"{len(runs)} of 2 runs recorded"
        await asyncio.sleep(0.05)
    runs = sorted(runs, key=lambda r: r.ended_at)
    assert len(runs) == 2
    assert runs[0].started_at is not None and runs[1].started_at is not None
    assert runs[0].ended_at <= runs[1].started_at  # never side by side


async def test_a_fire_over_its_budget_is_skipped_and_recorded(stack: StackFactory) -> None:
    s = stack(schedules={"thrifty": {**HOURLY, "every": 0.3, "budget": {"tokens_per_day": 1}}})
    e = await until(s, "schedule:thrifty", lambda e: e.skipped >= 2)
    assert (e.started, e.finished) == (1, 1)  # the first run spent the day's budget
    assert e.last_skip is not None and e.last_skip.startswith("budget: ")
    assert e.last is not None
    await wait_stored(json.loads(e.last)["run_id"])
    deadline = time.monotonic() + 10
    while not any(f.state == "skipped" for f in await celery_agents.schedule_history("thrifty")):
        assert time.monotonic() < deadline, "no skipped fire was recorded"
        await asyncio.sleep(0.05)
    fires = await celery_agents.schedule_history("thrifty")
    skipped = [f for f in fires if f.state == "skipped"]
    assert skipped and all(f.error_message and "budget" in f.error_message for f in skipped)
    assert [f.state for f in fires if f.state != "skipped"] == ["succeeded"]
    shown = cli("schedules", "show", "thrifty", env=s.processes[0].env).stdout
    assert "tokens used today" in shown and "skipped: " in shown


async def test_a_schedule_that_keeps_failing_pauses_and_says_why(stack: StackFactory) -> None:
    s = stack(
        agents={"failer": {"model": "test:fail"}},
        schedules={
            "flaky": {"agent": "failer", "prompt": "x", "every": 0.2, "pause_after_failures": 2}
        },
    )
    e = await until(s, "schedule:flaky", lambda e: e.state == "paused")
    assert (e.finished, e.errors) == (2, 2)
    assert e.pause_reason is not None
    assert e.pause_reason.startswith("paused after 2 failed runs in a row; the last: ")
    listed = cli("schedules", "list", env=s.processes[0].env).stdout
    assert "paused after 2 failed runs" in listed
    assert (
        "paused: paused after 2" in cli("schedules", "show", "flaky", env=s.processes[0].env).stdout
    )


async def test_backfill_fires_the_times_between_and_jitter_leaves_the_grid_alone(
    stack: StackFactory,
) -> None:
    spec = {**HOURLY, "overlap": "allow_all", "jitter": "10m"}
    s = stack(schedules={"filler": spec})
    first = await fired(s, "schedule:filler", 1)
    assert first.nominal is not None
    client = redis.Redis.from_url(s.redis_url)
    try:
        due = client.zscore(Keys(s.prefix).schedule(), "schedule:filler")
    finally:
        client.close()
    assert due is not None and first.nominal <= due <= first.nominal + 600  # jittered
    env = s.processes[0].env
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first.nominal - 3600 * 3.5))
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first.nominal - 1))
    filled = cli("schedules", "backfill", "filler", "--from", since, "--to", until, env=env)
    # The fire times between: 1, 2 and 3 hours before the next one, all at once (allow_all).
    assert filled.stdout.strip() == "schedule:filler: 3 fires queued (overlap: allow_all)"
    after = await fired(s, "schedule:filler", 4)
    assert (after.started, after.nominal) == (4, first.nominal)
    empty = cli("schedules", "backfill", "filler", "--from", until, "--to", since, env=env)
    assert empty.returncode == 1 and "--to must not be before --from" in empty.stderr


async def test_a_schedule_starts_at_its_start_at(stack: StackFactory) -> None:
    start = time.time() + 8  # the stack starts in about 3 s
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    s = stack(schedules={"later": {**HOURLY, "start_at": when}})
    e = entry(s, "schedule:later")
    assert time.time() < int(start), "the stack took too long to start"
    assert e.started == 0 and e.nominal == pytest.approx(int(start), abs=1)
    first = await fired(s, "schedule:later", 1)
    assert first.last is not None
    stored = await wait_stored(json.loads(first.last)["run_id"])
    assert stored.started_at is not None and stored.started_at.timestamp() >= int(start)
    assert [f.run_id for f in await celery_agents.schedule_history("later")] == [stored.run_id]
    assert first.nominal == pytest.approx(int(start) + 3600, abs=1)


async def test_run_in_background_delivers_each_run(shared_stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "bg.jsonl"
    stats = await Agent("bg-notifier", "test:echo").run_in_background(
        "x", max_count=2, interval=0.01, block=True, deliver=[{"file": str(out)}]
    )
    deadline = time.monotonic() + 10
    while len(lines := read_lines(out)) < 2:
        assert time.monotonic() < deadline, lines
        await asyncio.sleep(0.05)
    delivered = [json.loads(line)["data"] for line in lines]
    assert sorted(d["run_id"] for d in delivered) == sorted(m.run_id for m in stats.messages)
    assert {d["schedule"] for d in delivered} == {stats.id}
