"""Where prices come from: yfinance, a folder of CSV files, or the bundled offline sample.

Every source returns the same normalized frame (see :func:`normalize_prices`), so the
indicators never care where the numbers came from.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from .words import shown

__all__ = [
    "PRICE_COLUMNS",
    "SAMPLE_DIR",
    "SAMPLE_SYMBOLS",
    "SOURCE_NAMES",
    "CsvFolderSource",
    "PriceDataError",
    "PriceSource",
    "UnknownSymbol",
    "YFinanceSource",
    "get_source",
    "is_transient",
    "normalize_prices",
    "sample_source",
    "validate_symbol",
]

logger = logging.getLogger(__name__)

PRICE_COLUMNS: tuple[str, ...] = ("Open", "High", "Low", "Close", "Volume")
SAMPLE_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_SYMBOLS: tuple[str, ...] = (
    "TCS.NS",
    "INFY.NS",
    "RELIANCE.NS",
    "HDFCBANK.NS",
    "ICICIBANK.NS",
    "SBIN.NS",
    "WIPRO.NS",
    "HINDUNILVR.NS",
    "ITC.NS",
    "LT.NS",
    "BHARTIARTL.NS",
    "ASIANPAINT.NS",
)
SOURCE_NAMES: tuple[str, ...] = ("sample", "yfinance", "csv")
#: An unknown symbol's error names at most this many of the symbols a folder has.
LISTED_SYMBOLS = 20

# fullmatch, not "$": "$" would also accept a trailing newline.
_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9.&_-]{0,19}")

# Spellings other tools use for the same columns (lower case, "_" read as " ").
_COLUMN_ALIASES = {
    "date": "Date",
    "datetime": "Date",
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "adj close": "Adj Close",
    "adjclose": "Adj Close",
    "volume": "Volume",
}

# Class names of network errors in requests, curl_cffi, urllib3 and http.client, which do
# not derive from the built-in ConnectionError / TimeoutError. Matched along the MRO so a
# subclass (ConnectTimeout, DNSError) counts too, without importing those libraries.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",
        "Timeout",
        "TimeoutError",
        "ConnectTimeout",
        "ReadTimeout",
        "ChunkedEncodingError",
        "RemoteDisconnected",
        "ProtocolError",
        "IncompleteRead",
    }
)


class UnknownSymbol(LookupError):
    """A source has no prices for a symbol, or for several (unknown, delisted, or no file).

    ``available`` holds the symbols an offline source has (empty for yfinance). The message
    speaks of the data only: it reaches job errors and API answers as well as the script,
    which adds its own advice on flags.
    """

    def __init__(
        self,
        symbol: str | Sequence[str],
        source: str,
        hint: str = "unknown or delisted symbol?",
        *,
        available: Sequence[str] = (),
    ) -> None:
        symbols = (symbol,) if isinstance(symbol, str) else tuple(symbol)
        super().__init__(f"no price data for {', '.join(map(repr, symbols))} from {source} "
                         f"({hint})")  # fmt: skip
        self.symbol = symbols[0]
        self.symbols = symbols
        self.source = source
        self.hint = hint
        self.available = tuple(available)


class PriceDataError(ValueError):
    """Price data is malformed (missing columns, no dates) or too short to analyze."""


class PriceSource(Protocol):
    """What every source offers: a name for messages and a loader of normalized prices."""

    name: str

    def load(self, symbol: str) -> pd.DataFrame: ...


def validate_symbol(symbol: object) -> str:
    """Return the symbol upper-cased, or raise ValueError if it is not a plausible ticker.

    Symbols become file names and URL parts, so only letters, digits and ``. & _ -`` pass.
    """
    if not isinstance(symbol, str):
        raise ValueError(f"symbol must be a string, got {shown(symbol)} ({type(symbol).__name__})")
    normalized = symbol.strip().upper()
    if not _SYMBOL.fullmatch(normalized):
        raise ValueError(
            f"invalid symbol {shown(symbol)}: expected 1-20 characters, letters, digits and "
            ". & _ -, starting with a letter or digit (e.g. 'TCS.NS', 'M&M.NS')"
        )
    return normalized


def normalize_prices(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Bring any supported price frame to one shape.

    The result has a tz-naive ``DatetimeIndex`` named ``Date`` (the exchange's local dates),
    sorted, without duplicates, and exactly the float columns Open, High, Low, Close, Volume;
    rows without a Close are dropped. Accepted input: ``Ticker.history`` frames (tz-aware,
    with Dividends and Stock Splits), ``yfinance.download`` frames (MultiIndex columns in
    either ``(Price, Ticker)`` or ``(Ticker, Price)`` order), frames with an "Adj Close"
    column (OHLC are then scaled by Adj Close / Close, as yfinance's ``auto_adjust`` does),
    and CSV-like frames with a Date column. The result may be empty.
    """
    if not isinstance(frame, pd.DataFrame):
        raise PriceDataError(
            f"price data for {symbol!r} must be a pandas DataFrame, got {type(frame).__name__}"
        )
    if isinstance(frame.columns, pd.MultiIndex):
        frame = _select_ticker(frame, symbol)
    frame = frame.rename(columns=_canonical_column)
    frame = _with_date_index(frame, symbol)

    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise PriceDataError(
            f"price data for {symbol!r} is missing columns: {', '.join(missing)}"
            f" (has: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    prices = frame[list(PRICE_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype("float64")
    if "Adj Close" in frame.columns:
        adjusted = pd.to_numeric(frame["Adj Close"], errors="coerce").astype("float64")
        ratio = (adjusted / prices["Close"]).where(adjusted.notna(), 1.0)
        for column in ("Open", "High", "Low", "Close"):
            prices[column] = prices[column] * ratio

    kept: pd.DataFrame = prices[prices.index.notna() & prices["Close"].notna().to_numpy()]
    kept = kept.sort_index(kind="stable")
    kept = kept[~kept.index.duplicated(keep="last")]
    kept.columns = pd.Index(list(PRICE_COLUMNS))
    return kept


def _canonical_column(name: Any) -> Any:
    if not isinstance(name, str):
        return name
    return _COLUMN_ALIASES.get(name.strip().lower().replace("_", " "), name.strip())


def _select_ticker(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Pick one ticker out of a ``yfinance.download`` frame, whichever level order it has."""
    columns = frame.columns
    assert isinstance(columns, pd.MultiIndex)
    if columns.nlevels != 2:
        raise PriceDataError(
            f"price data for {symbol!r} has {columns.nlevels} column levels, expected 2"
            " (price field and ticker)"
        )
    fields = set(_COLUMN_ALIASES.values())
    field_level = next(
        (
            level
            for level in range(2)
            if any(_canonical_column(v) in fields for v in columns.get_level_values(level))
        ),
        None,
    )
    if field_level is None:
        raise PriceDataError(
            f"price data for {symbol!r}: no column level holds price fields (Open, Close, ...)"
        )
    ticker_level = 1 - field_level
    tickers = list(dict.fromkeys(columns.get_level_values(ticker_level)))
    wanted = [t for t in tickers if str(t).upper() == symbol.upper()]
    if wanted:
        chosen = wanted[0]
    elif len(tickers) == 1:
        chosen = tickers[0]
    else:
        raise PriceDataError(
            f"price data has no columns for {symbol!r}"
            f" (tickers: {', '.join(map(str, tickers)) or 'none'})"
        )
    selected = frame.xs(chosen, axis=1, level=ticker_level)
    assert isinstance(selected, pd.DataFrame)
    selected.columns.name = None
    return selected


def _with_date_index(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    if not isinstance(frame.index, pd.DatetimeIndex):
        if "Date" in frame.columns:
            frame = frame.set_index("Date")
        elif pd.api.types.is_numeric_dtype(frame.index.dtype):
            # Row numbers would parse as nanoseconds since 1970: refuse rather than guess.
            raise PriceDataError(
                f"price data for {symbol!r} has no dates: expected a Date column or a DatetimeIndex"
            )
        try:
            frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index))
        except (ValueError, TypeError) as exc:
            raise PriceDataError(
                f"price data for {symbol!r} has no readable dates (a Date column or a"
                f" DatetimeIndex): {exc}"
            ) from exc
    index = frame.index
    assert isinstance(index, pd.DatetimeIndex)
    if index.tz is not None:
        # Keep the exchange's wall-clock dates: converting to UTC first would move an
        # Asia/Kolkata midnight to the previous day.
        index = index.tz_localize(None)
    frame = frame.copy()
    frame.index = index.rename("Date")
    return frame


def is_transient(exc: BaseException) -> bool:
    """True for errors worth another try: connection failures, timeouts, rate limiting."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    yf_errors = sys.modules.get("yfinance.exceptions")
    rate_limited = getattr(yf_errors, "YFRateLimitError", None)
    if isinstance(rate_limited, type) and isinstance(exc, rate_limited):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def _is_missing_ticker(exc: BaseException) -> bool:
    yf_errors = sys.modules.get("yfinance.exceptions")
    missing = getattr(yf_errors, "YFTickerMissingError", None)
    return isinstance(missing, type) and isinstance(exc, missing)


class YFinanceSource:
    """Prices from Yahoo Finance through yfinance, retried on transient network errors.

    ``fetch(symbol)`` replaces the call to yfinance (tests inject one). Retries use
    exponential backoff with full jitter starting near ``backoff`` seconds and capped at
    ``max_backoff``; after ``attempts`` tries the last error is raised unchanged. An empty
    answer means an unknown symbol and is not retried.
    """

    name = "yfinance"

    def __init__(
        self,
        period: str = "2y",
        interval: str = "1d",
        fetch: Callable[[str], pd.DataFrame] | None = None,
        attempts: int = 4,
        *,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        if backoff < 0 or max_backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff} (max {max_backoff})")
        self.period = period
        self.interval = interval
        self.attempts = attempts
        self._fetch = fetch if fetch is not None else self._history
        self._retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=backoff, max=max_backoff),
            stop=stop_after_attempt(attempts),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )

    def _history(self, symbol: str) -> pd.DataFrame:
        # Imported here so the example runs offline without yfinance installed.
        yfinance: Any = importlib.import_module("yfinance")
        frame: pd.DataFrame = yfinance.Ticker(symbol).history(
            period=self.period, interval=self.interval, auto_adjust=True
        )
        return frame

    def load(self, symbol: str) -> pd.DataFrame:
        symbol = validate_symbol(symbol)
        try:
            raw: pd.DataFrame | None = self._retrying(self._fetch, symbol)
        except Exception as exc:
            if _is_missing_ticker(exc):
                raise UnknownSymbol(symbol, self.name) from exc
            raise
        if raw is None or raw.empty:
            raise UnknownSymbol(symbol, self.name)
        prices = normalize_prices(raw, symbol)
        if prices.empty:
            raise UnknownSymbol(symbol, self.name)
        return prices

    def __repr__(self) -> str:
        return f"YFinanceSource(period={self.period!r}, interval={self.interval!r})"


