"""Slots of periodic jobs: intervals, cron in time zones across DST, and due_slots."""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlitejobq.errors import InvalidArgument, InvalidArgumentType, SqliteJobQError
from sqlitejobq.triggers import (
    MAX_INTERVAL,
    MISSED_POLICIES,
    Trigger,
    due_slots,
    parse_trigger,
    validate_missed,
)

DAY = 86_400
T0 = 1_800_000_000  # 2027-01-15 08:00:00 UTC, a multiple of 300 and of 3600
WALL_EPOCH = datetime(1970, 1, 1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a UTC date and time."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def local(t: float, zone: str) -> datetime:
    return datetime.fromtimestamp(t, ZoneInfo(zone))


def slots_between(trigger: Trigger, low: float, high: float) -> list[float]:
    """Every slot in (low, high], by walking next_after."""
    found = []
    slot = trigger.next_after(low)
    while slot <= high:
        found.append(slot)
        slot = trigger.next_after(slot)
    return found


# --- intervals ------------------------------------------------------------------------------


def test_interval_slots_are_the_multiples_of_the_interval_since_the_epoch() -> None:
    every = parse_trigger(300)
    assert every.next_after(T0) == T0 + 300
    assert every.next_after(T0 - 0.5) == T0
    assert every.next_after(T0 + 299.999) == T0 + 300
    assert every.next_after(0) == 300
    assert every.latest_at_or_before(T0) == T0
    assert every.latest_at_or_before(T0 + 299.999) == T0
    assert every.latest_at_or_before(T0 - 0.001) == T0 - 300
    assert every.latest_at_or_before(0) == 0
    daily = parse_trigger(DAY)
    assert local(daily.next_after(utc(2026, 5, 4, 13, 7)), "UTC") == datetime(
        2026, 5, 5, tzinfo=ZoneInfo("UTC")
    )


def test_interval_slots_are_whole_seconds_even_for_float_times() -> None:
    every = parse_trigger(7)
    for t in (T0 + 0.1, T0 + 6.999999, 1e9 + 0.5, 12345.678):
        slot = every.next_after(t)
        assert slot == int(slot) and int(slot) % 7 == 0 and t < slot <= t + 7


def test_two_hosts_started_apart_compute_the_same_interval_slots() -> None:
    host_a, host_b = parse_trigger(45), parse_trigger(45.0)
    a = slots_between(host_a, T0 + 3.7, T0 + 3600)
    b = slots_between(host_b, T0 + 1000.2, T0 + 3600)
    assert b == a[-len(b) :] and len(b) > 50
    assert all(int(s) % 45 == 0 for s in a)
    assert [y - x for x, y in itertools.pairwise(a)] == [45.0] * (len(a) - 1)


def test_interval_equality_describe_and_timezone() -> None:
    assert parse_trigger(300) == parse_trigger(300.0) == Trigger(300)
    assert parse_trigger(300, "Europe/London") == parse_trigger(300)  # the zone is moot
    assert parse_trigger(300, "Europe/London").timezone == "UTC"
    assert hash(parse_trigger(300)) == hash(parse_trigger(300.0))
    assert parse_trigger(300) != parse_trigger(301)
    assert parse_trigger(300).describe() == "every 300s"
    assert parse_trigger(300).spec == 300.0


# --- cron -----------------------------------------------------------------------------------


def test_cron_in_utc() -> None:
    daily = parse_trigger("0 16 * * *")
    assert daily.next_after(utc(2026, 5, 4, 15, 59, 59)) == utc(2026, 5, 4, 16)
    assert daily.next_after(utc(2026, 5, 4, 16)) == utc(2026, 5, 5, 16)
    assert daily.latest_at_or_before(utc(2026, 5, 4, 16)) == utc(2026, 5, 4, 16)
    assert daily.latest_at_or_before(utc(2026, 5, 4, 15, 59, 59)) == utc(2026, 5, 3, 16)
    assert daily.describe() == "0 16 * * * (UTC)"


def test_cron_in_kolkata_reads_the_local_time() -> None:
    daily = parse_trigger("0 16 * * *", "Asia/Kolkata")
    slot = daily.next_after(utc(2026, 5, 4))
    assert slot == utc(2026, 5, 4, 10, 30)  # 16:00 IST is 10:30 UTC
    assert local(slot, "Asia/Kolkata").hour == 16
    assert daily.latest_at_or_before(utc(2026, 5, 4, 10, 29)) == utc(2026, 5, 3, 10, 30)
    assert daily.describe() == "0 16 * * * (Asia/Kolkata)"


def test_cron_with_a_seconds_field() -> None:
    every_15s = parse_trigger("*/15 * * * * *")
    assert slots_between(every_15s, utc(2026, 5, 4, 12), utc(2026, 5, 4, 12, 1)) == [
        utc(2026, 5, 4, 12, 0, s) for s in (15, 30, 45)
    ] + [utc(2026, 5, 4, 12, 1)]
    at_second = parse_trigger("30 0 16 * * *", "Asia/Kolkata")
    assert at_second.next_after(utc(2026, 5, 4)) == utc(2026, 5, 4, 10, 30, 30)


def test_cron_equality_normalizes_whitespace_and_keeps_the_zone() -> None:
    a = parse_trigger("0 16 * * *", "Asia/Kolkata")
    assert a == parse_trigger("  0  16 *\t* * ", "Asia/Kolkata") and a.spec == "0 16 * * *"
    assert a != parse_trigger("0 16 * * *", "UTC")
    assert len({a, parse_trigger("0 16 * * *", "Asia/Kolkata")}) == 1
    assert repr(a) == "Trigger(spec='0 16 * * *', timezone='Asia/Kolkata')"


def test_trigger_is_immutable_and_pickles() -> None:
    trigger = parse_trigger("30 2 * * *", "America/New_York")
    with pytest.raises(dataclasses.FrozenInstanceError):
        trigger.spec = "0 3 * * *"  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(trigger))
    assert copy == trigger and copy.next_after(T0) == trigger.next_after(T0)
    moved = dataclasses.replace(trigger, timezone="Europe/London")
    assert moved.next_after(utc(2026, 5, 4)) == utc(2026, 5, 4, 1, 30)  # 02:30 BST


