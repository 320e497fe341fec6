"""A batch's results for people and for scripts: a table that fits the terminal, CSV, JSON.

The table never cuts a value. Each column is as wide as its widest value (measured by rich
on the values themselves); when a terminal is too narrow for all of them, the most
important come first (``PRIORITY``: symbol, signal, score, close, 1-month return, RSI, ...)
and the others are left out, named in a note that says how to see them. Output that is not
a terminal gets every column, however wide.

CSV holds the table's values as stored, unformatted (full precision, empty for a missing
value), under the stored field names; JSON holds every field of each stored analysis.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from .indicators import SIGNAL_ORDER

__all__ = [
    "COLUMNS",
    "FORMATS",
    "PRIORITY",
    "Column",
    "Fitted",
    "fit_table",
    "left_out_note",
    "parse_columns",
    "print_table",
    "sort_results",
    "write_csv",
    "write_json",
]

FORMATS: tuple[str, ...] = ("table", "csv", "json")
#: Wider than any table: measurements at this width are the values' natural widths.
_UNLIMITED = 100_000


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+d}"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the results: its name for ``--columns``, its heading, the stored field
    it shows and how the table writes it."""

    name: str
    header: str
    stored: str
    numeric: bool = True
    format: Callable[[Any], str] = field(default=_number, repr=False)

    def cell(self, analysis: Mapping[str, Any]) -> str:
        """The table's text for this column of ``analysis``."""
        return self.format(analysis.get(self.stored))


#: Every column, in the table's order.
COLUMNS: tuple[Column, ...] = (
    Column("symbol", "symbol", "symbol", numeric=False, format=_text),
    Column("signal", "signal", "signal", numeric=False, format=_text),
    Column("score", "score", "score", format=_signed),
    Column("close", "close", "last_close"),
    Column("1w", "1w %", "return_1w_pct"),
    Column("1m", "1m %", "return_1m_pct"),
    Column("1y", "1y %", "return_1y_pct"),
    Column("sma50", "SMA50", "sma_50"),
    Column("sma200", "SMA200", "sma_200"),
    Column("rsi14", "RSI14", "rsi_14"),
    Column("macd_hist", "MACD hist", "macd_hist"),
    Column("vol", "vol %", "volatility_annual_pct"),
    Column("max_dd", "max DD %", "max_drawdown_pct"),
)
_BY_NAME = {column.name: column for column in COLUMNS}
_BY_STORED = {column.stored: column for column in COLUMNS}
#: Which columns a narrow terminal keeps first.
PRIORITY: tuple[str, ...] = ("symbol", "signal", "score", "close", "1m", "rsi14", "1w", "1y",
                             "macd_hist", "sma50", "sma200", "vol", "max_dd")  # fmt: skip
assert sorted(PRIORITY) == sorted(_BY_NAME), "PRIORITY ranks every column once"


def parse_columns(text: str) -> list[Column]:
    """The columns ``--columns`` names (``close,1m`` or the stored names, ``last_close``), in
    its order, the symbol first whether named or not; ValueError naming an unknown one."""
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not words:
        raise ValueError(f"--columns names no column: choose from {', '.join(_BY_NAME)}")
    chosen: list[Column] = [_BY_NAME["symbol"]]
    for word in words:
        column = _BY_NAME.get(word.lower()) or _BY_STORED.get(word.lower())
        if column is None:
            raise ValueError(f"unknown column {word!r}: choose from {', '.join(_BY_NAME)}")
        if column not in chosen:
            chosen.append(column)
    return chosen


def sort_results(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Most bullish signal first, then the higher score, then the symbol."""
    return sorted(
        results, key=lambda r: (SIGNAL_ORDER.get(r["signal"], 99), -r["score"], r["symbol"])
    )


def _table(results: Sequence[Mapping[str, Any]], columns: Sequence[Column],
           title: str | None) -> Table:  # fmt: skip
    table = Table(title=title)
    for column in columns:
        table.add_column(column.header, justify="right" if column.numeric else "left",
                         no_wrap=True)  # fmt: skip
    for analysis in results:
        table.add_row(*(column.cell(analysis) for column in columns))
    return table


def _width(console: Console, table: Table) -> int:
    """The width ``table`` takes with no column cut or wrapped, borders included."""
    return Measurement.get(console, console.options.update_width(_UNLIMITED), table).maximum


@dataclass(frozen=True, slots=True)
class Fitted:
    """A table that fits: the columns shown, those left out, and the width it takes."""

    table: Table
    shown: list[Column]
    left_out: list[Column]
    width: int


def fit_table(
    console: Console,
    results: Sequence[Mapping[str, Any]],
    columns: Sequence[Column] | None = None,
    *,
    width: int | None,
    title: str | None = None,
) -> Fitted:
    """The table of ``results`` in at most ``width`` cells (None: no limit).

    ``columns`` (default: every column, kept by ``PRIORITY``, shown in the table's order)
    are kept in their order while the table still fits; the first that does not ends the
    table, and it and the ones after it are left out. The symbol is always kept: the
    table is wider than ``width`` only when the symbols alone are.
    """
    if columns is None:
        ranked = [_BY_NAME[name] for name in PRIORITY]
        order: Sequence[Column] = COLUMNS
    else:
        ranked, order = list(columns), list(columns)
    kept = ranked[:1]
    for count in range(2, len(ranked) + 1):
        trial = ranked[:count]
        if width is not None and _width(console, _table(results, trial, title)) > width:
            break
        kept = trial
    shown = [column for column in order if column in kept]
    table = _table(results, shown, title)
    left_out = [column for column in order if column not in kept]
    return Fitted(table, shown, left_out, _width(console, table))


def print_table(console: Console, fitted: Fitted) -> None:
    """Print the table uncut: at the console's width, or wider if the symbols need it (the
    terminal then wraps its lines)."""
    if fitted.width <= console.width:
        console.print(fitted.table)
        return
    saved = console.width
    console.width = fitted.width
    try:
        console.print(fitted.table)
    finally:
        console.width = saved


def left_out_note(fitted: Fitted, width: int) -> str | None:
    """What the table left out to fit ``width`` columns and how to see it, or None."""
    if not fitted.left_out:
        return None
    names = [column.name for column in fitted.left_out]
    example = ",".join(["symbol", *names[:2]])
    return (
        f"Not shown, to fit {width} columns: {', '.join(names)}. Choose columns with "
        f"--columns (e.g. --columns {example}) or widen the terminal; --format csv or json "
        f"has them all."
    )


def write_csv(out: TextIO, results: Sequence[Mapping[str, Any]],
              columns: Sequence[Column] = COLUMNS) -> None:  # fmt: skip
    """The columns' stored values, one row per analysis, under the stored field names."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column.stored for column in columns])
    for analysis in results:
        writer.writerow(["" if analysis.get(c.stored) is None else analysis[c.stored]
                         for c in columns])  # fmt: skip


def write_json(out: TextIO, batch_id: int, results: Sequence[Mapping[str, Any]],
               failures: Sequence[Mapping[str, Any]]) -> None:  # fmt: skip
    """The batch's stored analyses, every field of each, and its failed symbols."""
    json.dump({"batch_id": batch_id, "analyses": list(results), "failures": list(failures)},
              out, indent=2)  # fmt: skip
    out.write("\n")
