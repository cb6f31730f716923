"""Cron expressions: parsing, and the next fire time as a pure function of ``now``.

Nothing here reads the clock or does I/O, so every answer is reproducible from its inputs:

    >>> from datetime import UTC, datetime
    >>> next_fire("0 2 * * *", datetime(2026, 1, 15, 12, 0, tzinfo=UTC), "Europe/Berlin")
    datetime.datetime(2026, 1, 16, 1, 0, tzinfo=datetime.timezone.utc)

Expressions have the classic five fields, ``minute hour day-of-month month day-of-week``, and
are evaluated in the wall-clock time of an IANA timezone. See ``parse_cron`` for the syntax and
``next_fire`` for how daylight-saving transitions are handled.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "CronError", "next_fire", "parse_cron", "seconds_until"]

MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# The Gregorian calendar repeats exactly every 400 years (146097 days is a whole number of
# weeks), so an expression that has not matched within that window never will. Searching the
# whole window is cheap because the search skips whole months and days, not minutes.
SEARCH_YEARS = 400

_MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}


class CronError(ValueError):
    """A cron expression (or its timezone) is invalid, or the expression can never fire.

    The message names the expression and the offending field and value, e.g.
    ``cron '0 25 * * *': hour 25 is out of range 0-23``.
    """


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, _MONTH_NAMES),
    # 7 is accepted as a second spelling of Sunday and folded to 0 after parsing.
    _Field("day-of-week", 0, 7, _WEEKDAY_NAMES),
)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the set of values each field allows.

    ``weekdays`` counts from 0 = Sunday to 6 = Saturday. ``day_restricted`` and
    ``weekday_restricted`` drive the standard day rule: when both are true a day matches if
    *either* its day of the month or its day of the week is allowed; otherwise it must satisfy
    both sets (one of which then allows every day, unless it was written as ``*/n``).
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool
    expression: str

    def __str__(self) -> str:
        return self.expression


def parse_cron(expression: str) -> Cron:
    """Parse a five-field cron expression (or an ``@`` macro) into a ``Cron``.

    Fields are ``minute hour day-of-month month day-of-week``, separated by whitespace. Each
    field is a comma-separated list of items, and each item is one of:

    - ``*`` (every value), a number ``5``, or a range ``1-5`` (ranges may not wrap around);
    - any of those with a step: ``*/15``, ``1-30/2``, or ``10/20`` (meaning ``10-max/20``).

    Months accept ``JAN``-``DEC`` and days of the week ``SUN``-``SAT`` (case-insensitive), also
    inside ranges (``MON-FRI``); day-of-week 7 is Sunday, like 0. The macros ``@hourly``,
    ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly`` and ``@annually`` stand
    for their usual expansions.

    Day-of-month and day-of-week follow the Vixie cron rule: if both fields are restricted, a
    day matches when either does (``0 0 13 * FRI`` fires on every 13th *and* every Friday). A
    field whose text starts with ``*`` (including ``*/2``) does not count as restricted, so it
    is combined with the other field by AND, exactly as Vixie cron and cronie do.

    Raises ``CronError`` naming the field and value for anything malformed.
    """
    text = expression.strip()
    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            known = ", ".join(MACROS)
            raise CronError(
                f"cron {expression!r}: unknown macro {text!r} (expected one of {known})"
            )
        text = expanded
    parts = text.split()
    if len(parts) != len(_FIELDS):
        names = " ".join(field.name for field in _FIELDS)
        raise CronError(
            f"cron {expression!r}: expected {len(_FIELDS)} fields ({names}), got {len(parts)}"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(expression, field, part) for field, part in zip(_FIELDS, parts, strict=True)
    )
    return Cron(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(day % 7 for day in weekdays),
        day_restricted=not parts[2].startswith("*"),
        weekday_restricted=not parts[4].startswith("*"),
        expression=expression,
    )


def next_fire(cron: Cron | str, after: datetime, timezone: str = "UTC") -> datetime:
    """The first time strictly after ``after`` at which ``cron`` fires, as an aware UTC datetime.

    ``after`` must be timezone-aware (any timezone); a naive datetime raises ``ValueError``.
    The expression is matched against the wall-clock time of ``timezone``, an IANA name such
    as ``"Europe/Berlin"``; an unknown name raises ``CronError``. The result always has zero
    seconds and microseconds.

    Daylight-saving rule: *every wall-clock time the expression selects fires exactly once.*

    - A wall time that occurs twice (the repeated hour when clocks go back) fires only at its
      first occurrence (``fold=0``). Its second occurrence is skipped.
    - A wall time that does not exist (the hour skipped when clocks go forward) fires at the
      instant the gap ends, so a job set for 02:30 in a zone that jumps from 02:00 to 03:00
      runs at 03:00 that day instead of being lost. Several missing times collapse into that
      single firing, and an every-minute job therefore sees no extra run; a job that fires on
      a fixed minute every hour gets one catch-up run at the end of the gap.

    Raises ``CronError`` if the expression can never fire (``0 0 30 2 *``).
    """
    spec = parse_cron(cron) if isinstance(cron, str) else cron
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"next_fire needs a timezone-aware datetime, got naive {after!r}")
    zone = _zone(spec, timezone)
    local = after.astimezone(zone).replace(tzinfo=None, fold=0, second=0, microsecond=0)
    last_year = min(local.year + SEARCH_YEARS, MAXYEAR - 1)
    if local.year < last_year:
        start = local + timedelta(minutes=1)
        for wall in _wall_times(spec, start, last_year):
            fire = _to_utc(wall, zone)
            # Fails only when `after` lies in the second pass of a repeated hour: the wall
            # times after it in that hour already fired during the first pass.
            if fire > after:
                return fire
    raise CronError(
        f"cron {spec.expression!r} never fires (no match in the {SEARCH_YEARS} years after "
        f"{after.isoformat()})"
    )


def seconds_until(cron: Cron | str, now: datetime, timezone: str = "UTC") -> float:
    """Seconds from ``now`` to the next firing of ``cron`` (see ``next_fire``); always > 0."""
    return (next_fire(cron, now, timezone) - now).total_seconds()


def _parse_field(expression: str, field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(expression, field, item))
    return frozenset(values)


def _parse_item(expression: str, field: _Field, item: str) -> range:
    def fail(detail: str) -> CronError:
        return CronError(f"cron {expression!r}: {field.name} {detail}")

    if not item:
        raise fail(f"has an empty list item in {item!r}")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()):
            raise fail(f"step {step_text!r} is not a number")
        step = int(step_text)
        if step < 1:
            raise fail(f"step {step} is invalid (must be at least 1)")
    if base == "*":
        # Sunday's alias 7 stays out of '*', so '*/2' on weekdays means 0,2,4,6.
        high = 6 if field.name == "day-of-week" else field.high
        return range(field.low, high + 1, step)
    low_text, dash, high_text = base.partition("-")
    if dash and not (low_text and high_text):
        raise fail(f"{base!r} is not a number or range")
    low = _parse_value(field, low_text, fail)
    if dash:
        high = _parse_value(field, high_text, fail)
        if high < low:
            raise fail(f"range {base!r} runs backwards (write it as two ranges)")
    elif slash:
        high = field.high
    else:
        high = low
    return range(low, high + 1, step)


def _parse_value(field: _Field, text: str, fail: Callable[[str], CronError]) -> int:
    named = field.names.get(text.upper())
    if named is not None:
        return named
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to str.isdigit
        kind = "a number" + (f" or {field.name} name" if field.names else "")
        raise fail(f"{text!r} is not {kind}")
    value = int(text)
    if not field.low <= value <= field.high:
        raise fail(f"{value} is out of range {field.low}-{field.high}")
    return value


def _zone(spec: Cron, name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"cron {spec.expression!r}: unknown timezone {name!r}") from exc


def _wall_times(spec: Cron, start: datetime, last_year: int) -> Iterator[datetime]:
    """Matching naive wall times from ``start`` on, in order, through ``last_year``.

    Walks month -> day -> hour -> minute, entering only values the expression allows, so the
    cost is proportional to the matches produced (plus one day scan per allowed month).
    """
    months = sorted(spec.months)
    hours = sorted(spec.hours)
    minutes = sorted(spec.minutes)
    for year in range(start.year, last_year + 1):
        first_year = year == start.year
        for month in months:
            if first_year and month < start.month:
                continue
            first_month = first_year and month == start.month
            for day in _matching_days(spec, year, month):
                if first_month and day < start.day:
                    continue
                first_day = first_month and day == start.day
                for hour in hours:
                    if first_day and hour < start.hour:
                        continue
                    first_hour = first_day and hour == start.hour
                    for minute in minutes:
                        if first_hour and minute < start.minute:
                            continue
                        yield datetime(year, month, day, hour, minute)


def _matching_days(spec: Cron, year: int, month: int) -> list[int]:
    monday_based, length = calendar.monthrange(year, month)
    either = spec.day_restricted and spec.weekday_restricted
    if not either and min(spec.days) > length:
        return []
    first_weekday = (monday_based + 1) % 7
    matching = []
    for day in range(1, length + 1):
        by_date = day in spec.days
        by_weekday = (first_weekday + day - 1) % 7 in spec.weekdays
        if (by_date or by_weekday) if either else (by_date and by_weekday):
            matching.append(day)
    return matching


def _to_utc(wall: datetime, zone: tzinfo) -> datetime:
    """The UTC instant a matching wall time fires at, under the rule in ``next_fire``."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        # Exists (once, or twice, in which case fold=0 is the first occurrence).
        return first
    # In a gap, fold=0 reads the wall time with the offset from before the transition (so it
    # lands after it) and fold=1 with the offset from after it (so it lands before it). The
    # transition itself, where the gap ends, lies between them: bisect to the second.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = first
    target = after.astimezone(zone).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + timedelta(seconds=(after - before).total_seconds() // 2)
        if middle.astimezone(zone).utcoffset() == target:
            after = middle
        else:
            before = middle
    return after