# --- daylight saving time -------------------------------------------------------------------


def per_local_day(trigger: Trigger, zone: str, first: date, days: int) -> Counter[date]:
    """How many slots fall on each local date from ``first`` on."""
    start = datetime.combine(first, datetime.min.time(), ZoneInfo(zone)).timestamp()
    end = datetime.combine(
        first + timedelta(days=days), datetime.min.time(), ZoneInfo(zone)
    ).timestamp()
    return Counter(local(s, zone).date() for s in slots_between(trigger, start - 1, end - 1))


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("America/New_York", date(2026, 3, 8)),  # 02:00 EST -> 03:00 EDT
        ("America/New_York", date(2026, 11, 1)),  # 02:00 EDT -> 01:00 EST
        ("Europe/London", date(2026, 3, 29)),  # 01:00 GMT -> 02:00 BST
        ("Europe/London", date(2026, 10, 25)),  # 02:00 BST -> 01:00 GMT
    ],
)
@pytest.mark.parametrize("spec", ["30 2 * * *", "30 1 * * *", "0 30 2 * * *", "0 30 1 * * *"])
def test_a_daily_job_runs_once_a_day_across_dst_changes(zone: str, change: date, spec: str) -> None:
    counts = per_local_day(parse_trigger(spec, zone), zone, change - timedelta(days=1), 3)
    assert counts == {change + timedelta(days=d): 1 for d in (-1, 0, 1)}


def test_new_york_spring_forward_runs_a_skipped_time_when_the_gap_ends() -> None:
    daily = parse_trigger("30 2 * * *", "America/New_York")
    slot = daily.next_after(utc(2026, 3, 8))
    assert slot == utc(2026, 3, 8, 7)  # 03:00 EDT, the first minute after the gap
    assert local(slot, "America/New_York").strftime("%H:%M %Z") == "03:00 EDT"
    assert daily.latest_at_or_before(utc(2026, 3, 8, 12)) == slot


