"""Technical indicators and a rule-based signal, computed with vectorized pandas.

Conventions, each pinned by a test:
- EMA is the recursive ``e[0] = x[0]``, ``e[t] = a*x[t] + (1-a)*e[t-1]`` with
  ``a = 2/(span+1)`` (pandas ``ewm(span, adjust=False)``).
- RSI uses Wilder's smoothing seeded as Wilder did: the first average gain (loss) is the
  simple mean of the first ``period`` gains (losses); after that
  ``avg[t] = (avg[t-1]*(period-1) + x[t]) / period``, i.e. ``ewm(alpha=1/period, adjust=False)``.
- Bollinger bands use the population standard deviation (``ddof=0``), as Bollinger does.
- Volatility is the sample standard deviation (``ddof=1``) of the last 252 daily log
  returns, times sqrt(252), in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .prices import PriceDataError, normalize_prices

__all__ = [
    "MIN_ROWS",
    "RESULT_FIELDS",
    "RETURN_WINDOWS",
    "SIGNALS",
    "SIGNAL_ORDER",
    "Bollinger",
    "Macd",
    "Signal",
    "analyze",
    "bollinger",
    "ema",
    "high_low",
    "macd",
    "max_drawdown",
    "period_return",
    "returns",
    "rsi",
    "score_signal",
    "signal_for_score",
    "sma",
    "volatility",
]

MIN_ROWS = 30
TRADING_DAYS = 252
RETURN_WINDOWS: Mapping[str, int] = MappingProxyType({"1w": 5, "1m": 21, "3m": 63, "1y": 252})
SIGNALS: tuple[str, ...] = ("strong_buy", "buy", "hold", "sell", "strong_sell")
SIGNAL_ORDER: Mapping[str, int] = MappingProxyType({s: i for i, s in enumerate(SIGNALS)})
RSI_OVERSOLD = 30.0
RSI_OVERBOUGHT = 70.0
FRESH_CROSS_DAYS = 10  # a golden/death cross this recent weighs double

RESULT_FIELDS: tuple[str, ...] = (
    "symbol",
    "as_of",
    "rows",
    "last_close",
    *(f"return_{label}_pct" for label in RETURN_WINDOWS),
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_20",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "bb_percent_b",
    "volatility_annual_pct",
    "max_drawdown_pct",
    "high_52w",
    "low_52w",
    "signal",
    "score",
    "reasons",
)


class Macd(NamedTuple):
    line: pd.Series
    signal: pd.Series
    histogram: pd.Series


class Bollinger(NamedTuple):
    upper: pd.Series
    middle: pd.Series
    lower: pd.Series
    percent_b: pd.Series  # 0 at the lower band, 1 at the upper band


class Signal(NamedTuple):
    signal: str
    score: int
    reasons: list[str]


def period_return(close: pd.Series, periods: int) -> float | None:
    """Simple return in percent over the last ``periods`` rows; None if the series is shorter."""
    if periods < 1:
        raise ValueError(f"periods must be >= 1, got {periods}")
    if len(close) <= periods:
        return None
    return float((close.iloc[-1] / close.iloc[-1 - periods] - 1.0) * 100.0)


def returns(close: pd.Series) -> dict[str, float | None]:
    """Returns in percent over 1 week, 1 month, 3 months and 1 year of trading days."""
    return {label: period_return(close, n) for label, n in RETURN_WINDOWS.items()}


def sma(series: pd.Series, window: int) -> pd.Series:
    """Simple moving average; NaN until ``window`` values exist."""
    return series.rolling(window, min_periods=window).mean()


def ema(series: pd.Series, span: int) -> pd.Series:
    """Exponential moving average, recursive and seeded with the first value."""
    return series.ewm(span=span, adjust=False).mean()


def _wilder_average(values: pd.Series, period: int) -> pd.Series:
    """Wilder's smoothing of ``values[1:]``, seeded with the mean of the first ``period``."""
    if len(values) <= period:
        return pd.Series(np.nan, index=values.index, dtype="float64")
    tail = values.iloc[period:].copy()
    tail.iloc[0] = values.iloc[1 : period + 1].mean()
    smoothed = tail.ewm(alpha=1.0 / period, adjust=False).mean()
    return smoothed.reindex(values.index)


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's relative strength index, 0..100; NaN for the first ``period`` rows.

    A window with neither gains nor losses reads 50 (neutral).
    """
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    delta = close.diff()
    gain = _wilder_average(delta.clip(lower=0.0), period)
    loss = _wilder_average((-delta).clip(lower=0.0), period)
    total = gain + loss
    # 100*gain/(gain+loss) equals 100 - 100/(1+gain/loss) and needs no special case at loss=0.
    value = (100.0 * gain / total.where(total != 0)).where(total != 0, 50.0)
    return value.where(gain.notna())


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> Macd:
    """MACD line (fast EMA - slow EMA), its signal line (EMA of the line), and the histogram."""
    line = ema(close, fast) - ema(close, slow)
    signal_line = ema(line, signal)
    return Macd(line, signal_line, line - signal_line)


def bollinger(close: pd.Series, window: int = 20, width: float = 2.0) -> Bollinger:
    """Bollinger bands: SMA ± ``width`` population standard deviations, and %b."""
    middle = sma(close, window)
    spread = width * close.rolling(window, min_periods=window).std(ddof=0)
    upper, lower = middle + spread, middle - spread
    band = (upper - lower).where(upper != lower)
    return Bollinger(upper, middle, lower, (close - lower) / band)


def volatility(close: pd.Series, window: int = TRADING_DAYS) -> float | None:
    """Annualized volatility in percent of the last ``window`` daily log returns."""
    log_returns = np.log(close).diff().dropna().tail(window)
    if len(log_returns) < 2:
        return None
    return float(log_returns.std(ddof=1) * math.sqrt(TRADING_DAYS) * 100.0)


def max_drawdown(close: pd.Series) -> float | None:
    """Largest fall from a running peak, in percent (0 or negative) over the whole series."""
    if close.empty:
        return None
    return float((close / close.cummax() - 1.0).min() * 100.0)


def high_low(prices: pd.DataFrame, window: int = TRADING_DAYS) -> tuple[float, float]:
    """Highest High and lowest Low over the last ``window`` rows (52 weeks by default)."""
    recent = prices.tail(window)
    return float(recent["High"].max()), float(recent["Low"].min())


def signal_for_score(score: int) -> str:
    """Map a score to a signal: >= 4 strong_buy, >= 2 buy, <= -2 sell, <= -4 strong_sell."""
    if score >= 4:
        return "strong_buy"
    if score >= 2:
        return "buy"
    if score <= -4:
        return "strong_sell"
    if score <= -2:
        return "sell"
    return "hold"


def _last(series: pd.Series) -> float | None:
    if series.empty:
        return None
    value = float(series.iloc[-1])
    return value if math.isfinite(value) else None


def score_signal(close: pd.Series) -> Signal:
    """Score the last row with plain rules, each adding -2..+2, and say why.

    Trend: price above/below SMA50 and SMA200 (±1 each); SMA50 above/below SMA200 (±1,
    ±2 when the golden/death cross happened in the last 10 rows). Momentum: MACD
    histogram sign (±1). Mean reversion: RSI(14) under 30 / over 70 (±1), close
    under the lower / over the upper Bollinger band (±1). Rules whose indicator is not
    available yet (too few rows) are skipped.
    """
    price = float(close.iloc[-1])
    sma50_series, sma200_series = sma(close, 50), sma(close, 200)
    sma50, sma200 = _last(sma50_series), _last(sma200_series)
    rsi14 = _last(rsi(close, 14))
    hist = _last(macd(close).histogram)
    bands = bollinger(close)
    upper, lower = _last(bands.upper), _last(bands.lower)

    score = 0
    reasons: list[str] = []

    def rule(points: int, reason: str) -> None:
        nonlocal score
        score += points
        reasons.append(f"{reason} ({points:+d})")

    for label, average in (("SMA50", sma50), ("SMA200", sma200)):
        if average is None:
            continue
        if price > average:
            rule(+1, f"price {price:.2f} above {label} {average:.2f}: uptrend")
        elif price < average:
            rule(-1, f"price {price:.2f} below {label} {average:.2f}: downtrend")

    if sma50 is not None and sma200 is not None and sma50 != sma200:
        above = (sma50_series > sma200_series)[sma200_series.notna()].astype("int8")
        crossed = bool(above.diff().iloc[1:].ne(0).iloc[-FRESH_CROSS_DAYS:].any())
        if sma50 > sma200:
            if crossed:
                rule(
                    +2, f"golden cross in the last {FRESH_CROSS_DAYS} days: SMA50 rose above SMA200"
                )
            else:
                rule(+1, "SMA50 above SMA200 (golden cross)")
        elif crossed:
            rule(-2, f"death cross in the last {FRESH_CROSS_DAYS} days: SMA50 fell below SMA200")
        else:
            rule(-1, "SMA50 below SMA200 (death cross)")

    if rsi14 is not None:
        if rsi14 < RSI_OVERSOLD:
            rule(+1, f"RSI {rsi14:.1f} < {RSI_OVERSOLD:.0f}: oversold")
        elif rsi14 > RSI_OVERBOUGHT:
            rule(-1, f"RSI {rsi14:.1f} > {RSI_OVERBOUGHT:.0f}: overbought")

    if hist is not None and hist != 0:
        if hist > 0:
            rule(+1, f"MACD histogram {hist:+.2f} > 0: bullish momentum")
        else:
            rule(-1, f"MACD histogram {hist:+.2f} < 0: bearish momentum")

    if lower is not None and price < lower:
        rule(+1, f"price {price:.2f} below lower Bollinger band {lower:.2f}: stretched down")
    elif upper is not None and price > upper:
        rule(-1, f"price {price:.2f} above upper Bollinger band {upper:.2f}: stretched up")

    return Signal(signal_for_score(score), score, reasons)


def _rounded(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def analyze(prices: pd.DataFrame, symbol: str) -> dict[str, Any]:
    """Every indicator and the signal for the last row, as a flat JSON-ready dict.

    Values are plain floats (None where an indicator needs more rows than there are);
    keys are :data:`RESULT_FIELDS`. Raises :class:`PriceDataError` below 30 rows.
    """
    prices = normalize_prices(prices, symbol)
    if len(prices) < MIN_ROWS:
        raise PriceDataError(
            f"not enough prices to analyze {symbol!r}: need at least {MIN_ROWS} rows,"
            f" got {len(prices)}"
        )
    close = prices["Close"]
    last_date = pd.Timestamp(prices.index[-1])
    as_of = (
        last_date.date().isoformat()
        if last_date == last_date.normalize()
        else last_date.isoformat()
    )
    lines = macd(close)
    bands = bollinger(close)
    high, low = high_low(prices)
    verdict = score_signal(close)

    result: dict[str, Any] = {
        "symbol": symbol,
        "as_of": as_of,
        "rows": len(prices),
        "last_close": _rounded(_last(close), 2),
    }
    for label, value in returns(close).items():
        result[f"return_{label}_pct"] = _rounded(value, 2)
    result.update(
        {
            "sma_20": _rounded(_last(sma(close, 20)), 2),
            "sma_50": _rounded(_last(sma(close, 50)), 2),
            "sma_200": _rounded(_last(sma(close, 200)), 2),
            "ema_20": _rounded(_last(ema(close, 20)), 2),
            "rsi_14": _rounded(_last(rsi(close, 14)), 2),
            "macd": _rounded(_last(lines.line), 4),
            "macd_signal": _rounded(_last(lines.signal), 4),
            "macd_hist": _rounded(_last(lines.histogram), 4),
            "bb_upper": _rounded(_last(bands.upper), 2),
            "bb_middle": _rounded(_last(bands.middle), 2),
            "bb_lower": _rounded(_last(bands.lower), 2),
            "bb_percent_b": _rounded(_last(bands.percent_b), 4),
            "volatility_annual_pct": _rounded(volatility(close), 2),
            "max_drawdown_pct": _rounded(max_drawdown(close), 2),
            "high_52w": _rounded(high, 2),
            "low_52w": _rounded(low, 2),
            "signal": verdict.signal,
            "score": verdict.score,
            "reasons": verdict.reasons,
        }
    )
    return result
