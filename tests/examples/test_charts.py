"""The charts: one readable PNG per stock from the script, drawn from the series the analysis
itself computed, written whole or not at all, and served by the HTTP API once per stored
analysis."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from examples.stock_analyzer.charts import (
    CHART_SIZE,
    COLORS,
    PANELS,
    ChartCache,
    chart_series,
    render_chart,
    write_chart,
)
from examples.stock_analyzer.indicators import analyze
from examples.stock_analyzer.prices import SAMPLE_SYMBOLS, PriceDataError, sample_source
from examples.stock_analyzer.sample import write_sample
from examples.stock_analyzer.service import (
    SourceConfig,
    app_worker,
    latest_analysis,
    open_queue,
    prices_of_analysis,
    start_analysis,
)

from .api_server import ApiServer, running_api

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)

#: The colours of what each panel must show: the series drawn over its whole width.
SERIES = {
    "price": ("close", "sma50", "sma200"),
    "volume": ("up", "down"),
    "rsi": ("rsi",),
    "macd": ("macd", "macd_signal"),
}


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header, after checking it is one."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def assert_readable_chart(data: bytes) -> None:
    """A PNG of CHART_SIZE whose every panel shows its series, not a blank area."""
    assert png_size(data) == CHART_SIZE
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)
    assert pixels.shape == (CHART_SIZE[1], CHART_SIZE[0], 3)
    width, height = CHART_SIZE
    title = pixels[: round(0.1 * height)]
    assert title.std() > 5, "no title"
    for name, (left, bottom, panel_width, panel_height) in PANELS.items():
        # inside the panel's frame: its data, grid and labels, not its border
        x0, x1 = round(left * width) + 3, round((left + panel_width) * width) - 3
        y0, y1 = round((1 - bottom - panel_height) * height) + 3, round((1 - bottom) * height) - 3
        region = pixels[y0:y1, x0:x1]
        assert region.var() > 100, f"the {name} panel is blank"
        shown = np.zeros(region.shape[:2], dtype=bool)
        for series in SERIES[name]:
            drawn = np.abs(region - rgb(COLORS[series])).max(axis=2) <= 24
            assert drawn.sum() > 300, f"the {name} panel does not show its {series}"
            shown |= drawn
        # over the whole history: in each tenth of the panel, many columns (not weekends, nor
        # the days before an indicator has enough of them)
        for tenth in np.array_split(shown.any(axis=0), 10):
            assert tenth.mean() > 0.4, f"the {name} panel does not span the history"


@pytest.fixture(scope="module")
def charted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The main command with --charts: its database, its charts folder and its output."""
    root = tmp_path_factory.mktemp("charts")
    db, folder = root / "app.db", root / "charts"
    done = subprocess.run(
        [sys.executable, "-m", "examples.stock_analyzer", "--db", str(db), "--charts",
         str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return db, folder, done.stdout


def test_the_script_writes_a_readable_chart_per_stock(charted: tuple[Path, Path, str]) -> None:
    _, folder, out = charted
    assert f"Charts of 12 stocks written to {folder}/ (<SYMBOL>.png)" in out
    names = sorted(path.name for path in folder.iterdir())
    assert names == sorted(f"{symbol}.png" for symbol in SAMPLE_SYMBOLS)  # no temporary left
    for symbol in SAMPLE_SYMBOLS:
        assert_readable_chart((folder / f"{symbol}.png").read_bytes())


def test_a_chart_draws_the_series_the_analysis_computed(charted: tuple[Path, Path, str]) -> None:
    db, _, _ = charted
    with open_queue(db) as queue:
        for symbol in SAMPLE_SYMBOLS:
            stored = latest_analysis(queue, symbol)
            assert stored is not None
            prices = prices_of_analysis(queue, stored)
            assert len(prices) == stored["rows"]
            assert prices.index[-1] == pd.Timestamp(stored["as_of"])
            series = chart_series(prices)
            last = {
                "last_close": (series.close, 2), "sma_50": (series.sma50, 2),
                "sma_200": (series.sma200, 2), "rsi_14": (series.rsi14, 2),
                "bb_upper": (series.bands.upper, 2), "bb_lower": (series.bands.lower, 2),
                "macd": (series.macd.line, 4), "macd_hist": (series.macd.histogram, 4),
            }  # fmt: skip
            for field, (values, digits) in last.items():
                assert round(float(values.iloc[-1]), digits) == stored[field], (symbol, field)


def test_a_chart_is_written_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_chart(b"first", tmp_path, "tcs.ns")
    assert target == tmp_path / "TCS.NS.png" and target.read_bytes() == b"first"
    assert target.stat().st_mode & 0o777 == 0o644

    def full_disk(source: str, destination: str) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full_disk)  # the rename fails: after the whole write
        with pytest.raises(OSError, match="No space left"):
            write_chart(b"second", tmp_path, "TCS.NS")
    assert [path.name for path in tmp_path.iterdir()] == ["TCS.NS.png"]  # no temporary left
    assert target.read_bytes() == b"first"  # the old chart, whole


def test_the_chart_cache_keeps_the_most_recently_used() -> None:
    cache = ChartCache(size=2)
    cache.put("a", b"A")
    cache.put("b", b"B")
    assert cache.get("a") == b"A"  # a is now the most recent
    cache.put("c", b"C")
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (b"A", None, b"C", 2)
    with pytest.raises(ValueError, match="size must be >= 1"):
        ChartCache(size=0)


def test_render_draws_any_price_history() -> None:
    prices = sample_source().load("ITC.NS").tail(260)  # a year: SMA200 only at its end
    analysis = {**analyze(prices, "ITC.NS"), "source": "csv"}
    assert_readable_chart(render_chart(prices, analysis))


def test_a_csv_analysis_keeps_its_folder_and_its_chart_wants_the_same_prices(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "prices"
    write_sample(folder, ["TCS.NS"])
    with closing(open_queue(tmp_path / "app.db")) as queue:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp_path)  # a folder named relative to where the batch started
            start_analysis(queue, ["TCS.NS"], SourceConfig("csv", "prices"))
        app_worker(queue, concurrency=1).run(burst=True)
        stored = latest_analysis(queue, "TCS.NS")
        assert stored is not None and stored["folder"] == str(folder)
        assert len(prices_of_analysis(queue, stored)) == stored["rows"]
        path = folder / "TCS.NS.csv"
        lines = path.read_text().splitlines()
        date, *values = lines[-1].split(",")
        values[3] = f"{float(values[3]) + 1:.2f}"  # another last close since the analysis
        path.write_text("\n".join([*lines[:-1], ",".join([date, *values])]) + "\n")
        with pytest.raises(PriceDataError, match=r"not those of its analysis.*analyze it again"):
            prices_of_analysis(queue, stored)


# --- the HTTP API ------------------------------------------------------------------------------

API_SYMBOLS = ["TCS.NS", "INFY.NS", "LT.NS"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Path]]:
    root = tmp_path_factory.mktemp("chart-api")
    folder = root / "prices"
    write_sample(folder, API_SYMBOLS)
    with running_api(str(root / "api.db"), root / "server.log", "--source", "csv", "--folder",
                     str(folder), "--workers", "2") as server:  # fmt: skip
        yield server, folder