def test_new_york_fall_back_runs_a_repeated_time_the_first_time_only() -> None:
    daily = parse_trigger("30 1 * * *", "America/New_York")
    slot = daily.next_after(utc(2026, 11, 1))
    assert local(slot, "America/New_York").strftime("%H:%M %Z") == "01:30 EDT"
    # from inside the repeated hour (01:15 EST, after 01:30 EDT) the next is the next day
    assert daily.next_after(utc(2026, 11, 1, 6, 15)) == utc(2026, 11, 2, 6, 30)
    assert daily.latest_at_or_before(utc(2026, 11, 1, 6, 45)) == slot


def test_an_hourly_job_runs_every_real_hour_across_dst_changes() -> None:
    hourly = parse_trigger("0 * * * *", "America/New_York")
    spring = slots_between(hourly, utc(2026, 3, 8, 4), utc(2026, 3, 9, 4))
    fall = slots_between(hourly, utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    for slots in (spring, fall):
        assert {b - a for a, b in itertools.pairwise(slots)} == {3600.0}
    assert len(per_local_day(hourly, "America/New_York", date(2026, 3, 8), 1)) == 1
    assert sum(per_local_day(hourly, "America/New_York", date(2026, 3, 8), 1).values()) == 23
    assert sum(per_local_day(hourly, "America/New_York", date(2026, 11, 1), 1).values()) == 25
    walls = [local(s, "America/New_York").strftime("%H:%M %Z") for s in fall[:4]]
    assert walls == ["01:00 EDT", "01:00 EST", "02:00 EST", "03:00 EST"]


def cronsim_slots(spec: str, zone: str, low: float, high: float) -> list[float]:
    """The slots cronsim itself gives, in (low, high]."""
    found: list[float] = []
    for moment in CronSim(spec, datetime.fromtimestamp(low, ZoneInfo(zone))):
        if moment.timestamp() > high:
            return found
        found.append(moment.timestamp())
    return found


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/London", "Asia/Kolkata"])
@pytest.mark.parametrize(
    "spec",
    ["30 2 * * *", "30 1 * * *", "0 0 * * *", "15,45 0-3 * * *", "0 * * * *", "*/20 * * * *",
     "*/30 1 * * *", "* 1 * * *", "0 */2 * * *", "0 9 * * MON-FRI"],
)  # fmt: skip
def test_five_field_expressions_agree_with_cronsim(zone: str, spec: str) -> None:
    trigger = parse_trigger(spec, zone)
    for day in (date(2026, 3, 8), date(2026, 3, 29), date(2026, 11, 1), date(2026, 10, 25)):
        low = datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC).timestamp()
        ours = slots_between(trigger, low, low + 3 * DAY)
        assert ours == cronsim_slots(spec, zone, low, low + 3 * DAY)


def offset_changes(zone: str, year: int) -> list[int]:
    """The instants in ``year`` at which the zone's UTC offset changes."""
    tz = ZoneInfo(zone)

    def offset(t: int) -> timedelta | None:
        return datetime.fromtimestamp(t, tz).utcoffset()

    changes, t = [], int(utc(year, 1, 1))
    end = int(utc(year + 1, 1, 1))
    while t < end:
        if offset(t + 3600) != offset(t):
            low, high = t, t + 3600
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(t) else (low, middle)
            changes.append(high)
        t += 3600
    return changes


