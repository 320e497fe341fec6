"""One PNG chart per analyzed stock, drawn with matplotlib's Agg renderer (no display).

Four panels over the price history the analysis used: close with SMA50, SMA200 and the
Bollinger bands (20 days, 2 deviations); volume; RSI(14) with its 30 and 70 lines; MACD(12,
26, 9) with its signal line and histogram. The title names the symbol, the signal and its
score, and the as-of date. The series come from ``indicators``, the functions the analysis
itself uses, so the chart's last points are the stored figures.

``render_chart`` draws a chart into PNG bytes; ``write_chart`` writes them to
``<dir>/<SYMBOL>.png`` atomically (a temporary file in the same folder, then
``os.replace``): a reader finds the previous chart or the new one, never part of one.
``ChartCache`` keeps the PNG of each stored analysis for the HTTP API.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from PIL import Image

from .indicators import RSI_OVERBOUGHT, RSI_OVERSOLD, Bollinger, Macd, bollinger, macd, rsi, sma
from .prices import validate_symbol

__all__ = [
    "CHART_SIZE",
    "COLORS",
    "DPI",
    "PANELS",
    "ChartCache",
    "ChartSeries",
    "chart_series",
    "render_chart",
    "write_chart",
]

#: Width and height of every chart, in pixels.
CHART_SIZE = (1100, 900)
DPI = 100
#: Where each panel's axes sit: (left, bottom, width, height) in fractions of the figure.
PANELS: Mapping[str, tuple[float, float, float, float]] = {
    "price": (0.075, 0.475, 0.895, 0.405),
    "volume": (0.075, 0.365, 0.895, 0.095),
    "rsi": (0.075, 0.215, 0.895, 0.135),
    "macd": (0.075, 0.055, 0.895, 0.145),
}
COLORS: Mapping[str, str] = {
    "close": "#111827",
    "sma50": "#f59e0b",
    "sma200": "#7c3aed",
    "band": "#3b82f6",
    "up": "#16a34a",
    "down": "#dc2626",
    "rsi": "#2563eb",
    "macd": "#2563eb",
    "macd_signal": "#f59e0b",
    "grid": "#e5e7eb",
    "neutral": "#6b7280",
}
#: The colour of each signal in the title.
SIGNAL_COLORS: Mapping[str, str] = {
    "strong_buy": COLORS["up"],
    "buy": COLORS["up"],
    "hold": COLORS["neutral"],
    "sell": COLORS["down"],
    "strong_sell": COLORS["down"],
}
SOURCE_NOTES: Mapping[str, str] = {
    "sample": "bundled sample: generated prices, not market data",
    "csv": "prices from a CSV folder",
    "yfinance": "prices from Yahoo Finance",
}

#: A daily bar's width in points (volume, MACD histogram): about one day's pixels.
_BAR = 1.3
#: matplotlib's text and font caches are shared: one chart is drawn at a time.
_DRAWING = threading.Lock()


class ChartSeries(NamedTuple):
    """What a chart draws, each series indexed by date."""

    close: pd.Series
    volume: pd.Series
    sma50: pd.Series
    sma200: pd.Series
    bands: Bollinger
    rsi14: pd.Series
    macd: Macd


def chart_series(prices: pd.DataFrame) -> ChartSeries:
    """The series of a chart from normalized prices, by the analysis' own functions."""
    close = prices["Close"]
    return ChartSeries(close, prices["Volume"], sma(close, 50), sma(close, 200),
                       bollinger(close), rsi(close, 14), macd(close))  # fmt: skip


