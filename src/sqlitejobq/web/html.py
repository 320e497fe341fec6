"""Small HTML helpers of the dashboard: escaping, times, badges, progress bars, a chart."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from ..job import BatchProgress, ThroughputPoint

#: Characters a reader cannot see, or that reorder what follows (bidi overrides): shown as
#: ``[U+202E]`` so a name or an error cannot pose as another. Tab and newlines are kept.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NOT_PLAIN = re.compile(r"[^\t\n\r\x20-\x7e]")


def h(value: object) -> str:
    """Text made safe for HTML, attributes included (None is empty); control, format and
    bidi characters shown visibly escaped."""
    if value is None:
        return ""
    return escape(visible(str(value)), quote=True)


def visible(text: str, *, lines: bool = True) -> str:
    """``text`` with its control, format and bidi characters shown as ``[U+202E]`` (a
    terminal's escape sequences among them); tabs and, if ``lines``, line breaks kept."""
    if _NOT_PLAIN.search(text) is None:
        return text
    kept = "\t\n\r" if lines else ""

    def shown(match: re.Match[str]) -> str:
        char = match[0]
        if char in kept or unicodedata.category(char) not in _INVISIBLE:
            return char
        return f"[U+{ord(char):04X}]"

    return _NOT_PLAIN.sub(shown, text)


def query(params: dict[str, Any]) -> str:
    """A query string of the parameters that have a value ('' when none has)."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


def iso(ts: float | None, *, precise: bool = False) -> str:
    """A UTC time as ``2026-11-29 13:50:12Z`` (``precise``: ``13:50:12.345Z``)."""
    if ts is None:
        return ""
    seconds = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    return f"{seconds}.{int(ts % 1 * 1000):03d}Z" if precise else seconds + "Z"


def ago(seconds: float) -> str:
    """A duration, rounded for a reader: ``45 s``, ``12 min``, ``3.2 h``, ``4 d``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def when(ts: float | None, now: float) -> str:
    """A time shown relative to now, with the exact time on hover."""
    if ts is None:
        return '<span class="muted">-</span>'
    words = f"in {ago(ts - now)}" if ts > now + 1 else f"{ago(now - ts)} ago"
    return f'<time datetime="{h(iso(ts))}" title="{h(iso(ts))}">{h(words)}</time>'


def badge(status: str) -> str:
    """A status as a coloured label."""
    return f'<span class="status {h(status)}">{h(status)}</span>'


def number(n: float | int) -> str:
    """A count with thousands separators."""
    return f"{n:,}" if isinstance(n, int) else f"{n:,.3f}"


def job_progress(progress: float, message: str | None) -> str:
    """A running job's progress bar and message."""
    pct = max(0.0, min(1.0, progress)) * 100
    label = f"{pct:.0f}%" + (f" · {message}" if message else "")
    return (
        f'<div class="progress"><div class="bar" role="progressbar" aria-valuenow="{pct:.0f}" '
        f'aria-valuemin="0" aria-valuemax="100"><span class="done" style="width:{pct:.1f}%">'
        f'</span></div><span class="label">{h(label)}</span></div>'
    )


def batch_progress(batch: BatchProgress) -> str:
    """A batch's bar (completed, failed, cancelled, processing) and ``12/40, 30%``."""
    total = max(batch.total, 1)
    parts = [
        ("done", batch.completed, "completed"),
        ("bad", batch.failed, "failed"),
        ("off", batch.cancelled, "cancelled"),
        ("run", batch.processing, "processing"),
    ]
    spans = "".join(
        f'<span class="{cls}" style="width:{100 * n / total:.2f}%" title="{n} {name}"></span>'
        for cls, n, name in parts
        if n
    )
    label = f"{batch.finished}/{batch.total}, {batch.percent:.0f}%"
    return (
        f'<div class="progress" data-batch="{batch.batch_id}"><div class="bar" role="progressbar" '
        f'aria-valuenow="{batch.percent:.0f}" aria-valuemin="0" aria-valuemax="100">{spans}</div>'
        f'<span class="label">{h(label)}</span></div>'
    )


def throughput_chart(points: Sequence[ThroughputPoint]) -> str:
    """Jobs finished per minute as stacked bars (completed under failed), drawn server-side."""
    if not points:
        return ""
    width, height, top, bottom = 600, 140, 4, 0
    peak = max((p.completed + p.failed for p in points), default=0) or 1
    step = width / len(points)
    bars = []
    for i, p in enumerate(points):
        x = i * step + 0.5
        ok_h = (height - top - bottom) * p.completed / peak
        bad_h = (height - top - bottom) * p.failed / peak
        base = height - bottom
        tip = f"{iso(p.minute)[11:16]}Z: {p.completed} completed, {p.failed} failed"
        bars.append(
            f"<g><title>{h(tip)}</title>"
            f'<rect class="c" x="{x:.1f}" y="{base - ok_h:.1f}" width="{step - 1:.1f}" '
            f'height="{ok_h:.1f}"/>'
            f'<rect class="f" x="{x:.1f}" y="{base - ok_h - bad_h:.1f}" width="{step - 1:.1f}" '
            f'height="{bad_h:.1f}"/></g>'
        )
    first, last = iso(points[0].minute)[11:16], iso(points[-1].minute)[11:16]
    # the labels are HTML: the drawing stretches to the page's width, text would too
    return (
        f'<div class="chartbox"><div class="axis"><span>{peak:,} a minute</span></div>'
        f'<svg class="chart" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="jobs finished per minute">'
        + "".join(bars)
        + f'</svg><div class="axis"><span>{first}Z</span><span>{last}Z</span></div></div>'
    )


def pretty(value: Any) -> str:
    """A JSON value, indented, escaped for a ``<pre>``."""
    return h(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str))


def table(headers: Iterable[str], rows: Iterable[str], *, numeric: Iterable[str] = ()) -> str:
    """A table from header names and already rendered ``<tr>`` rows."""
    nums = set(numeric)
    head = "".join(
        f'<th class="num">{h(x)}</th>' if x in nums else f"<th>{h(x)}</th>" for x in headers
    )
    body = "".join(rows)
    return (
        f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        "</table></div>"
    )