def oracle_slots(spec: str, zone: str, low: int, high: int) -> list[int]:
    """The slots in (low, high] by the module's definition, found minute by minute.

    Fixed-time expressions: each matching local time once, at the first instant the clock
    shows it or later. Others: every instant whose local time matches.
    """
    tz = ZoneInfo(zone)
    minute, hour = spec.split()[-5:-3]
    fixed_time = not minute.startswith("*") and not hour.startswith("*")

    def matches(wall: int) -> bool:
        moment = WALL_EPOCH + timedelta(seconds=wall)
        return next(CronSim(spec, moment - timedelta(seconds=1))) == moment

    def wall_of(t: int) -> int:
        offset = datetime.fromtimestamp(t, tz).utcoffset()
        assert offset is not None
        return t + offset // timedelta(seconds=1)

    found, shown = [], None  # shown: the latest local time the clock has shown
    for t in range(low - low % 60 - DAY, high + 1, 60):
        wall = wall_of(t)
        if fixed_time:
            start = wall if shown is None else shown + 60
            if any(matches(w) for w in range(start, wall + 1, 60)):
                found.append(t)
            shown = wall if shown is None else max(shown, wall)
        elif matches(wall):
            found.append(t)
    return [t for t in found if low < t <= high]


@pytest.mark.parametrize(
    ("zone", "year"),
    [
        ("Australia/Lord_Howe", 2026),  # changes of 30 minutes
        ("America/Santiago", 2026),  # at midnight
        ("Pacific/Chatham", 2026),  # +12:45 / +13:45
        ("Pacific/Apia", 2011),  # skipped 2011-12-30 whole
        ("Europe/Moscow", 2011),  # a change that never came back
    ],
)
def test_cron_slots_match_a_minute_by_minute_oracle_around_every_change(
    zone: str, year: int
) -> None:
    specs = ["30 2 * * *", "0 0 * * *", "15,45 0-3 * * *", "30 * * * *", "*/20 * * * *",
             "0 */2 * * *", "*/30 1 * * *", "0 30 0 * * *"]  # fmt: skip
    changes = offset_changes(zone, year)
    assert changes
    for change in changes:
        low, high = change - DAY, change + DAY
        for spec in specs:
            trigger = parse_trigger(spec, zone)
            expected = oracle_slots(spec, zone, low, high)
            assert slots_between(trigger, low, high) == expected, (spec, change)
            for previous, slot in zip([low, *expected], expected, strict=False):
                assert trigger.latest_at_or_before(slot) == slot
                assert trigger.latest_at_or_before(slot - 1) == (
                    previous if previous > low else trigger.latest_at_or_before(low)
                )


# --- due_slots ------------------------------------------------------------------------------


def test_first_sight_creates_only_the_current_slot_if_on_time() -> None:
    every = parse_trigger(10)
    assert due_slots(every, None, T0 + 25, "latest", 30) == [T0 + 20]
    assert due_slots(every, None, T0 + 25, "latest", 1) == []
    # on time is (now - grace, now]: a slot exactly grace old is late, not created
    assert due_slots(every, None, T0 + 20, "latest", 10) == [T0 + 20]
    assert due_slots(every, None, T0 + 29, "latest", 10) == [T0 + 20]
    assert due_slots(every, None, T0 + 30, "latest", 10) == [T0 + 30]
    daily = parse_trigger("0 16 * * *")
    assert due_slots(daily, None, utc(2026, 5, 4, 17), "latest", 60) == []
    assert due_slots(daily, None, utc(2026, 5, 4, 16, 0, 30), "latest", 60) == [utc(2026, 5, 4, 16)]


def test_an_every_second_schedule_seen_first_creates_one_job_not_a_minute_of_them() -> None:
    for trigger in (parse_trigger(1), parse_trigger("* * * * * *", "Europe/London")):
        assert due_slots(trigger, None, T0 + 0.5, "latest", 60) == [T0]


def test_the_on_time_window_is_never_wider_than_the_interval() -> None:
    every = parse_trigger(10)
    # a grace of a minute: the slots of T0 + 10 and T0 + 20 were missed all the same
    assert due_slots(every, T0, T0 + 5, "latest", 60) == []
    assert due_slots(every, T0, T0 + 10, "latest", 60) == [T0 + 10]
    assert due_slots(every, T0, T0 + 30, "skip", 60) == [T0 + 30]
    assert due_slots(every, T0, T0 + 30, "latest", 60) == [T0 + 20, T0 + 30]
    assert due_slots(every, T0 + 30, T0 + 30.5, "latest", 60) == []
    assert due_slots(every, T0 + 40, T0 + 30, "latest", 60) == []  # last slot in the future


