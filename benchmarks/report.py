"""Benchmark figures into the docs: a generated section of a Markdown page, and a bar chart
of throughput per system (both comparison scripts write theirs with these)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The comments that open and close the generated section ``name`` of a page."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(path: Path, body: str, name: str) -> None:
    """Put ``body`` between the markers of section ``name`` in ``path``, leaving the rest of
    the file as it was (the section is appended when the page has none yet)."""
    begin, end_marker = markers(name)
    block = f"{begin}\n{body.rstrip()}\n{end_marker}"
    if path.exists():
        text = path.read_text()
        start = text.find(begin)
        end = text.find(end_marker, start + len(begin)) if start != -1 else -1
        if end != -1:
            text = text[:start] + block + text[end + len(end_marker) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = f"# Benchmarks\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def throughput_chart(
    labels: Sequence[str],
    series: dict[str, list[float | None]],
    path: Path,
    title: str,
) -> None:
    """A grouped horizontal bar chart, log scale, one group per label and one bar per series
    (``None``: an error, drawn as no bar and labelled so), as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    found = [v for values in series.values() for v in values if v is not None]
    low, high = (min(found), max(found)) if found else (1.0, 10.0)
    floor = 10 ** math.floor(math.log10(low / 2))
    height = 0.8 / len(series)

    figure = Figure(figsize=(10, 1.6 + 0.75 * len(labels)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for k, (name, values) in enumerate(series.items()):
        offsets = [i + (k - (len(series) - 1) / 2) * height for i in range(len(labels))]
        widths = [v - floor if v is not None else 0.0 for v in values]
        axes.barh(offsets, widths, height=height, left=floor, label=name)
        for y, value in zip(offsets, values, strict=True):
            text = f"{value:,.0f}" if value is not None else "error"
            axes.text((value or floor) * 1.04, y, text, va="center", fontsize=8)
    axes.set_xscale("log")
    axes.set_xlim(floor, high * 3)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("jobs per second, log scale (median; higher is better)")
    axes.set_title(title)
    axes.grid(axis="x", which="both", alpha=0.25)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=len(series), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
