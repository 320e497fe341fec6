"""The time slots of periodic jobs: when a cron expression or an interval fires.

Pure computation, no database: every host computes the same slots with no coordination.
Times are UTC epoch seconds throughout; slots are whole seconds.

Intervals fire at the multiples of the interval since the Unix epoch (every 300 s: at
00:00:00, 00:05:00, ... UTC). They are whole seconds, at least 1, so slots are exact.

Cron expressions have 5 fields, or 6 with a leading seconds field (``*/15 * * * * *``:
every 15 seconds). They are parsed by ``cronsim`` (the ``cron`` extra, imported only when
an expression is parsed) and read in an IANA time zone. Daylight saving time follows
Debian cron, as cronsim does:

* An expression whose minute and hour fields are both fixed (neither starts with ``*``,
  as in ``30 2 * * *``) fires once per matching local time, at the first instant the
  local clock shows that time or later. A time skipped by a spring-forward change fires
  when the gap ends (02:30 in America/New_York runs at 03:00 EDT); a time repeated by a
  fall-back change fires the first time only (01:30 EDT, not again at 01:30 EST).
* Any other expression (``0 * * * *``, ``*/15 * * * *``, ``* 2 * * *``) fires at every
  instant whose local time matches. A skipped time has no slot and a repeated time has
  two, so an hourly job keeps running every real hour: 01:00 EST then 03:00 EDT on
  spring-forward day, 01:00 EDT, 01:00 EST then 02:00 EST on fall-back day.

Differences from cronsim itself: cronsim exempts 6-field expressions from the fixed-time
rule (its ``0 30 2 * * *`` skips the spring-forward day and runs twice on the fall-back
day); here they follow it, so ``0 30 2 * * *`` runs once a day like ``30 2 * * *``. And
cronsim is used on local wall-clock time only: the mapping to instants is done here,
between the zone's UTC-offset changes, because cronsim's own zone handling misses slots
around half-hour changes (Australia/Lord_Howe). The offset changes are found by sampling
the zone once a day, which relies on what tzdata holds for every zone since 1970: offset
changes at least six days apart, each of at most 24 hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import validation
from .errors import InvalidArgument, InvalidArgumentType, SqliteJobQError

if TYPE_CHECKING:
    from cronsim import CronSim

__all__ = [
    "MAX_INTERVAL",
    "MAX_TIME",
    "MISSED_POLICIES",
    "Trigger",
    "due_slots",
    "parse_trigger",
    "validate_missed",
]

#: What becomes of the slots missed while no scheduler ran: "latest" creates the most
#: recent one (once), "skip" none.
MISSED_POLICIES = ("latest", "skip")
#: The longest interval, in seconds (about 100 years).
MAX_INTERVAL = 3_155_760_000
#: The latest time accepted (9000-01-01 UTC), far enough from datetime's limit for cron.
MAX_TIME = 221_845_392_000

_DAY = 86_400
_SECOND = timedelta(seconds=1)
_WALL_EPOCH = datetime(1970, 1, 1)  # wall-clock times are naive datetimes, as ints from here
#: Bound on the UTC-offset changes crossed by one search (cronsim itself gives up after
#: 50 years; the busiest zones change offset a few times a year).
_MAX_SEGMENTS = 1_000
_EXPECTED_CRON = (
    "expected 5 fields 'minute hour day-of-month month day-of-week', "
    "or 6 with a leading seconds field"
)


def parse_trigger(spec: str | float, timezone: str = "UTC") -> Trigger:
    """A trigger from a cron expression (read in ``timezone``) or an interval in seconds."""
    return Trigger(spec, timezone)


def validate_missed(value: object) -> str:
    """A ``missed`` policy: one of ``MISSED_POLICIES``."""
    if not isinstance(value, str):
        raise InvalidArgumentType(
            f"missed must be a str, one of {MISSED_POLICIES}, got {type(value).__name__}: {value!r}"
        )
    if value not in MISSED_POLICIES:
        raise InvalidArgument(
            f"missed must be one of {', '.join(map(repr, MISSED_POLICIES))}, got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Trigger:
    """When a periodic job fires: a cron expression in a time zone, or an interval.

    Immutable; equal when ``spec`` and ``timezone`` are (an interval's zone is "UTC").
    Build one with ``parse_trigger``; the constructor validates the same way.
    """

    spec: str | float
    timezone: str = "UTC"
    _interval: int = field(default=0, init=False, repr=False, compare=False)
    _cron: type[CronSim] | None = field(default=None, init=False, repr=False, compare=False)
    _zone: tzinfo = field(default=UTC, init=False, repr=False, compare=False)
    _fixed_time: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zone = _zone(self.timezone)
        spec = self.spec
        if isinstance(spec, bool) or not isinstance(spec, str | int | float):
            raise InvalidArgumentType(
                "a schedule must be a cron expression (str) or an interval in seconds "
                f"(int), got {type(spec).__name__}: {spec!r}"
            )
        if isinstance(spec, str):
            self._init_cron(spec, zone)
        else:
            interval = _interval(spec)
            object.__setattr__(self, "spec", float(interval))
            object.__setattr__(self, "timezone", "UTC")
            object.__setattr__(self, "_interval", interval)

    def _init_cron(self, spec: str, zone: tzinfo) -> None:
        """Check a cron expression with cronsim and keep what the slot searches need."""
        expr = " ".join(spec.split())
        try:
            float(expr)
        except ValueError:
            pass
        else:
            raise InvalidArgument(
                f"schedule {spec!r} is a number in a str: give an interval in seconds as a "
                f"number ({expr}, no quotes), or a cron expression ({_EXPECTED_CRON})"
            )
        cron, cron_error = _cronsim(expr)
        try:
            cron(expr, _WALL_EPOCH)
        except cron_error as exc:
            raise InvalidArgument(
                f"cron expression {spec!r} is not valid: {exc} ({_EXPECTED_CRON})"
            ) from None
        minute, hour = expr.split()[-5:-3]
        object.__setattr__(self, "spec", expr)
        object.__setattr__(self, "_cron", cron)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(
            self, "_fixed_time", not minute.startswith("*") and not hour.startswith("*")
        )
        if self._wall_next(0) is None:
            raise InvalidArgument(f"cron expression {spec!r} never matches a date")

    def next_after(self, t: float) -> float:
        """The first slot strictly after ``t`` (epoch seconds)."""
        after = math.floor(_time(t, "t"))
        slot = self._next(after)
        if slot is None:
            raise SqliteJobQError(f"{self.describe()} has no slot in the 50 years after {t}")
        return float(slot)

    def latest_at_or_before(self, t: float) -> float | None:
        """The last slot at or before ``t`` (epoch seconds); None if there is none since
        1970 (slots before the epoch are not returned), or in the 50 years before ``t``."""
        slot = self._latest(math.floor(_time(t, "t")))
        return None if slot is None or slot < 0 else float(slot)

    def describe(self) -> str:
        """The trigger for people: ``every 300s`` or ``0 16 * * * (Asia/Kolkata)``."""
        if self._interval:
            return f"every {self._interval}s"
        return f"{self.spec} ({self.timezone})"

    # -- slots as ints: whole epoch seconds -------------------------------------------------

    def _next(self, after: int) -> int | None:
        """The first slot > ``after``."""
        if self._interval:
            return (after // self._interval + 1) * self._interval
        for _ in range(_MAX_SEGMENTS):
            # Walk the segment of constant UTC offset holding after + 1.
            offset = self._offset(after + 1)
            lowest = after + offset  # the wall-clock times above this are slots after `after`
            start = self._last_change(after + 1 - _DAY, after + 1)
            if start is not None:
                # The segment began within a day: skip the wall-clock times it does not own.
                owned = start + (self._offset(start - 1) if self._fixed_time else offset)
                lowest = owned - 1 if start > after else max(lowest, owned - 1)
            wall = self._wall_next(lowest)
            if wall is None:
                return None
            slot = wall - offset if start is None else max(wall - offset, start)
            end = self._first_change(after + 1, slot)
            if end is None:
                return slot
            after = end - 1  # the slot is past this segment: look in the next one
        return None

    def _latest(self, at: int) -> int | None:
        """The last slot <= ``at``."""
        if self._interval:
            return at // self._interval * self._interval
        for _ in range(_MAX_SEGMENTS):
            offset = self._offset(at)
            wall = self._wall_prev(at + offset + 1)
            if wall is None:
                return None
            start = self._last_change(wall - offset - _DAY, at)
            if start is None:
                return wall - offset
            owned = start + (self._offset(start - 1) if self._fixed_time else offset)
            if wall >= owned:
                return max(wall - offset, start)
            at = start - 1  # that wall-clock time belongs to an earlier segment
        return None

    # -- the zone: UTC offsets and where they change ------------------------------------------

    def _offset(self, instant: int) -> int:
        """The zone's UTC offset (seconds) at ``instant``."""
        if self._zone is UTC:
            return 0
        offset = datetime.fromtimestamp(instant, self._zone).utcoffset()
        return 0 if offset is None else offset // _SECOND

    def _first_change(self, low: int, high: int) -> int | None:
        """The first instant in (low, high] whose offset differs from ``low``'s, if any."""
        if self._zone is UTC:
            return None
        offset = self._offset(low)
        probe = low
        while probe < high:
            nxt = min(probe + _DAY, high)
            if self._offset(nxt) != offset:
                while nxt - probe > 1:  # offsets: probe's == offset != nxt's
                    middle = (probe + nxt) // 2
                    if self._offset(middle) == offset:
                        probe = middle
                    else:
                        nxt = middle
                return nxt
            probe = nxt
        return None

    def _last_change(self, low: int, high: int) -> int | None:
        """The last instant in (low, high] whose offset differs from the second before."""
        if self._zone is UTC:
            return None
        offset = self._offset(high)
        probe = high
        while probe > low:
            prev = max(probe - _DAY, low)
            if self._offset(prev) != offset:
                while probe - prev > 1:  # offsets: prev's != offset == probe's
                    middle = (prev + probe) // 2
                    if self._offset(middle) == offset:
                        probe = middle
                    else:
                        prev = middle
                return probe
            probe = prev
        return None

    # -- cronsim on wall-clock time (naive datetimes, no zone) --------------------------------

    def _wall_next(self, wall: int) -> int | None:
        """The first wall-clock time > ``wall`` matching the expression."""
        assert self._cron is not None
        try:
            found = next(self._cron(str(self.spec), _WALL_EPOCH + wall * _SECOND))
        except StopIteration:
            return None
        return (found - _WALL_EPOCH) // _SECOND

    def _wall_prev(self, wall: int) -> int | None:
        """The last wall-clock time < ``wall`` matching the expression."""
        assert self._cron is not None
        try:
            found = next(self._cron(str(self.spec), _WALL_EPOCH + wall * _SECOND, reverse=True))
        except StopIteration:
            return None
        return (found - _WALL_EPOCH) // _SECOND


def due_slots(
    trigger: Trigger, last_slot: float | None, now: float, missed: str, grace: float
) -> list[float]:
    """The slots to create at ``now``, oldest first, after ``last_slot`` (None: never).

    Only the current slot (the last at or before ``now``) can be on time: when it began
    less than ``grace`` ago (``grace`` > 0), so the window of "on time" is never wider than
    the interval. Every earlier slot was missed: its successor has come. On first sight
    (``last_slot`` None) the on-time current slot is all there is. Of the missed slots after
    ``last_slot``, "latest" adds the most recent, once; "skip" none. So a look creates at
    most two jobs per schedule, and missed slots are never enumerated: downtime costs
    nothing.
    """
    if not isinstance(trigger, Trigger):
        raise InvalidArgumentType(f"trigger must be a Trigger, got {type(trigger).__name__}")
    policy = validate_missed(missed)
    now = _time(now, "now")
    grace = validation.seconds(grace, "grace", positive=True)
    last = None if last_slot is None else _time(last_slot, "last_slot")
    current = trigger._latest(math.floor(now))
    if current is None:
        return []
    due: list[float] = []
    if (last is None or current > last) and now - current < grace:
        due.append(float(current))
    if last is not None and policy == "latest":
        newest_missed = trigger._latest(current - 1) if due else current
        if newest_missed is not None and newest_missed > last:
            due.insert(0, float(newest_missed))
    return due


def _cronsim(expr: str) -> tuple[type[CronSim], type[Exception]]:
    """cronsim's ``CronSim`` and its error, imported now: the core runs without cronsim."""
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise SqliteJobQError(
            f"cron schedules need the cron extra: pip install 'sqlitejobq[cron]' "
            f"(to read the cron expression {expr!r})"
        ) from None
    return CronSim, CronSimError


def _zone(name: object) -> tzinfo:
    """The time zone named ``name`` (IANA)."""
    if not isinstance(name, str):
        raise InvalidArgumentType(
            f"timezone must be a str such as 'Europe/London', got {type(name).__name__}: {name!r}"
        )
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument(
            f"timezone {name!r} is not a known IANA time zone "
            "(expected a name such as 'Europe/London' or 'UTC')"
        ) from None


def _interval(value: float) -> int:
    """An interval: a whole number of seconds from 1 to ``MAX_INTERVAL``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"an interval must be finite seconds, got {value!r}")
        if not value.is_integer():
            raise InvalidArgument(
                f"an interval must be a whole number of seconds, got {value!r} (fractions "
                "are refused so that every host computes exactly the same slots)"
            )
    if not 1 <= value <= MAX_INTERVAL:
        raise InvalidArgument(
            f"an interval must be from 1 to {MAX_INTERVAL} seconds, got {value!r}"
        )
    return int(value)


def _time(value: object, what: str) -> float:
    """A time: epoch seconds from 0 to ``MAX_TIME``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentType(
            f"{what} must be epoch seconds (int or float), got {type(value).__name__}: {value!r}"
        )
    if not 0 <= value <= MAX_TIME:  # also refuses nan
        raise InvalidArgument(
            f"{what} must be epoch seconds from 0 to {MAX_TIME} (year 9000), got {value!r}"
        )
    return float(value)