def test_missed_slots_with_latest_create_the_most_recent_once() -> None:
    every = parse_trigger(10)
    # down from T0 to T0 + 1000: T0 + 10 .. T0 + 990 were missed, T0 + 1000 is on time
    assert due_slots(every, T0, T0 + 1000, "latest", 60) == [T0 + 990, T0 + 1000]
    # down past the current slot's grace too: the current slot is the one missed slot run
    assert due_slots(every, T0, T0 + 1009, "latest", 5) == [T0 + 1000]
    daily = parse_trigger("0 16 * * *", "Asia/Kolkata")
    missed_week = due_slots(daily, utc(2026, 5, 1, 10, 30), utc(2026, 5, 8, 12), "latest", 60)
    assert missed_week == [utc(2026, 5, 8, 10, 30)]
    # the missed slot is created once: the next look finds it as the last slot
    assert due_slots(daily, missed_week[-1], utc(2026, 5, 8, 12, 1), "latest", 60) == []


def test_missed_slots_with_skip_create_none() -> None:
    every = parse_trigger(10)
    assert due_slots(every, T0, T0 + 1000, "skip", 60) == [T0 + 1000]
    daily = parse_trigger("0 16 * * *", "Asia/Kolkata")
    assert due_slots(daily, utc(2026, 5, 1, 10, 30), utc(2026, 5, 8, 12), "skip", 60) == []


def test_an_every_second_schedule_down_for_a_month_costs_little() -> None:
    for trigger in (parse_trigger(1), parse_trigger("* * * * * *", "Europe/London")):
        started = time.perf_counter()
        due = due_slots(trigger, T0 - 30 * DAY, T0, "latest", 60)
        assert time.perf_counter() - started < 1.0
        assert due == [T0 - 1, T0]
        assert due_slots(trigger, T0 - 30 * DAY, T0, "skip", 60) == [T0]
        # down for 20 s: one catch-up job and the current slot's, not 21
        assert due_slots(trigger, T0 - 20, T0 + 0.2, "latest", 60) == [T0 - 1, T0]


# --- properties -----------------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Lord_Howe",
         "America/Santiago"]  # fmt: skip
CRON = ["0 16 * * *", "30 2 * * *", "30 1 * * *", "0 * * * *", "*/7 * * * *", "* * * * *",
        "0 0 1 * *", "0 9 * * MON-FRI", "*/10 * * * * *", "0 30 2 * * *", "5 4 L * *",
        "0 0 29 2 *"]  # fmt: skip
intervals = st.one_of(st.integers(1, 10**6), st.sampled_from([1, 60, 300, 3600, DAY]))
crons = st.builds(parse_trigger, st.sampled_from(CRON), st.sampled_from(ZONES))
triggers = st.one_of(st.builds(parse_trigger, intervals), crons)
times = st.floats(0, 4e9, allow_nan=False)  # 1970 .. 2096


@settings(deadline=None, max_examples=300)
@given(trigger=triggers, t=times, fraction=st.floats(0, 1, exclude_max=True))
def test_next_and_latest_agree(trigger: Trigger, t: float, fraction: float) -> None:
    following = trigger.next_after(t)
    assert following > t and following == int(following)
    assert trigger.latest_at_or_before(following) == following
    previous = trigger.latest_at_or_before(t)
    if previous is None:  # no slot from 1970 to t
        assert trigger.next_after(0) == following and t < DAY * 366 * 30
    else:
        assert previous <= t
        assert trigger.next_after(previous) == following  # nothing in (previous, following)
    between = t + (following - t) * fraction
    if t <= between < following:
        assert trigger.next_after(between) == following
    if isinstance(trigger.spec, float):
        interval = trigger.spec
        assert following % interval == 0 and following - t <= interval
        assert previous is not None and following - previous == interval


