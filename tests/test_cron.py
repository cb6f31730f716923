"""Cron parsing and next-fire maths, all against fixed instants (no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from celery_agents.scheduler.cron import Cron, CronError, next_fire, parse_cron, seconds_until

BERLIN = "Europe/Berlin"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def fires(expression: str, after: datetime, count: int, timezone: str = "UTC") -> list[datetime]:
    """The next ``count`` firings, each one strictly after the previous."""
    out: list[datetime] = []
    for _ in range(count):
        after = next_fire(expression, after, timezone)
        out.append(after)
    return out


# --- parsing -------------------------------------------------------------------------------


def test_star_allows_every_value() -> None:
    cron = parse_cron("* * * * *")
    assert cron.minutes == frozenset(range(60))
    assert cron.hours == frozenset(range(24))
    assert cron.days == frozenset(range(1, 32))
    assert cron.months == frozenset(range(1, 13))
    assert cron.weekdays == frozenset(range(7))
    assert not cron.day_restricted
    assert not cron.weekday_restricted
    assert cron.expression == "* * * * *"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("5", {5}),
        ("1,15,30", {1, 15, 30}),
        ("10-14", {10, 11, 12, 13, 14}),
        ("*/15", {0, 15, 30, 45}),
        ("10-30/10", {10, 20, 30}),
        ("50/4", {50, 54, 58}),
        ("1-3,7,40-50/5", {1, 2, 3, 7, 40, 45, 50}),
        ("*/90", {0}),
    ],
)
def test_minute_field_forms(field: str, expected: set[int]) -> None:
    assert parse_cron(f"{field} * * * *").minutes == expected


def test_month_names_are_case_insensitive_and_work_in_ranges() -> None:
    assert parse_cron("0 0 1 jan,Jul,DEC *").months == {1, 7, 12}
    assert parse_cron("0 0 1 MAR-may *").months == {3, 4, 5}
    assert parse_cron("0 0 1 JAN-DEC/3 *").months == {1, 4, 7, 10}


def test_weekday_names_numbers_and_seven_as_sunday() -> None:
    assert parse_cron("0 0 * * MON-FRI").weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * sat,sun").weekdays == {6, 0}
    assert parse_cron("0 0 * * 7").weekdays == {0}
    assert parse_cron("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert parse_cron("0 0 * * */2").weekdays == {0, 2, 4, 6}
    assert parse_cron("0 0 * * 0-7/2").weekdays == {0, 2, 4, 6}


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("  @DAILY ", "0 0 * * *"),
    ],
)
def test_macros(macro: str, expansion: str) -> None:
    parsed = parse_cron(macro)
    plain = parse_cron(expansion)
    assert (parsed.minutes, parsed.hours, parsed.days, parsed.months, parsed.weekdays) == (
        plain.minutes,
        plain.hours,
        plain.days,
        plain.months,
        plain.weekdays,
    )
    assert parsed.expression == macro


def test_extra_whitespace_is_fine() -> None:
    assert parse_cron("  0\t2  *   * * ").hours == {2}


def test_restricted_flags_follow_vixie_cron() -> None:
    both = parse_cron("0 0 13 * FRI")
    assert both.day_restricted
    assert both.weekday_restricted
    # A field starting with '*' counts as unrestricted even with a step.
    stepped = parse_cron("0 0 */2 * MON")
    assert not stepped.day_restricted
    assert stepped.weekday_restricted


def test_cron_is_frozen_and_prints_its_expression() -> None:
    cron = parse_cron("@daily")
    assert str(cron) == "@daily"
    with pytest.raises(AttributeError):
        cron.expression = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 25 * * *", "cron '0 25 * * *': hour 25 is out of range 0-23"),
        ("60 * * * *", "minute 60 is out of range 0-59"),
        ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month 32 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
        ("*/0 * * * *", "minute step 0 is invalid"),
        ("0 */x * * *", "hour step 'x' is not a number"),
        ("0 0 */ * *", "day-of-month step '' is not a number"),
        ("abc * * * *", "minute 'abc' is not a number"),
        ("MON * * * *", "minute 'MON' is not a number"),
        ("\u00b2 * * * *", "minute '\u00b2' is not a number"),  # a digit to str.isdigit
        ("*/\u00b2 * * * *", "minute step '\u00b2' is not a number"),
        ("0 0 * FOO *", "month 'FOO' is not a number or month name"),
        ("0 0 * * FUNDAY", "day-of-week 'FUNDAY' is not a number or day-of-week name"),
        ("-1 * * * *", "minute '-1' is not a number or range"),
        ("0 0 5- * *", "day-of-month '5-' is not a number or range"),
        ("30-10 * * * *", "minute range '30-10' runs backwards"),
        ("1,,2 * * * *", "minute has an empty list item"),
        ("0 0 * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 0 * * * *", "expected 5 fields"),
        ("", "got 0"),
        ("@often", "unknown macro '@often'"),
    ],
)
def test_parse_errors_name_the_field_and_value(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(expression)
    assert message in str(caught.value)
    assert f"cron {expression!r}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- next_fire -----------------------------------------------------------------------------


def test_every_minute() -> None:
    assert next_fire("* * * * *", utc(2026, 1, 1, 10, 0, 30)) == utc(2026, 1, 1, 10, 1)
    assert fires("* * * * *", utc(2026, 1, 1, 23, 58, 59, 999999), 3) == [
        utc(2026, 1, 1, 23, 59),
        utc(2026, 1, 2, 0, 0),
        utc(2026, 1, 2, 0, 1),
    ]


def test_result_is_utc_on_a_whole_minute() -> None:
    after = datetime(2026, 5, 5, 7, 12, 34, 567, tzinfo=ZoneInfo("Asia/Kolkata"))
    fire = next_fire("*/7 * * * *", after, "Asia/Kolkata")
    assert fire.tzinfo is UTC
    assert (fire.second, fire.microsecond) == (0, 0)
    assert fire == datetime(2026, 5, 5, 7, 14, tzinfo=ZoneInfo("Asia/Kolkata"))


def test_strictly_after_a_fire_time() -> None:
    assert next_fire("* * * * *", utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10, 1)
    assert next_fire("15 * * * *", utc(2026, 1, 1, 10, 15)) == utc(2026, 1, 1, 11, 15)
    assert next_fire("0 2 * * *", utc(2026, 1, 16, 1, 0), BERLIN) == utc(2026, 1, 17, 1, 0)


def test_hourly_at_quarter_past() -> None:
    assert next_fire("15 * * * *", utc(2026, 1, 1, 10, 14, 59, 999999)) == utc(2026, 1, 1, 10, 15)
    assert next_fire("15 * * * *", utc(2026, 1, 1, 10, 16)) == utc(2026, 1, 1, 11, 15)
    assert next_fire("15 * * * *", utc(2026, 1, 1, 23, 30)) == utc(2026, 1, 2, 0, 15)


def test_daily_in_berlin_winter_and_summer() -> None:
    # 02:00 CET is 01:00 UTC; 02:00 CEST is 00:00 UTC.
    assert next_fire("0 2 * * *", utc(2026, 1, 15, 12), BERLIN) == utc(2026, 1, 16, 1, 0)
    assert next_fire("0 2 * * *", utc(2026, 7, 15, 12), BERLIN) == utc(2026, 7, 16, 0, 0)


def test_after_in_another_timezone() -> None:
    after = datetime(2026, 1, 15, 19, 30, tzinfo=ZoneInfo("America/New_York"))  # 00:30Z on 16th
    assert next_fire("0 2 * * *", after, BERLIN) == utc(2026, 1, 16, 1, 0)
    assert next_fire("0 0 * * *", after) == utc(2026, 1, 17, 0, 0)


def test_monthly_on_the_31st_skips_short_months() -> None:
    assert fires("0 0 31 * *", utc(2026, 1, 31), 5) == [
        utc(2026, 3, 31),
        utc(2026, 5, 31),
        utc(2026, 7, 31),
        utc(2026, 8, 31),
        utc(2026, 10, 31),
    ]


def test_february_29th_only_in_leap_years() -> None:
    assert next_fire("0 12 29 2 *", utc(2026, 1, 1)) == utc(2028, 2, 29, 12)
    assert next_fire("0 12 29 2 *", utc(2028, 2, 29, 12)) == utc(2032, 2, 29, 12)
    # 2100 is not a leap year: an eight-year gap.
    assert next_fire("0 12 29 2 *", utc(2096, 3, 1)) == utc(2104, 2, 29, 12)


def test_weekday_range() -> None:
    # 2026-01-16 is a Friday.
    assert fires("0 9 * * MON-FRI", utc(2026, 1, 16, 10), 3) == [
        utc(2026, 1, 19, 9),
        utc(2026, 1, 20, 9),
        utc(2026, 1, 21, 9),
    ]
    assert next_fire("0 9 * * 1-5", utc(2026, 1, 16, 8)) == utc(2026, 1, 16, 9)
    assert next_fire("0 0 * * 7", utc(2026, 1, 16)) == utc(2026, 1, 18)


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # Fridays in January 2026 are 2, 9, 16, 23, 30; the 13th is a Tuesday.
    days = [fire.day for fire in fires("0 0 13 * FRI", utc(2026, 1, 1), 6)]
    assert days == [2, 9, 13, 16, 23, 30]


def test_day_of_month_and_day_of_week_when_one_is_a_star() -> None:
    assert [f.day for f in fires("0 0 13 * *", utc(2026, 1, 1), 2)] == [13, 13]
    assert [f.day for f in fires("0 0 * * FRI", utc(2026, 1, 1), 2)] == [2, 9]
    # '*/2' starts with '*', so Vixie cron ANDs it: odd days that are Mondays.
    # Mondays in early 2026: Jan 5, 12, 19, 26, Feb 2, 9, 16, 23, Mar 2...
    assert fires("0 0 */2 * MON", utc(2026, 1, 1), 3) == [
        utc(2026, 1, 5),
        utc(2026, 1, 19),
        utc(2026, 2, 9),
    ]


def test_year_rollover() -> None:
    assert next_fire("0 0 1 1 *", utc(2026, 6, 1)) == utc(2027, 1, 1)
    assert next_fire("59 23 31 12 *", utc(2026, 12, 31, 23, 59)) == utc(2027, 12, 31, 23, 59)
    assert next_fire("@hourly", utc(2026, 12, 31, 23, 0)) == utc(2027, 1, 1, 0, 0)
    # Rollover happens in local time: midnight of Jan 1 in Tokyo is 15:00 UTC on Dec 31.
    assert next_fire("@yearly", utc(2026, 6, 1), "Asia/Tokyo") == utc(2026, 12, 31, 15)


def test_accepts_a_parsed_cron() -> None:
    cron = parse_cron("30 8 * * *")
    assert isinstance(cron, Cron)
    assert next_fire(cron, utc(2026, 1, 1)) == utc(2026, 1, 1, 8, 30)


@pytest.mark.parametrize(
    "expression",
    ["*/13 */5 * * *", "0 0 13 * FRI", "5 4 * * SUN", "0 */3 1-3,28-31 * MON", "*/20 9-17 * * 1-5"],
)
def test_agrees_with_a_minute_by_minute_scan(expression: str) -> None:
    cron = parse_cron(expression)

    def matches(moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7
        by_date = moment.day in cron.days
        by_weekday = weekday in cron.weekdays
        either = cron.day_restricted and cron.weekday_restricted
        return (
            moment.minute in cron.minutes
            and moment.hour in cron.hours
            and moment.month in cron.months
            and ((by_date or by_weekday) if either else (by_date and by_weekday))
        )

    start = utc(2026, 2, 26)
    expected = [
        start + timedelta(minutes=n)
        for n in range(1, 5 * 24 * 60)
        if matches(start + timedelta(minutes=n))
    ]
    assert fires(expression, start, len(expected)) == expected


# --- daylight saving (Europe/Berlin, 2026) ---------------------------------------------------
# Spring forward: 2026-03-29 01:00Z, local 02:00 CET -> 03:00 CEST; 02:00-02:59 never happens.
# Fall back: 2026-10-25 01:00Z, local 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.


def test_spring_forward_missing_time_fires_when_the_gap_ends() -> None:
    assert next_fire("30 2 * * *", utc(2026, 3, 28, 12), BERLIN) == utc(2026, 3, 29, 1, 0)
    # Exactly once that day, then back to normal (02:30 CEST = 00:30Z).
    assert next_fire("30 2 * * *", utc(2026, 3, 29, 1, 0), BERLIN) == utc(2026, 3, 30, 0, 30)


def test_spring_forward_collapses_missing_minutes_into_one_firing() -> None:
    # 01:59 CET is 00:59Z; the next existing minute is 03:00 CEST = 01:00Z.
    assert fires("* * * * *", utc(2026, 3, 29, 0, 58), 3, BERLIN) == [
        utc(2026, 3, 29, 0, 59),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 1),
    ]
    assert fires("*/30 * * * *", utc(2026, 3, 29, 0, 30), 2, BERLIN) == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 30),
    ]
    # A fixed minute each hour: 02:05 does not exist, so it catches up at 03:00.
    assert fires("5 * * * *", utc(2026, 3, 29, 0, 5), 2, BERLIN) == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 5),
    ]


def test_fall_back_repeated_time_fires_once_at_the_first_occurrence() -> None:
    # 02:30 CEST (first pass) = 00:30Z; 02:30 CET (second pass, 01:30Z) does not fire.
    assert next_fire("30 2 * * *", utc(2026, 10, 24, 12), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert next_fire("30 2 * * *", utc(2026, 10, 25, 0, 30), BERLIN) == utc(2026, 10, 26, 1, 30)


def test_fall_back_second_pass_of_the_hour_is_skipped() -> None:
    # From inside the first pass, the next slot is 03:00 CET (02:00Z), not 02:00 CET again.
    assert fires("*/30 * * * *", utc(2026, 10, 25, 0, 0), 2, BERLIN) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 2, 0),
    ]
    # From inside the second pass (02:15 CET = 01:15Z) too.
    assert next_fire("*/30 * * * *", utc(2026, 10, 25, 1, 15), BERLIN) == utc(2026, 10, 25, 2, 0)
    assert next_fire("* * * * *", utc(2026, 10, 25, 1, 15), BERLIN) == utc(2026, 10, 25, 2, 0)


def test_every_minute_across_fall_back_never_goes_backwards() -> None:
    series = fires("* * * * *", utc(2026, 10, 25, 0, 58), 4, BERLIN)
    assert series == [
        utc(2026, 10, 25, 0, 59),  # 02:59 CEST
        utc(2026, 10, 25, 2, 0),  # 03:00 CET; the repeated 02:xx CET hour is skipped
        utc(2026, 10, 25, 2, 1),
        utc(2026, 10, 25, 2, 2),
    ]


# --- seconds_until and errors ----------------------------------------------------------------


def test_seconds_until() -> None:
    assert seconds_until("* * * * *", utc(2026, 1, 1, 10, 0, 30)) == 30.0
    assert seconds_until("0 2 * * *", utc(2026, 1, 16, 0, 0), BERLIN) == 3600.0
    assert seconds_until(parse_cron("@hourly"), utc(2026, 1, 1, 10, 0)) == 3600.0


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 FEB *"])
def test_expression_that_never_fires_raises(expression: str) -> None:
    with pytest.raises(CronError, match="never fires"):
        next_fire(expression, utc(2026, 1, 1))


def test_naive_datetime_raises_value_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware") as caught:
        next_fire("* * * * *", datetime(2026, 1, 1))
    assert not isinstance(caught.value, CronError)
    with pytest.raises(ValueError, match="timezone-aware"):
        seconds_until("* * * * *", datetime(2026, 1, 1))


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_bad_timezone_raises_cron_error_naming_it(name: str) -> None:
    with pytest.raises(CronError, match="unknown timezone") as caught:
        next_fire("* * * * *", utc(2026, 1, 1), name)
    assert repr(name) in str(caught.value)