def render_chart(prices: pd.DataFrame, analysis: Mapping[str, Any]) -> bytes:
    """The PNG (``CHART_SIZE`` pixels) of ``analysis``, drawn over ``prices``, the
    normalized prices it was computed from."""
    series = chart_series(prices)
    with _DRAWING:
        figure = Figure(figsize=(CHART_SIZE[0] / DPI, CHART_SIZE[1] / DPI), dpi=DPI)
        canvas = FigureCanvasAgg(figure)  # the Agg renderer, whatever pyplot's backend is
        price = figure.add_axes(PANELS["price"])
        panels = {"price": price} | {
            name: figure.add_axes(PANELS[name], sharex=price) for name in ("volume", "rsi", "macd")
        }
        _title(figure, analysis)
        _price_panel(panels["price"], series)
        _volume_panel(panels["volume"], series)
        _rsi_panel(panels["rsi"], series, analysis)
        _macd_panel(panels["macd"], series, analysis)
        for name, axes in panels.items():
            axes.grid(True, color=COLORS["grid"], linewidth=0.6)
            axes.set_axisbelow(True)
            axes.tick_params(labelsize=8.5)
            if name != "macd":
                axes.tick_params(labelbottom=False)
        locator = mdates.AutoDateLocator()
        dates = mdates.ConciseDateFormatter(locator)
        dates.formats[1] = "%b %Y"  # month ticks name their year, not only January's
        panels["macd"].xaxis.set_major_locator(locator)
        panels["macd"].xaxis.set_major_formatter(dates)
        price.set_xlim(series.close.index[0], series.close.index[-1])
        canvas.draw()
        pixels = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    # a palette of 256 colours: the same picture to the eye, a third of the bytes
    image = pixels.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                           dither=Image.Dither.NONE)  # fmt: skip
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _title(figure: Figure, analysis: Mapping[str, Any]) -> None:
    signal = str(analysis["signal"])
    figure.text(0.075, 0.955, str(analysis["symbol"]), fontsize=17, fontweight="bold",
                va="baseline")  # fmt: skip
    figure.text(0.97, 0.955, f"{signal.replace('_', ' ')}  (score {analysis['score']:+d})",
                fontsize=15, fontweight="bold", color=SIGNAL_COLORS.get(signal, "black"),
                ha="right", va="baseline")  # fmt: skip
    facts = [f"as of {analysis['as_of']}", f"close {_figure(analysis.get('last_close'))}"]
    month = analysis.get("return_1m_pct")
    if month is not None:
        facts.append(f"1 month {month:+.2f}%")
    source = SOURCE_NOTES.get(str(analysis.get("source", "")))
    if source:
        facts.append(source)
    figure.text(0.075, 0.915, "   ·   ".join(facts), fontsize=10.5, color=COLORS["neutral"],
                va="baseline")  # fmt: skip