@settings(deadline=None, max_examples=300)
@given(
    trigger=triggers,
    now=st.floats(1e9, 4e9, allow_nan=False),
    back=st.one_of(st.none(), st.floats(0, 30 * DAY, allow_nan=False)),
    grace=st.floats(0.001, 600, allow_nan=False),
    missed=st.sampled_from(MISSED_POLICIES),
)
def test_due_slots_are_at_most_the_newest_missed_slot_and_the_current_one(
    trigger: Trigger, now: float, back: float | None, grace: float, missed: str
) -> None:
    last = None if back is None else trigger.latest_at_or_before(now - back)
    due = due_slots(trigger, last, now, missed, grace)
    assert due == sorted(set(due)) and len(due) <= 2
    assert all((last is None or s > last) and s <= now for s in due)
    assert all(trigger.latest_at_or_before(s) == s for s in due)  # slots, not times
    current = trigger.latest_at_or_before(now)
    assert current is not None
    fresh = last is None or current > last
    on_time = fresh and now - current < grace
    if not fresh:
        assert due == []
    if on_time:
        assert due[-1] == current  # the only slot that can be on time
    missed_ones = due[:-1] if on_time else due
    if last is None or missed == "skip":
        assert missed_ones == []
    else:  # "latest": the newest missed slot after the last one, once
        newest_missed = trigger.latest_at_or_before(current - 1) if on_time else current
        assert missed_ones == (
            [newest_missed] if newest_missed is not None and newest_missed > last else []
        )


