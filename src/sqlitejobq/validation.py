"""Argument checks of the public API: each error names the bad value and what was expected."""

from __future__ import annotations

import math
import re

from .errors import InvalidArgument, InvalidArgumentType

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@/-]{0,199}$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def name(value: object, what: str) -> str:
    """A task or queue name: text of 1-200 characters, letters, digits and ``_.:@/-``."""
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    if not _NAME.match(value):
        raise InvalidArgument(
            f"{what} must be 1-200 characters of letters, digits and _.:@/- "
            f"(not starting with a symbol), got {value!r}"
        )
    return value


def names(values: object, what: str) -> tuple[str, ...] | None:
    """None (meaning all) or a non-empty list of names."""
    if values is None:
        return None
    if isinstance(values, str):
        return (name(values, what),)
    if not isinstance(values, list | tuple | set | frozenset):
        raise InvalidArgumentType(
            f"{what} must be a list of names or None, got {type(values).__name__}"
        )
    checked = tuple(dict.fromkeys(name(v, what) for v in values))
    if not checked:
        raise InvalidArgument(f"{what} must not be empty; pass None for all")
    return checked


def integer(value: object, what: str, *, minimum: int | None = None) -> int:
    """An int (not a bool) within SQLite's 64-bit range and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentType(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    low = _INT64_MIN if minimum is None else minimum
    if value < low:
        raise InvalidArgument(f"{what} must be >= {low}, got {value}")
    if value > _INT64_MAX:
        raise InvalidArgument(f"{what} must be <= {_INT64_MAX} (a 64-bit integer), got {value}")
    return value


def seconds(value: object, what: str, *, positive: bool = False) -> float:
    """A finite, non-negative number of seconds (strictly positive when asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentType(
            f"{what} must be a number of seconds, got {type(value).__name__}: {value!r}"
        )
    result = float(value)
    if not math.isfinite(result):
        raise InvalidArgument(f"{what} must be finite, got {value!r}")
    if positive and result <= 0:
        raise InvalidArgument(f"{what} must be > 0, got {value!r}")
    if result < 0:
        raise InvalidArgument(f"{what} must be >= 0, got {value!r}")
    return result


#: The most waits a retry schedule may list.
MAX_BACKOFF_WAITS = 100


def backoff(value: object, what: str) -> float | tuple[float, ...]:
    """A retry backoff: seconds (the first wait, doubled for each later one), or a list of
    waits in seconds, one per retry, the last one repeated."""
    if isinstance(value, list | tuple):
        if not value:
            raise InvalidArgument(f"{what} must list at least one wait, got an empty list")
        if len(value) > MAX_BACKOFF_WAITS:
            raise InvalidArgument(
                f"{what} may list at most {MAX_BACKOFF_WAITS} waits, got {len(value)}"
            )
        return tuple(seconds(wait, f"{what}[{n}]") for n, wait in enumerate(value))
    if isinstance(value, str | bytes):
        raise InvalidArgumentType(
            f"{what} must be seconds or a list of waits in seconds, got {type(value).__name__}"
        )
    return seconds(value, what)


def optional_text(value: object, what: str, *, max_length: int) -> str | None:
    """None or non-empty text of at most ``max_length`` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{what} must be a str or None, got {type(value).__name__}")
    if not value or len(value) > max_length:
        raise InvalidArgument(f"{what} must be 1-{max_length} characters, got {len(value)}")
    return unicode_text(value, what)


def unicode_text(value: str, what: str) -> str:
    """Text that can be stored: valid Unicode, with no lone surrogate."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(
                f"{what} is not valid Unicode text: {value[exc.start : exc.end]!r} at "
                f"position {exc.start} is a lone surrogate"
            ) from None
    return value


def storable_text(value: str) -> str:
    """``value`` with any lone surrogate written as a backslash escape: text of our own making
    (an error message, a traceback) is kept, not refused."""
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def fraction(value: object, what: str) -> float:
    """A number from 0.0 to 1.0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentType(f"{what} must be a number, got {type(value).__name__}")
    result = float(value)
    if not 0.0 <= result <= 1.0:
        raise InvalidArgument(f"{what} must be between 0.0 and 1.0, got {value!r}")
    return result


def choice(value: object, what: str, allowed: tuple[str, ...]) -> str:
    """One of a fixed set of words, compared case-insensitively, returned upper-case."""
    if not isinstance(value, str) or value.upper() not in allowed:
        raise InvalidArgument(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return value.upper()


_RATE = re.compile(
    r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$"
)
_UNIT_SECONDS = {
    name: seconds
    for names, seconds in (
        (("s", "sec", "second"), 1.0),
        (("m", "min", "minute"), 60.0),
        (("h", "hour"), 3600.0),
        (("d", "day"), 86400.0),
    )
    for name in names
}


def rate(value: object, what: str) -> tuple[int, float]:
    """A rate as (starts, per seconds), from text such as ``"5/s"``, ``"100/m"``,
    ``"10/30s"`` or a (count, seconds) pair."""
    if isinstance(value, tuple) and len(value) == 2:
        return integer(value[0], f"{what} count", minimum=1), seconds(
            value[1], f"{what} period", positive=True
        )
    if not isinstance(value, str):
        raise InvalidArgumentType(
            f"{what} must be text such as '5/s' or '100/m', or a (count, seconds) pair, "
            f"got {type(value).__name__}: {value!r}"
        )
    match = _RATE.match(value)
    if match is None:
        raise InvalidArgument(
            f"{what} must look like '5/s', '100/m', '1000/h' or '10/30s' (starts per period), "
            f"got {value!r}"
        )
    count = int(match.group(1))
    if count < 1:
        raise InvalidArgument(f"{what} must allow at least 1 start per period, got {value!r}")
    period = float(match.group(2) or 1) * _UNIT_SECONDS[match.group(3)]
    if period <= 0:
        raise InvalidArgument(f"{what} needs a period > 0, got {value!r}")
    return count, period