def _figure(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _price_panel(axes: Axes, series: ChartSeries) -> None:
    dates = series.close.index
    bands = series.bands
    axes.fill_between(dates, bands.lower, bands.upper, color=COLORS["band"], alpha=0.12,
                      linewidth=0, label="Bollinger (20, 2)")  # fmt: skip
    axes.plot(dates, bands.upper, color=COLORS["band"], linewidth=0.6, alpha=0.6)
    axes.plot(dates, bands.lower, color=COLORS["band"], linewidth=0.6, alpha=0.6)
    axes.plot(dates, series.close, color=COLORS["close"], linewidth=1.3, label="close")
    axes.plot(dates, series.sma50, color=COLORS["sma50"], linewidth=1.4, label="SMA50")
    axes.plot(dates, series.sma200, color=COLORS["sma200"], linewidth=1.4, label="SMA200")
    _legend(axes, ncols=4)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.set_ylabel("price", fontsize=9)
    _headroom(axes, 0.14)


def _volume_panel(axes: Axes, series: ChartSeries) -> None:
    rising = series.close.diff().fillna(0.0) >= 0
    colors = [COLORS["up"] if up else COLORS["down"] for up in rising]
    axes.vlines(series.volume.index, 0, series.volume, colors=colors, linewidth=_BAR)
    axes.yaxis.set_major_formatter(FuncFormatter(_shares))
    axes.set_ylabel("volume", fontsize=9)
    axes.set_ylim(0, float(series.volume.max()) * 1.1 or 1.0)
    axes.locator_params(axis="y", nbins=3)


def _shares(value: float, _: object) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _rsi_panel(axes: Axes, series: ChartSeries, analysis: Mapping[str, Any]) -> None:
    axes.axhspan(RSI_OVERSOLD, RSI_OVERBOUGHT, color=COLORS["rsi"], alpha=0.06, linewidth=0)
    for level in (RSI_OVERSOLD, RSI_OVERBOUGHT):
        axes.axhline(level, color=COLORS["neutral"], linewidth=0.8, linestyle="--")
    axes.plot(series.rsi14.index, series.rsi14, color=COLORS["rsi"], linewidth=1.1)
    axes.set_ylim(0, 100)
    axes.set_yticks([RSI_OVERSOLD, 50, RSI_OVERBOUGHT])
    axes.set_ylabel("RSI(14)", fontsize=9)
    value = analysis.get("rsi_14")
    if value is not None:
        _corner(axes, f"RSI {value:.1f}")


def _macd_panel(axes: Axes, series: ChartSeries, analysis: Mapping[str, Any]) -> None:
    lines = series.macd
    histogram = lines.histogram
    colors = [COLORS["up"] if value >= 0 else COLORS["down"] for value in histogram.fillna(0.0)]
    axes.vlines(histogram.index, 0, histogram.fillna(0.0), colors=colors, linewidth=_BAR,
                alpha=0.55, label="histogram")  # fmt: skip
    axes.plot(lines.line.index, lines.line, color=COLORS["macd"], linewidth=1.1, label="MACD")
    axes.plot(lines.signal.index, lines.signal, color=COLORS["macd_signal"], linewidth=1.1,
              label="signal")  # fmt: skip
    axes.axhline(0, color=COLORS["neutral"], linewidth=0.6)
    axes.set_ylabel("MACD(12,26,9)", fontsize=9)
    _legend(axes, ncols=3)
    _headroom(axes, 0.3)
    value = analysis.get("macd_hist")
    if value is not None:
        _corner(axes, f"histogram {value:+.2f}")


def _headroom(axes: Axes, share: float) -> None:
    """Room above the data for the legend: the top ``share`` of the panel."""
    low, high = axes.get_ylim()
    axes.set_ylim(low, high + (high - low) * share / (1.0 - share))


def _legend(axes: Axes, ncols: int) -> None:
    axes.legend(loc="upper left", fontsize=8.5, ncols=ncols, framealpha=0.85, edgecolor="none",
                borderpad=0.3)  # fmt: skip


def _corner(axes: Axes, text: str) -> None:
    """The panel's latest value, in its top right corner."""
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5}
    axes.text(0.995, 0.94, text, transform=axes.transAxes, ha="right", va="top", fontsize=8.5,
              color=COLORS["close"], bbox=box)  # fmt: skip


def write_chart(png: bytes, directory: str | os.PathLike[str], symbol: str) -> Path:
    """Write ``png`` to ``<directory>/<SYMBOL>.png`` atomically: a temporary file in the same
    folder, flushed to disk, then renamed over the target. Returns the target's path."""
    folder = Path(directory)
    target = folder / f"{validate_symbol(symbol)}.png"
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(png)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the chart from others
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target


class ChartCache:
    """The PNGs of the latest charts, by a key naming the stored analysis they show (the
    least recently used one goes first once ``size`` are kept). Thread-safe."""

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._charts: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        """The chart stored under ``key``, or None."""
        with self._lock:
            png = self._charts.get(key)
            if png is not None:
                self._charts.move_to_end(key)
            return png

    def put(self, key: Hashable, png: bytes) -> None:
        """Keep ``png`` under ``key``, dropping the least recently used beyond ``size``."""
        with self._lock:
            self._charts[key] = png
            self._charts.move_to_end(key)
            while len(self._charts) > self.size:
                self._charts.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._charts)