@settings(deadline=None, max_examples=200)
@given(
    interval=st.integers(2, 3600),
    gaps=st.lists(st.floats(0.01, 3.0), min_size=1, max_size=40),
    downtime=st.floats(0, 50),
    missed=st.sampled_from(MISSED_POLICIES),
)
def test_looks_more_often_than_the_interval_create_each_slot_once(
    interval: int, gaps: list[float], downtime: float, missed: str
) -> None:
    # a scheduler that looks at least twice an interval creates every slot exactly once;
    # after a downtime it creates at most one catch-up slot with the current one
    trigger = parse_trigger(interval)
    now, last, created = T0 + 0.25, None, []
    for i, gap in enumerate(gaps):
        now += gap * interval / 6 + (downtime * interval if i == len(gaps) // 2 else 0)
        due = due_slots(trigger, last, now, missed, 60)
        assert len(due) <= 2
        created += due
        last = due[-1] if due else last
    assert created == sorted(set(created))
    if created and downtime == 0 and missed == "latest":
        assert created == [created[0], *slots_between(trigger, created[0], now)]
    assert set(created) <= set(slots_between(trigger, T0 - interval, now))


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("61 * * * *", "Bad minute"),
        ("* * *", "Wrong number of fields"),
        ("", "Wrong number of fields"),
        ("   ", "Wrong number of fields"),
        ("* * * * * * *", "Wrong number of fields"),
        ("0 25 * * *", "Bad hour"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("*/0 * * * *", "Bad minute"),
        ("@daily", "Wrong number of fields"),
    ],
)
def test_a_malformed_cron_expression_is_refused(spec: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint) as caught:
        parse_trigger(spec)
    assert repr(spec) in str(caught.value) and "5 fields" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "zone", ["Asia/Kolkatta", "America", "", "../etc/passwd", "utc", "x" * 300]
)
def test_an_unknown_time_zone_is_refused(zone: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a known IANA time zone") as caught:
        parse_trigger("0 16 * * *", zone)
    assert repr(zone) in str(caught.value)
    with pytest.raises(InvalidArgument, match="is not a known IANA time zone"):
        parse_trigger(60, zone)  # checked for intervals too, though they ignore it


def test_the_time_zone_error_names_it() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_trigger("0 16 * * *", "Asia/Kolkatta")
    assert str(caught.value).startswith("timezone 'Asia/Kolkatta' is not a known IANA time zone")


@pytest.mark.parametrize("zone", [None, 5, b"UTC"])
def test_a_time_zone_that_is_not_a_str_is_refused(zone: object) -> None:
    with pytest.raises(InvalidArgumentType, match="timezone must be a str"):
        parse_trigger("0 16 * * *", zone)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (0, "from 1 to"),
        (-5, "from 1 to"),
        (0.5, "whole number of seconds"),
        (2.5, "whole number of seconds"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (MAX_INTERVAL + 1, "from 1 to"),
        (10**400, "from 1 to"),
    ],
)
def test_a_bad_interval_is_refused(spec: float, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        parse_trigger(spec)
    assert repr(spec)[:20] in str(caught.value)


@pytest.mark.parametrize("spec", [True, False, None, [60], b"* * * * *", {"every": 60}])
def test_a_schedule_of_another_type_is_refused(spec: object) -> None:
    with pytest.raises(InvalidArgumentType, match=r"cron expression \(str\) or an interval"):
        parse_trigger(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["5", " 300 ", "2.5", "1e3"])
def test_a_number_in_a_str_is_refused_with_a_hint(spec: str) -> None:
    with pytest.raises(InvalidArgument, match="number in a str") as caught:
        parse_trigger(spec)
    assert f"({spec.strip()}, no quotes)" in str(caught.value)


def test_validate_missed() -> None:
    assert [validate_missed(p) for p in MISSED_POLICIES] == ["latest", "skip"]
    for bad in ("all", "LATEST", ""):
        with pytest.raises(InvalidArgument, match="'latest', 'skip'"):
            validate_missed(bad)
    for wrong in (None, 1, ["latest"]):
        with pytest.raises(InvalidArgumentType, match="missed must be a str"):
            validate_missed(wrong)
    with pytest.raises(InvalidArgument, match="missed must be one of"):
        due_slots(parse_trigger(60), None, T0, "catch_up", 60)


@pytest.mark.parametrize("t", [-1, math.nan, math.inf, 1e15])
def test_a_time_out_of_range_is_refused(t: float) -> None:
    for trigger in (parse_trigger(60), parse_trigger("0 16 * * *")):
        with pytest.raises(InvalidArgument, match="t must be epoch seconds"):
            trigger.next_after(t)
        with pytest.raises(InvalidArgument, match="t must be epoch seconds"):
            trigger.latest_at_or_before(t)
    with pytest.raises(InvalidArgument, match="now must be epoch seconds"):
        due_slots(parse_trigger(60), None, t, "latest", 60)
    with pytest.raises(InvalidArgument, match="last_slot must be epoch seconds"):
        due_slots(parse_trigger(60), t, T0, "latest", 60)


def test_bad_arguments_of_due_slots_are_refused() -> None:
    every = parse_trigger(60)
    with pytest.raises(InvalidArgumentType, match="t must be epoch seconds"):
        every.next_after("5")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match="now must be epoch seconds"):
        due_slots(every, None, True, "latest", 60)
    with pytest.raises(InvalidArgument, match="grace must be > 0"):
        due_slots(every, None, T0, "latest", -1)
    with pytest.raises(InvalidArgument, match="grace must be > 0"):
        due_slots(every, None, T0, "latest", 0)
    with pytest.raises(InvalidArgument, match="grace must be finite"):
        due_slots(every, None, T0, "latest", math.inf)
    with pytest.raises(InvalidArgumentType, match="trigger must be a Trigger"):
        due_slots(60, None, T0, "latest", 60)  # type: ignore[arg-type]


# --- without the cron extra -----------------------------------------------------------------


def test_without_cronsim_cron_schedules_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # makes `import cronsim` fail
    with pytest.raises(SqliteJobQError, match=r"pip install 'sqlitejobq\[cron\]'") as caught:
        parse_trigger("0 16 * * *", "Asia/Kolkata")
    assert str(caught.value).startswith("cron schedules need the cron extra")
    assert "'0 16 * * *'" in str(caught.value)
    assert not isinstance(caught.value, ValueError | TypeError)
    assert parse_trigger(60).next_after(T0) == T0 + 60  # intervals need no extra


def test_the_core_imports_without_cronsim() -> None:
    code = (
        "import sys; sys.modules['cronsim'] = None\n"
        "import sqlitejobq, sqlitejobq.triggers as s\n"
        "assert s.due_slots(s.parse_trigger(60), None, 120.0, 'latest', 1) == [120.0]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
