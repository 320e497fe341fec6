"""Words for the messages the script and the API write: counts with their noun, and values
quoted back to the user who sent them."""

from __future__ import annotations

__all__ = ["LONGEST_SHOWN", "count", "noun", "shown"]

#: A value quoted in an error is cut after this many characters (a request may send megabytes).
LONGEST_SHOWN = 40


def noun(number: int, singular: str, plural: str | None = None) -> str:
    """The noun that goes with ``number``: "stock" for 1, else "stocks" (or ``plural``)."""
    if number == 1:
        return singular
    return plural if plural is not None else f"{singular}s"


def count(number: int, singular: str, plural: str | None = None) -> str:
    """``number`` and its noun: "1 stock", "12 stocks", "0 stocks"."""
    return f"{number} {noun(number, singular, plural)}"


def shown(value: object) -> str:
    """``value`` as Python writes it (``repr``), cut to ``LONGEST_SHOWN`` characters, so an
    error can name what it refused without echoing a huge input."""
    text = repr(value)
    if len(text) <= LONGEST_SHOWN:
        return text
    size = f", {len(value)} characters" if isinstance(value, str) else ""
    return f"{text[:LONGEST_SHOWN]}... (cut{size})"
