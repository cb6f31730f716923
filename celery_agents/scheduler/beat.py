"""``AgentsScheduler``: Celery beat driven by the background entries in Redis.

``celery-agents beat`` (or ``celery -A celery_agents.workers.app beat -S
celery_agents.scheduler.beat:AgentsScheduler``) runs it. Each ``tick``:

1. holds the beat lock (one active beat; another takes over within ``LOCK_TTL`` of the
   holder's death) and refreshes the heartbeat that clients check;
2. claims every due entry (atomically, so two beats can never fire one twice) and sends its run;
3. now and then counts a run lost whose worker vanished (past its timeout) as failed, so the
   entry goes on;
4. returns how long to sleep: until the next due entry, at most ``MAX_SLEEP`` so new entries
   fire within a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import beat

from ..config.manifest import AgentsManifest
from ..config.settings import Settings, shown_url
from ..errors import CeleryAgentsError, RunError
from ..events import MemberFailed
from ..keys import Keys
from ..redis_check import check_fleet_redis
from ..store.database import check_store
from ..store.entry import RunEntry
from ..store.handoff import StoreHandoff
from ..store.url import store_url
from ..streaming.publisher import SyncEventPublisher
from ..tasks.app import create_client_app
from ..tasks.names import RUN_AGENT
from ..tasks.wire import Route
from ..text import as_text
from . import scripts
from .entries import Entries, Entry, end_event, ttl_until
from .manifest_schedules import sync_manifest_schedules
from .policy import day_of, plan_fire

log = logging.getLogger("celery_agents.beat")

LOCK_TTL = 3.0
MAX_SLEEP = 0.2
WATCHDOG_EVERY = 5.0
LOST_GRACE = 30.0
BAD_ENTRY_DELAY = 60.0  # seconds an entry that failed to fire waits before the next try


class AgentsScheduler(beat.Scheduler):  # type: ignore[misc]
    """A Celery beat scheduler whose entries live in Redis (see ``scheduler/entries.py``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.settings = Settings()
        self.keys = Keys(self.settings.key_prefix)
        self.redis = redis.Redis.from_url(self.settings.redis_url, client_name="celery-agents-beat")
        self.entries = Entries(self.redis, self.keys)
        self.sender = create_client_app(self.settings)
        self.token = uuid.uuid4().hex
        self.holding = False
        self.next_watchdog = 0.0
        self._hold = self.redis.register_script(scripts.HOLD_LOCK)
        self.publisher = SyncEventPublisher(
            self.redis,
            self.keys,
            log_cap=self.settings.replay_max_events,
            ttl=self.settings.result_ttl,
        )
        self.handoff: StoreHandoff | None = None  # once the store is known to open
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        """Celery's own schedule stays empty; the manifest's schedules become entries.

        A manifest that does not load, a run store that does not open, or a Redis that refuses
        the URL's password or database ends the beat here,
        with its error in one line and exit status 1 (Celery's beat logs any ``Exception``
        with a traceback; ``SystemExit`` it lets through)."""
        manifest_path = self.settings.manifest
        try:
            check_fleet_redis(self.settings)
            check_store(self.settings.store_url)
            manifest = AgentsManifest.from_yaml(manifest_path) if manifest_path else None
        except CeleryAgentsError as exc:
            sys.stderr.write(f"celery-agents beat: {exc}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None
        url = store_url(self.settings.store_url)
        if url is not None:
            self.handoff = StoreHandoff(
                self.keys,
                url,
                content=self.settings.store_content,
                cap=self.settings.store_backlog_max,
            )
        if manifest is not None:
            sync_manifest_schedules(self.entries, manifest, self.settings, time.time())

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return self._tick(time.time())
        except redis.RedisError as exc:
            log.warning("beat tick failed (%s); retrying", exc)
            self.holding = False
            return 1.0

    def _tick(self, now: float) -> float:
        held = bool(
            self._hold(keys=[self.keys.beat_lock()], args=[self.token, int(LOCK_TTL * 1000)])
        )
        if held != self.holding:
            log.info("beat %s the lock", "holds" if held else "waits for")
            self.holding = held
        if not held:
            return LOCK_TTL / 3
        self.redis.set(self.keys.beat_alive(), self.token, px=int(LOCK_TTL * 1000))
        for raw_id in self.redis.zrangebyscore(self.keys.schedule(), "-inf", now, start=0, num=200):
            entry_id = as_text(raw_id)
            if not self._guarded(self._fire, entry_id, now):  # put off, not retried at once
                self.redis.zadd(self.keys.schedule(), {entry_id: now + BAD_ENTRY_DELAY})
        if now >= self.next_watchdog:
            self.next_watchdog = now + WATCHDOG_EVERY
            self._count_lost_runs(now)
        upcoming = self.redis.zrange(self.keys.schedule(), 0, 0, withscores=True)
        if not upcoming:
            return MAX_SLEEP
        return min(max(float(upcoming[0][1]) - time.time(), 0.005), MAX_SLEEP)

    def _fire(self, entry_id: str, now: float) -> None:
        entry = Entry.from_hash(entry_id, self.redis.hgetall(self.keys.background(entry_id)))
        run_id = uuid.uuid4().hex
        ttl = ttl_until(now, now, entry.timeout, self.settings.result_ttl)
        if entry.policy is None:
            number = self.entries.claim(entry_id, now, run_id, ttl)
            if number is not None:
                self._send(entry, run_id, int(number), now)
            return
        self._fire_on_grid(entry, run_id, now, ttl)

    def _fire_on_grid(self, entry: Entry, run_id: str, now: float, ttl: int) -> None:
        """A schedule's due fire, by its policy: fired, skipped, buffered, or missed."""
        policy = entry.policy
        assert policy is not None
        extra = entry.extra > 0
        plan = None
        if not extra and entry.nominal is not None:
            plan = plan_fire(
                entry.grid,
                entry.nominal,
                now,
                catchup_window=policy.catchup_window,
                end_at=policy.end_at,
            )
        following = plan.next_nominal if plan is not None else None
        score = None if following is None else following + random.uniform(0, policy.jitter)
        over_budget = self._over_budget(entry, now)
        reply = self.entries.fire(
            entry.id,
            now,
            run_id,
            ttl,
            extra=extra or entry.nominal is None,
            plan=plan,
            next_score=score,
            skip=over_budget,
            ttl_end=self.settings.result_ttl,
        )
        outcome, *rest = (as_text(v) for v in reply)
        if plan is not None and plan.missed:
            log.info("entry %s: %d fire(s) missed while no beat ran", entry.id, plan.missed)
        if outcome == "fired":
            number, *cancelled = rest
            for other in cancelled:  # overlap: cancel_other
                log.info("entry %s: cancelling run %s for the next one", entry.id, other)
                self.redis.set(self.keys.run_cancel(other), "1", ex=self.settings.result_ttl)
                self.redis.publish(self.keys.control_channel(), f"cancel {other}")
            self._send(entry, run_id, int(number), now)
        elif outcome == "budget":
            self._record_skip(entry, now, over_budget)
        elif outcome == "ended":
            self._publish_end(entry.id)
        elif outcome in ("skipped", "buffered"):
            log.info("entry %s: a run is in flight; this fire is %s", entry.id, outcome)

    def _over_budget(self, entry: Entry, now: float) -> str:
        """Why the next fire would exceed the schedule's daily token budget ('' if it would
        not): today's tokens plus what its last run used."""
        budget = entry.policy.tokens_per_day if entry.policy is not None else None
        if budget is None:
            return ""
        used = entry.day_tokens if entry.day == day_of(now, entry.timezone) else 0
        if used + entry.last_tokens <= budget and used < budget:
            return ""
        return (
            f"budget: {used} of {budget} tokens used today, and a run takes about "
            f"{entry.last_tokens}"
        )

    def _record_skip(self, entry: Entry, now: float, reason: str) -> None:
        """A fire skipped for its budget goes into the run store, as a run that never ran."""
        log.warning("entry %s: fire skipped (%s)", entry.id, reason)
        if self.handoff is None:
            return
        skipped = RunEntry(
            run_id=uuid.uuid4().hex,
            kind="agent" if entry.task == RUN_AGENT else "team",
            name=entry.name,
            schedule=entry.id,
            tenant=entry.payload.get("tenant"),
            state="skipped",
            attempt=0,
            worker="beat",
            error_type="BudgetExceeded",
            error_message=f"fire skipped: {reason}",
            queued_at=now,
            ended_at=now,
            prompt=entry.payload.get("prompt"),
        )
        with self.redis.pipeline(transaction=False) as pipe:
            self.handoff.queue(pipe, skipped)
            pipe.execute()

    def _send(self, entry: Entry, run_id: str, number: int, now: float) -> None:
        payload = entry.run_payload(run_id, number)
        try:
            self.sender.send_task(
                entry.task,
                kwargs={"payload": payload},
                task_id=run_id,
                kwargsrepr=json.dumps(
                    {"background": entry.name, "entry": entry.id, "run": number, "run_id": run_id}
                ),
                argsrepr="()",
                **Route.model_validate(payload.get("route") or {}).options(self.settings.broker),
            )
        except Exception as exc:  # the broker refused: give the run back, try again soon
            log.warning("could not send run %s of %s: %s", number, entry.name, exc)
            self.entries.unclaim(entry.id, run_id, now + 1.0)
            return
        log.info("fired entry=%s name=%s run=%s run_id=%s", entry.id, entry.name, number, run_id)

    def _publish_end(self, entry_id: str) -> None:
        ended = Entry.from_hash(entry_id, self.redis.hgetall(self.keys.background(entry_id)))
        self.publisher.publish(end_event(ended))

    def _count_lost_runs(self, now: float) -> None:
        """A run in flight far past its timeout (a Team's or TeamRun's members share it) lost
        its worker: count it failed and tell the entry's followers; a redelivery of it is
        refused (cancelled), so it cannot run beside the runs that come after it."""
        for raw_id in self.redis.smembers(self.keys.background_index()):
            self._guarded(self._check_lost, as_text(raw_id), now)

    def _check_lost(self, entry_id: str, now: float) -> None:
        entry = Entry.from_hash(entry_id, self.redis.hgetall(self.keys.background(entry_id)))
        for raw_run, since in self.entries.running(entry_id):
            if now - float(since) >= entry.timeout + LOST_GRACE:
                self._count_lost(entry, as_text(raw_run), now)

    def _guarded(self, step: Callable[[str, float], None], entry_id: str, now: float) -> bool:
        """``step(entry_id, now)``; False (named in the log) for an entry it fails on, a
        corrupt hash say, so the beat goes on with the others."""
        try:
            step(entry_id, now)
        except redis.RedisError:
            raise
        except Exception:
            log.exception("entry %s: %s failed", entry_id, step.__name__.strip("_"))
            return False
        return True

    def _count_lost(self, entry: Entry, run_id: str, now: float) -> None:
        error = RunError(f"run {run_id} of {entry.name!r} was lost with its worker")
        due = entry.next_due(now)
        outcome = as_text(
            self.entries.complete(
                entry.id,
                run_id,
                False,
                json.dumps(error.to_json()),
                due,
                ttl_until(due, now, entry.timeout, self.settings.result_ttl),
                self.settings.result_ttl,
                now=now,
                day=day_of(now, entry.timezone),
                reason=f"RunError: {error.message}",
            )
        )
        if outcome in ("stale", "dup"):
            return  # it ended (or was counted) meanwhile
        log.warning("entry %s: counted lost run %s as failed (%s)", entry.id, run_id, outcome)
        self.redis.set(self.keys.run_cancel(run_id), "1", ex=self.settings.result_ttl)
        lost = MemberFailed(
            run_id=run_id, member=entry.name, position=[entry.started - 1], error=error.to_json()
        )
        self.publisher.publish_to([(entry.id, lost)])
        if outcome == "end":
            self._publish_end(entry.id)

    def close(self) -> None:
        """Let go of the lock at once, so another beat takes over without waiting."""
        self.redis.eval(scripts.RELEASE_LOCK, 1, self.keys.beat_lock(), self.token)
        if self.holding:
            self.redis.delete(self.keys.beat_alive())
        super().close()

    # Celery's persistent-schedule hooks: our state is all in Redis.
    def sync(self) -> None:
        pass

    @property
    def info(self) -> str:
        url = shown_url(self.settings.redis_url)
        return f"    . redis -> {url} (entries under {self.keys.prefix}:bg:*)"
