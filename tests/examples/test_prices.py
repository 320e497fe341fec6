"""Price sources of the stock-analysis example, with yfinance replaced by fakes (no network)."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
import requests
import yfinance.exceptions as yf_errors  # type: ignore[import-untyped]
from curl_cffi.requests import exceptions as curl_errors

from examples.stock_analyzer.indicators import SIGNALS, analyze
from examples.stock_analyzer.prices import (
    PRICE_COLUMNS,
    SAMPLE_DIR,
    SAMPLE_SYMBOLS,
    SOURCE_NAMES,
    CsvFolderSource,
    PriceDataError,
    UnknownSymbol,
    YFinanceSource,
    get_source,
    is_transient,
    normalize_prices,
    sample_source,
    validate_symbol,
)
from examples.stock_analyzer.sample import PROFILES, generate_prices, write_sample
from examples.stock_analyzer.words import shown

ROOT = Path(__file__).resolve().parents[2]
DATES = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]


def history_frame() -> pd.DataFrame:
    """Shaped as ``yfinance.Ticker(...).history(auto_adjust=True)`` returns daily NSE prices."""
    index = pd.DatetimeIndex(pd.to_datetime(DATES), name="Date").tz_localize("Asia/Kolkata")
    return pd.DataFrame(
        {
            "Open": [3700.0, 3710.5, 3690.0, 3725.0],
            "High": [3720.0, 3730.0, 3712.0, 3760.0],
            "Low": [3690.0, 3695.0, 3670.0, 3715.0],
            "Close": [3710.0, 3700.0, 3705.5, 3750.0],
            "Volume": np.array([1_200_000, 1_500_000, 900_000, 2_000_000], dtype=np.int64),
            "Dividends": [0.0, 0.0, 0.0, 0.0],
            "Stock Splits": [0.0, 0.0, 0.0, 0.0],
        },
        index=index,
    )


def download_frame(symbols: list[str], *, group_by: str = "column") -> pd.DataFrame:
    """Built as ``yfinance.download`` builds it: concat per ticker, then swap to (Price, Ticker)."""
    dfs = {}
    for i, symbol in enumerate(symbols):
        df = history_frame().drop(columns=["Dividends", "Stock Splits"])
        df[["Open", "High", "Low", "Close"]] += i
        df.index = pd.DatetimeIndex(df.index).tz_localize(None)  # download drops daily tz
        dfs[symbol] = df
    data = pd.concat(dfs.values(), axis=1, sort=True, keys=dfs.keys(), names=["Ticker", "Price"])
    if group_by == "column":
        data.columns = cast(pd.MultiIndex, data.columns).swaplevel(0, 1)
        data = data.sort_index(level=0, axis=1)
    return data


class Fetch:
    """A fetch that plays a script of outcomes (frames or exceptions) and counts its calls."""

    def __init__(self, *outcomes: pd.DataFrame | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []

    def __call__(self, symbol: str) -> pd.DataFrame:
        self.calls.append(symbol)
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def fast_source(fetch: Callable[[str], pd.DataFrame], attempts: int = 4) -> YFinanceSource:
    return YFinanceSource(fetch=fetch, attempts=attempts, backoff=0.001, max_backoff=0.002)


def assert_normalized(prices: pd.DataFrame) -> None:
    assert isinstance(prices.index, pd.DatetimeIndex)
    assert prices.index.tz is None
    assert prices.index.name == "Date"
    assert prices.index.is_monotonic_increasing and prices.index.is_unique
    assert tuple(prices.columns) == PRICE_COLUMNS
    assert all(dtype == np.float64 for dtype in prices.dtypes)
    assert not prices["Close"].isna().any()


# --- the yfinance adapter --------------------------------------------------------------


def test_ticker_history_shape_is_normalized_to_local_dates() -> None:
    fetch = Fetch(history_frame())
    prices = fast_source(fetch).load("tcs.ns")
    assert fetch.calls == ["TCS.NS"]
    assert_normalized(prices)
    # the Kolkata midnight stays on its own date (converting to UTC would move it back a day)
    assert list(prices.index) == list(pd.to_datetime(DATES))
    assert prices["Close"].tolist() == [3710.0, 3700.0, 3705.5, 3750.0]
    assert prices["Volume"].tolist() == [1_200_000.0, 1_500_000.0, 900_000.0, 2_000_000.0]


def test_download_shape_price_then_ticker_picks_the_symbol() -> None:
    frame = download_frame(["INFY.NS", "TCS.NS"])
    assert list(frame.columns.names) == ["Price", "Ticker"]
    prices = fast_source(Fetch(frame)).load("TCS.NS")
    assert_normalized(prices)
    assert prices["Close"].tolist() == [3711.0, 3701.0, 3706.5, 3751.0]


def test_download_shape_ticker_then_price_with_adj_close_is_adjusted() -> None:
    frame = download_frame(["TCS.NS"], group_by="ticker")
    assert list(frame.columns.names) == ["Ticker", "Price"]
    frame[("TCS.NS", "Adj Close")] = frame[("TCS.NS", "Close")] / 2
    prices = fast_source(Fetch(frame)).load("TCS.NS")
    assert_normalized(prices)
    assert prices["Close"].tolist() == [1855.0, 1850.0, 1852.75, 1875.0]
    assert prices["Open"].iloc[0] == pytest.approx(3700.0 / 2)
    assert prices["Volume"].iloc[0] == 1_200_000.0


def test_download_shape_with_a_single_column_level() -> None:
    frame = download_frame(["TCS.NS"]).droplevel(1, axis=1).rename_axis(None, axis=1)
    assert_normalized(fast_source(Fetch(frame)).load("TCS.NS"))


def test_download_without_the_symbol_names_what_it_has() -> None:
    frame = download_frame(["INFY.NS", "WIPRO.NS"])
    with pytest.raises(PriceDataError, match=r"no columns for 'TCS\.NS' \(tickers: INFY\.NS"):
        fast_source(Fetch(frame)).load("TCS.NS")


def test_unsorted_duplicate_and_missing_rows_are_cleaned() -> None:
    frame = history_frame().iloc[[2, 0, 1, 1, 3]].copy()
    frame.iat[3, 3] = 3699.0  # Close of the later duplicate, which wins
    frame.iat[4, 3] = np.nan
    prices = normalize_prices(frame, "TCS.NS")
    assert_normalized(prices)
    assert list(prices.index) == list(pd.to_datetime(DATES[:3]))
    assert prices["Close"].tolist() == [3710.0, 3699.0, 3705.5]


def test_empty_frame_is_an_unknown_symbol_and_is_not_retried() -> None:
    fetch = Fetch(pd.DataFrame())
    with pytest.raises(UnknownSymbol) as raised:
        fast_source(fetch).load("XYZ.NS")
    expected = "no price data for 'XYZ.NS' from yfinance (unknown or delisted symbol?)"
    assert str(raised.value) == expected
    assert raised.value.symbol == "XYZ.NS"
    assert isinstance(raised.value, LookupError)
    assert len(fetch.calls) == 1


def test_yfinance_empty_answers_are_unknown_symbols() -> None:
    # what Ticker.history returns on failure (utils.empty_df), and download's all-NaN rows
    empty = pd.DataFrame(
        columns=["Open", "High", "Low", "Close", "Adj Close", "Volume"],
        index=pd.DatetimeIndex([], name="Date"),
        dtype="float64",
    )
    all_nan = download_frame(["TCS.NS"]).astype("float64") * np.nan
    for frame in (empty, all_nan):
        with pytest.raises(UnknownSymbol, match=r"'TCS\.NS' from yfinance"):
            fast_source(Fetch(frame)).load("TCS.NS")


def test_yfinance_missing_ticker_error_is_an_unknown_symbol() -> None:
    fetch = Fetch(yf_errors.YFPricesMissingError("XYZ.NS", "(period=2y)"))
    with pytest.raises(UnknownSymbol, match=r"'XYZ\.NS' from yfinance"):
        fast_source(fetch).load("XYZ.NS")
    assert len(fetch.calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("connection reset by peer"),
        TimeoutError("timed out"),
        requests.exceptions.ConnectionError("DNS failure"),
        requests.exceptions.ReadTimeout("read timed out"),
        curl_errors.Timeout("curl: (28) timed out"),
        yf_errors.YFRateLimitError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_error_is_retried_until_the_third_call_succeeds(error: Exception) -> None:
    fetch = Fetch(error, error, history_frame())
    prices = fast_source(fetch).load("TCS.NS")
    assert len(fetch.calls) == 3
    assert len(prices) == 4


def test_transient_errors_are_reraised_after_the_last_attempt() -> None:
    error = requests.exceptions.ConnectTimeout("connect timed out")
    fetch = Fetch(error)
    with pytest.raises(requests.exceptions.ConnectTimeout):
        fast_source(fetch, attempts=3).load("TCS.NS")
    assert len(fetch.calls) == 3


@pytest.mark.parametrize(
    "error", [ValueError("bad period"), KeyError("chart"), yf_errors.YFDataException("down")]
)
def test_non_transient_error_is_not_retried(error: Exception) -> None:
    fetch = Fetch(error, history_frame())
    with pytest.raises(type(error)):
        fast_source(fetch).load("TCS.NS")
    assert len(fetch.calls) == 1


def test_is_transient_classifies_errors() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(curl_errors.DNSError("no such host"))
    assert not is_transient(FileNotFoundError("prices.csv"))
    assert not is_transient(requests.exceptions.HTTPError("404"))
    assert not is_transient(RuntimeError("boom"))


def test_missing_columns_are_named() -> None:
    frame = history_frame().drop(columns=["High", "Volume"])
    with pytest.raises(PriceDataError, match="missing columns: High, Volume") as raised:
        fast_source(Fetch(frame)).load("TCS.NS")
    assert isinstance(raised.value, ValueError)


def test_invalid_symbol_is_refused_before_any_fetch() -> None:
    fetch = Fetch(history_frame())
    with pytest.raises(ValueError, match="invalid symbol"):
        fast_source(fetch).load("../etc/passwd")
    assert fetch.calls == []


def test_default_fetch_calls_ticker_history(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Ticker:
        def __init__(self, symbol: str) -> None:
            self.symbol = symbol

        def history(self, **kwargs: Any) -> pd.DataFrame:
            calls.append((self.symbol, kwargs))
            return history_frame()

    fake = types.ModuleType("yfinance")
    fake.Ticker = Ticker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "yfinance", fake)

    prices = YFinanceSource().load("M&M.NS")
    assert len(prices) == 4
    assert calls == [("M&M.NS", {"period": "2y", "interval": "1d", "auto_adjust": True})]

    YFinanceSource(period="5y", interval="1wk").load("INFY.NS")
    assert calls[-1] == ("INFY.NS", {"period": "5y", "interval": "1wk", "auto_adjust": True})


def test_modules_import_without_yfinance() -> None:
    code = (
        "import sys; sys.modules['yfinance'] = None\n"
        "import examples.stock_analyzer.prices, examples.stock_analyzer.indicators\n"
        "import examples.stock_analyzer.sample\n"
        "assert sys.modules['yfinance'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_yfinance_source_options_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        YFinanceSource(attempts=0)


# --- CSV folders -----------------------------------------------------------------------


def write_csv(folder: Path, symbol: str, text: str) -> None:
    (folder / f"{symbol}.csv").write_text(text, encoding="utf-8")


CSV_TEXT = (
    "Date,Open,High,Low,Close,Volume\n"
    "2024-01-03,102,104,101,103,1500\n"
    "2024-01-01,100,101,99,100.5,1000\n"
    "2024-01-02,100.5,103,100,102,1200\n"
)


def test_csv_folder_loads_and_lists_symbols(tmp_path: Path) -> None:
    write_csv(tmp_path, "TCS.NS", CSV_TEXT)
    write_csv(tmp_path, "M&M.NS", CSV_TEXT)
    (tmp_path / "notes.txt").write_text("not prices", encoding="utf-8")
    source = CsvFolderSource(tmp_path)
    assert source.name == "csv"
    assert source.symbols() == ["M&M.NS", "TCS.NS"]
    prices = source.load("tcs.ns")
    assert_normalized(prices)
    assert prices["Close"].tolist() == [100.5, 102.0, 103.0]
    assert prices.index[0] == pd.Timestamp("2024-01-01")


def test_csv_folder_missing_file_is_an_unknown_symbol(tmp_path: Path) -> None:
    with pytest.raises(UnknownSymbol, match=r"'XYZ\.NS' from csv folder .*no XYZ\.NS\.csv"):
        CsvFolderSource(tmp_path).load("XYZ.NS")


def test_an_unknown_symbol_names_the_symbols_the_folder_has(tmp_path: Path) -> None:
    with pytest.raises(UnknownSymbol, match=r"\(no XYZ\.NS\.csv; it has no <SYMBOL>\.csv file\)"):
        CsvFolderSource(tmp_path).load("XYZ.NS")
    for n in range(25):
        write_csv(tmp_path, f"S{n:02d}.NS", CSV_TEXT)
    with pytest.raises(UnknownSymbol) as raised:
        CsvFolderSource(tmp_path).load("XYZ.NS")
    listed = ", ".join(f"S{n:02d}.NS" for n in range(20))
    assert str(raised.value).endswith(f"(no XYZ.NS.csv; it has {listed} and 5 more)")


def test_an_unknown_symbol_of_the_sample_lists_the_sample_and_no_flag(tmp_path: Path) -> None:
    # the error reaches job errors and the API's answers: advice on flags is the script's
    with pytest.raises(UnknownSymbol) as raised:
        sample_source().load("FOO.NS")
    assert str(raised.value) == (
        f"no price data for 'FOO.NS' from the bundled sample (it holds only "
        f"{', '.join(sorted(SAMPLE_SYMBOLS))})"
    )
    assert raised.value.symbols == ("FOO.NS",)
    assert raised.value.available == tuple(sorted(SAMPLE_SYMBOLS))


def test_csv_folder_missing_columns_name_the_file(tmp_path: Path) -> None:
    write_csv(tmp_path, "TCS.NS", "Date,Close\n2024-01-01,100\n")
    with pytest.raises(PriceDataError, match=r"TCS\.NS\.csv.*missing columns: Open, High, Low"):
        CsvFolderSource(tmp_path).load("TCS.NS")


def test_csv_folder_without_dates_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path, "TCS.NS", "Open,High,Low,Close,Volume\n100,101,99,100.5,1000\n")
    write_csv(tmp_path, "INFY.NS", "Date,Open,High,Low,Close,Volume\nyesterday,1,1,1,1,1\n")
    source = CsvFolderSource(tmp_path)
    with pytest.raises(PriceDataError, match=r"TCS\.NS\.csv.*no dates"):
        source.load("TCS.NS")
    with pytest.raises(PriceDataError, match=r"INFY\.NS\.csv.*no readable dates"):
        source.load("INFY.NS")


def test_csv_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        CsvFolderSource(tmp_path / "nowhere")


# --- choosing a source -----------------------------------------------------------------


def test_get_source_by_name(tmp_path: Path) -> None:
    assert SOURCE_NAMES == ("sample", "yfinance", "csv")
    assert get_source().name == "sample"
    assert get_source("yfinance").name == "yfinance"
    csv = get_source("csv", folder=str(tmp_path))
    assert isinstance(csv, CsvFolderSource) and csv.folder == tmp_path


def test_get_source_refuses_unknown_names_and_csv_without_folder() -> None:
    expected = r"unknown price source 'bloomberg', expected one of: sample, yfinance, csv"
    with pytest.raises(ValueError, match=expected):
        get_source("bloomberg")
    with pytest.raises(ValueError, match="needs a folder"):
        get_source("csv")


# --- symbols ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("TCS.NS", "TCS.NS"),
        ("M&M.NS", "M&M.NS"),
        ("BAJAJ-AUTO.NS", "BAJAJ-AUTO.NS"),
        ("reliance.ns", "RELIANCE.NS"),
        (" infy.ns\n", "INFY.NS"),
        ("NIFTY_50", "NIFTY_50"),
    ],
)
def test_validate_symbol_accepts_and_normalizes(given: str, expected: str) -> None:
    assert validate_symbol(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "../etc", "A B", "X" * 50, "TCS\nNS", "-TCS", "TCS/NS", "TCS;DROP", "ΑΒΓ"]
)
def test_validate_symbol_rejects_and_names_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid symbol") as raised:
        validate_symbol(bad)
    assert shown(bad) in str(raised.value)


def test_a_huge_symbol_is_named_cut_short() -> None:
    with pytest.raises(ValueError) as raised:
        validate_symbol("X" * 1_000_000)
    assert str(raised.value).startswith(f"invalid symbol '{'X' * 39}... (cut, 1000000 characters)")
    assert len(str(raised.value)) < 300


@pytest.mark.parametrize("bad", [None, 123, b"TCS.NS", ["TCS.NS"]])
def test_validate_symbol_rejects_non_strings(bad: object) -> None:
    with pytest.raises(ValueError, match="symbol must be a string"):
        validate_symbol(bad)


# --- the bundled sample ----------------------------------------------------------------


def test_sample_folder_holds_exactly_the_sample_symbols() -> None:
    assert sample_source().name == "sample"
    assert sample_source().symbols() == sorted(SAMPLE_SYMBOLS)
    assert set(SAMPLE_SYMBOLS) <= set(PROFILES)
    assert 10 <= len(SAMPLE_SYMBOLS) <= 12


def test_sample_data_is_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir() if p.is_file())
    assert total < 1_000_000


@pytest.mark.parametrize("symbol", SAMPLE_SYMBOLS)
def test_bundled_sample_loads_and_analyzes(symbol: str) -> None:
    prices = sample_source().load(symbol)
    assert_normalized(prices)
    assert len(prices) >= 250
    assert (prices["High"] >= prices[["Open", "Close"]].max(axis=1)).all()
    assert (prices["Low"] <= prices[["Open", "Close"]].min(axis=1)).all()
    assert (prices["Volume"] > 0).all()
    result = analyze(prices, symbol)
    assert result["sma_200"] is not None
    assert result["return_1y_pct"] is not None
    assert result["signal"] in SIGNALS


def test_bundled_sample_is_what_the_generator_writes() -> None:
    for symbol in SAMPLE_SYMBOLS:
        expected = generate_prices(symbol).astype("float64")
        pd.testing.assert_frame_equal(sample_source().load(symbol), expected, check_freq=False)


def test_bundled_sample_gives_varied_signals() -> None:
    source = sample_source()
    signals = {analyze(source.load(s), s)["signal"] for s in SAMPLE_SYMBOLS}
    assert len(signals) >= 3
    assert signals & {"buy", "strong_buy"} and signals & {"sell", "strong_sell"}


# --- the generator ---------------------------------------------------------------------


def test_generate_prices_is_deterministic_and_seedable() -> None:
    first = generate_prices("TCS.NS", days=60)
    pd.testing.assert_frame_equal(first, generate_prices("tcs.ns", days=60))
    assert not first.equals(generate_prices("TCS.NS", days=60, seed=1))
    assert not first.equals(generate_prices("INFY.NS", days=60))


def test_generate_prices_shape_for_an_unbundled_symbol() -> None:
    prices = generate_prices("BAJAJ-AUTO.NS", start="2024-03-01", days=300)
    assert len(prices) == 300
    assert prices.index[0] == pd.Timestamp("2024-03-01")
    assert (pd.DatetimeIndex(prices.index).day_of_week < 5).all()
    assert tuple(prices.columns) == PRICE_COLUMNS
    assert prices["Volume"].dtype == np.int64 and (prices["Volume"] > 0).all()
    assert (prices["High"] >= prices[["Open", "Close"]].max(axis=1)).all()
    assert (prices["Low"] <= prices[["Open", "Close"]].min(axis=1)).all()
    assert (prices["Low"] > 0).all()
    assert (prices.round(2) == prices).all().all()


def test_write_sample_round_trips_through_a_csv_folder(tmp_path: Path) -> None:
    paths = write_sample(tmp_path, ["sbin.ns", "LT.NS"], days=40)
    assert [p.name for p in paths] == ["SBIN.NS.csv", "LT.NS.csv"]
    assert paths[0].read_text(encoding="utf-8").splitlines()[0] == "Date,Open,High,Low,Close,Volume"
    loaded = CsvFolderSource(tmp_path).load("SBIN.NS")
    expected = generate_prices("SBIN.NS", days=40).astype("float64")
    pd.testing.assert_frame_equal(loaded, expected, check_freq=False)


def test_symbols_a_folder_lacks_are_named_together(tmp_path: Path) -> None:
    write_csv(tmp_path, "TCS.NS", CSV_TEXT)
    folder = CsvFolderSource(tmp_path)
    assert folder.missing(["A.NS", "TCS.NS", "B.NS"]) == ["A.NS", "B.NS"]
    error = folder.unknown(["A.NS", "B.NS"])
    assert (error.symbol, error.symbols) == ("A.NS", ("A.NS", "B.NS"))
    assert str(error) == (
        f"no price data for 'A.NS', 'B.NS' from csv folder {str(tmp_path)!r} "
        f"(no A.NS.csv, B.NS.csv; it has TCS.NS)"
    )
