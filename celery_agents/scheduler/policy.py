"""Schedule policies as pure functions of ``now``: the grid of fire times, catch-up, and what
the beat does with a fire that comes due (see ``plan_fire``).

A manifest schedule fires on a grid: every ``every`` seconds from its first fire, or at each
``cron`` time. A fire that comes due is one of: fired; missed (no beat was alive, and it is
older than ``catchup_window``); or, while a run is in flight, handled by ``overlap``
(``scripts.FIRE``). A ``run_in_background`` entry has no grid: its next run is due
``interval`` seconds after its previous one ended, so its runs never overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from .cron import next_fire

Overlap = Literal["skip", "buffer_one", "cancel_other", "allow_all"]
OVERLAPS: tuple[Overlap, ...] = ("skip", "buffer_one", "cancel_other", "allow_all")

# A fire this late is still on time (the beat ticks every 0.2 s, a busy one later), whatever
# the catch-up window: only fires missed while no beat was alive are caught up or skipped.
LATE_GRACE = 2.0
# Grid times counted one by one at most (a cron missed for years is counted up to this).
MAX_COUNTED = 100_000


class Policy(BaseModel):
    """How a schedule on a grid fires (Temporal's names where they fit). Times are epoch
    seconds; durations seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overlap: Overlap = "skip"
    catchup_window: float | None = Field(None, ge=0)  # None: a missed fire is always caught up
    pause_after_failures: int = Field(5, ge=0)  # 0: never pause
    jitter: float = Field(0.0, ge=0)
    start_at: float | None = None
    end_at: float | None = None
    tokens_per_day: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class Grid:
    """The fire times of a schedule: ``every`` seconds apart, or a cron expression's."""

    every: float | None
    cron: str | None
    timezone: str = "UTC"

    def after(self, t: float, *, anchor: float) -> float:
        """The first grid time strictly after ``t``; an interval grid runs through ``anchor``."""
        if self.cron:
            return next_fire(self.cron, datetime.fromtimestamp(t, UTC), self.timezone).timestamp()
        every = self.every or 0.0
        if every <= 0:
            return t
        return anchor + (math.floor((t - anchor) / every) + 1) * every  # before it too

    def passed(self, nominal: float, now: float) -> tuple[int, float]:
        """How many grid times lie in ``(nominal, now]``, and the first one after ``now``."""
        if not self.cron:
            every = self.every or 0.0
            if every <= 0:
                return 0, now
            count = max(math.floor((now - nominal) / every), 0)
            return count, nominal + (count + 1) * every
        count, t = 0, self.after(nominal, anchor=nominal)
        while t <= now and count < MAX_COUNTED:
            count += 1
            t = self.after(t, anchor=nominal)
        return count, (t if t > now else self.after(now, anchor=nominal))

    def first(self, now: float, start_at: float | None) -> float:
        """A new schedule's first fire: at once (or at ``start_at``), or its first cron time."""
        start = max(now, start_at or now)
        return self.after(start - 1e-6, anchor=start) if self.cron else start

    def times(self, since: float, until: float, *, anchor: float, cap: int = 1000) -> list[float]:
        """The grid times in ``[since, until]`` (at most ``cap``): what a backfill fires."""
        found: list[float] = []
        t = self.after(since - 1e-6, anchor=anchor)
        while t <= until and len(found) < cap:
            found.append(t)
            t = self.after(t, anchor=anchor)
        return found


@dataclass(frozen=True)
class FirePlan:
    """What the beat does with the grid fire due at ``nominal``."""

    fire: bool  # False: missed (older than the catch-up window) or past ``end_at``
    missed: int  # grid times that went by without a fire
    next_nominal: float | None  # None: no grid time is left before ``end_at``


def plan_fire(
    grid: Grid,
    nominal: float,
    now: float,
    *,
    catchup_window: float | None,
    end_at: float | None,
) -> FirePlan:
    """The fire due at ``nominal``, looked at ``now``: one fire for however many grid times went
    by (the others are missed), unless it is older than ``catchup_window`` (then it is missed
    too); and the next grid time."""
    passed, upcoming = grid.passed(nominal, now)
    on_time = catchup_window is None or now - nominal <= catchup_window + LATE_GRACE
    fire = on_time and (end_at is None or nominal <= end_at)
    following = upcoming if end_at is None or upcoming <= end_at else None
    return FirePlan(fire=fire, missed=passed + (0 if fire else 1), next_nominal=following)


def day_of(now: float, timezone: str) -> str:
    """The calendar day ``now`` falls on in ``timezone`` (a budget's day)."""
    return datetime.fromtimestamp(now, ZoneInfo(timezone)).date().isoformat()