def analyze_now(base: str, symbols: list[str]) -> int:
    """Start a batch through the API and wait until it has finished: its id."""
    started = httpx.post(f"{base}/api/stocks/analyze-all-stocks", json={"symbols": symbols})
    assert started.status_code == 202, started.text
    batch_id: int = started.json()["batch_id"]
    deadline = time.monotonic() + 60
    while True:
        progress = httpx.get(f"{base}/api/all-stocks/progress", params={"batch_id": batch_id})
        if progress.json()["status"] == "completed":
            return batch_id
        assert progress.json()["status"] in ("queued", "processing"), progress.text
        assert time.monotonic() < deadline, progress.text
        time.sleep(0.05)


def drawn(log: Path, symbol: str) -> int:
    """How many times the server drew a chart of ``symbol``."""
    return log.read_text().count(f"drew the chart of {symbol} ")


def test_the_api_serves_a_chart_drawn_once_per_stored_analysis(
    api: tuple[ApiServer, Path],
) -> None:
    server, _ = api
    analyze_now(server.base, ["TCS.NS", "INFY.NS"])
    first = httpx.get(f"{server.base}/api/stocks/TCS.NS/chart.png")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert_readable_chart(first.content)
    assert drawn(server.log, "TCS.NS") == 1
    again = httpx.get(f"{server.base}/api/stocks/tcs.ns/chart.png")
    assert again.status_code == 200 and again.content == first.content
    assert drawn(server.log, "TCS.NS") == 1  # from the cache: not drawn again
    assert_readable_chart(httpx.get(f"{server.base}/api/stocks/INFY.NS/chart.png").content)
    assert drawn(server.log, "INFY.NS") == 1
    # a newer analysis of the symbol is another chart
    analyze_now(server.base, ["TCS.NS"])
    newer = httpx.get(f"{server.base}/api/stocks/TCS.NS/chart.png")
    assert newer.status_code == 200 and drawn(server.log, "TCS.NS") == 2
    assert_readable_chart(newer.content)


def test_the_chart_of_a_symbol_never_analyzed_is_a_404_saying_so(
    api: tuple[ApiServer, Path],
) -> None:
    server, _ = api
    missing = httpx.get(f"{server.base}/api/stocks/NEVER.NS/chart.png")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json()["detail"] == (
        "no analysis of NEVER.NS yet, so no chart: analyze it with "
        "POST /api/stocks/analyze-all-stocks"
    )
    bad = httpx.get(f"{server.base}/api/stocks/A%20B/chart.png")
    assert bad.status_code == 422 and "A B" in bad.json()["detail"]


def test_the_chart_of_prices_changed_since_the_analysis_is_a_404_saying_so(
    api: tuple[ApiServer, Path],
) -> None:
    server, folder = api
    analyze_now(server.base, ["LT.NS"])
    path = folder / "LT.NS.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # its last day gone
    changed = httpx.get(f"{server.base}/api/stocks/LT.NS/chart.png")
    assert changed.status_code == 404
    detail: str = changed.json()["detail"]
    assert detail.startswith("no chart of LT.NS: the prices of LT.NS from csv are not those of")
    assert detail.endswith("analyze it again")
    assert drawn(server.log, "LT.NS") == 0