class CsvFolderSource:
    """Prices from ``<folder>/<SYMBOL>.csv`` files with columns Date,Open,High,Low,Close,Volume."""

    def __init__(self, folder: str | Path, *, name: str = "csv") -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"price folder {str(self.folder)!r} is not a directory")
        self.name = name

    def path(self, symbol: str) -> Path:
        return self.folder / f"{validate_symbol(symbol)}.csv"

    def symbols(self) -> list[str]:
        """The symbols this folder has a CSV file for, sorted."""
        found = (p.name[: -len(".csv")] for p in self.folder.glob("*.csv") if p.is_file())
        return sorted(s for s in found if _SYMBOL.fullmatch(s))

    def load(self, symbol: str) -> pd.DataFrame:
        symbol = validate_symbol(symbol)
        path = self.path(symbol)
        if not path.is_file():
            raise self.unknown([symbol])
        try:
            raw = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PriceDataError(f"cannot read {str(path)!r} as CSV: {exc}") from exc
        try:
            prices = normalize_prices(raw, symbol)
        except PriceDataError as exc:
            raise PriceDataError(f"{path}: {exc}") from exc
        if prices.empty:
            raise UnknownSymbol(symbol, f"{self.name} folder {str(self.folder)!r}", "no rows")
        return prices

    def missing(self, symbols: Iterable[str]) -> list[str]:
        """Those of ``symbols`` this folder has no file for, in their order."""
        return [symbol for symbol in symbols if not self.path(symbol).is_file()]

    def unknown(self, symbols: Sequence[str]) -> UnknownSymbol:
        """The error for symbols without a file, naming the symbols the folder has."""
        held = self.symbols()
        listing = ", ".join(held[:LISTED_SYMBOLS])
        if len(held) > LISTED_SYMBOLS:
            listing += f" and {len(held) - LISTED_SYMBOLS} more"
        if self.name == "sample":
            return UnknownSymbol(symbols, "the bundled sample", f"it holds only {listing}",
                                 available=held)  # fmt: skip
        has = f"it has {listing}" if held else "it has no <SYMBOL>.csv file"
        files = ", ".join(self.path(symbol).name for symbol in symbols)
        return UnknownSymbol(symbols, f"{self.name} folder {str(self.folder)!r}",
                             f"no {files}; {has}", available=held)  # fmt: skip

    def __repr__(self) -> str:
        return f"CsvFolderSource({str(self.folder)!r}, name={self.name!r})"


def sample_source() -> CsvFolderSource:
    """The bundled offline sample: generated prices for :data:`SAMPLE_SYMBOLS`."""
    return CsvFolderSource(SAMPLE_DIR, name="sample")


def get_source(name: str = "sample", folder: str | Path | None = None) -> PriceSource:
    """Build the source a ``--source`` flag names: "sample", "yfinance" or "csv" (with a folder)."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "sample":
        return sample_source()
    if key == "yfinance":
        return YFinanceSource()
    if key == "csv":
        if folder is None:
            raise ValueError("price source 'csv' needs a folder of <SYMBOL>.csv files")
        return CsvFolderSource(folder)
    raise ValueError(f"unknown price source {name!r}, expected one of: {', '.join(SOURCE_NAMES)}")
