"""Indicators of the stock-analysis example against values worked out by hand."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from examples.stock_analyzer.indicators import (
    MIN_ROWS,
    RESULT_FIELDS,
    SIGNAL_ORDER,
    SIGNALS,
    analyze,
    bollinger,
    ema,
    high_low,
    macd,
    max_drawdown,
    period_return,
    returns,
    rsi,
    score_signal,
    signal_for_score,
    sma,
    volatility,
)
from examples.stock_analyzer.prices import PriceDataError


def frame_from_close(close: list[float] | np.ndarray, start: str = "2022-01-03") -> pd.DataFrame:
    """Prices whose High/Low sit 1% around Close: enough for every indicator."""
    values = np.asarray(close, dtype="float64")
    return pd.DataFrame(
        {
            "Open": values,
            "High": values * 1.01,
            "Low": values * 0.99,
            "Close": values,
            "Volume": 1000.0,
        },
        index=pd.bdate_range(start, periods=len(values), name="Date"),
    )


def series(values: list[float]) -> pd.Series:
    return pd.Series(values, dtype="float64")


def random_walk(n: int, seed: int = 7) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n))))


# --- moving averages -------------------------------------------------------------------


def test_sma_of_one_to_five_with_window_three() -> None:
    result = sma(series([1, 2, 3, 4, 5]), 3)
    # (1+2+3)/3 = 2, (2+3+4)/3 = 3, (3+4+5)/3 = 4
    assert result.isna().tolist() == [True, True, False, False, False]
    assert result.iloc[2:].tolist() == [2.0, 3.0, 4.0]


def test_ema_by_hand_with_span_three() -> None:
    # span 3 -> alpha = 2/(3+1) = 0.5; e0 = 1, e1 = 0.5*2 + 0.5*1 = 1.5, e2 = 0.5*3 + 0.5*1.5 = 2.25
    assert ema(series([1, 2, 3]), 3).tolist() == [1.0, 1.5, 2.25]


def recursive_ema(values: list[float], span: int) -> list[float]:
    alpha = 2.0 / (span + 1)
    out = [values[0]]
    for x in values[1:]:
        out.append(alpha * x + (1 - alpha) * out[-1])
    return out


def test_ema_matches_the_recursive_definition() -> None:
    close = random_walk(120)
    expected = recursive_ema(close.tolist(), 20)
    assert ema(close, 20).tolist() == pytest.approx(expected, rel=1e-12)


def test_macd_matches_emas_computed_with_a_loop() -> None:
    close = random_walk(150, seed=11)
    values = close.tolist()
    fast, slow = recursive_ema(values, 12), recursive_ema(values, 26)
    line = [f - s for f, s in zip(fast, slow, strict=True)]
    signal = recursive_ema(line, 9)
    histogram = [m - s for m, s in zip(line, signal, strict=True)]

    result = macd(close)
    assert result.line.tolist() == pytest.approx(line, rel=1e-9, abs=1e-12)
    assert result.signal.tolist() == pytest.approx(signal, rel=1e-9, abs=1e-12)
    assert result.histogram.tolist() == pytest.approx(histogram, rel=1e-9, abs=1e-12)


# --- RSI -------------------------------------------------------------------------------


def test_rsi_by_hand_with_wilder_seeding() -> None:
    # changes: +1, -0.5, +1, -0.5, +1 ; period 3
    # row 3: seed = simple means: gain (1+0+1)/3 = 2/3, loss (0+0.5+0)/3 = 1/6
    #        RSI = 100 * (2/3) / (2/3 + 1/6) = 80
    # row 4: gain (2/3*2 + 0)/3 = 4/9, loss (1/6*2 + 0.5)/3 = 5/18 -> 100 * 8/13 = 61.538...
    # row 5: gain (4/9*2 + 1)/3 = 17/27, loss (5/18*2 + 0)/3 = 5/27 -> 100 * 17/22 = 77.272...
    result = rsi(series([10, 11, 10.5, 11.5, 11, 12]), period=3)
    assert result.iloc[:3].isna().all()
    assert result.iloc[3:].tolist() == pytest.approx([80.0, 800 / 13, 1700 / 22], rel=1e-12)


def test_rsi_seed_is_the_simple_mean_not_the_first_change() -> None:
    # Seeding the smoothing with the first change instead would give at row 3:
    # gain 1 -> 2/3 -> 7/9, loss 0 -> 1/6 -> 1/9, RSI = 100 * 7/8 = 87.5
    result = rsi(series([10, 11, 10.5, 11.5]), period=3)
    assert result.iloc[3] == pytest.approx(80.0)
    assert result.iloc[3] != pytest.approx(87.5)


def wilder_rsi_loop(values: list[float], period: int) -> list[float]:
    changes = [b - a for a, b in itertools.pairwise(values)]
    gains = [max(c, 0.0) for c in changes]
    losses = [max(-c, 0.0) for c in changes]
    out = [math.nan] * len(values)
    avg_gain = sum(gains[:period]) / period
    avg_loss = sum(losses[:period]) / period
    out[period] = 100 - 100 / (1 + avg_gain / avg_loss)
    for i in range(period, len(changes)):
        avg_gain = (avg_gain * (period - 1) + gains[i]) / period
        avg_loss = (avg_loss * (period - 1) + losses[i]) / period
        out[i + 1] = 100 - 100 / (1 + avg_gain / avg_loss)
    return out


def test_rsi_matches_wilders_recurrence_written_as_a_loop() -> None:
    close = random_walk(200, seed=3)
    expected = wilder_rsi_loop(close.tolist(), 14)
    result = rsi(close, 14)
    assert result.iloc[:14].isna().all()
    assert result.iloc[14:].tolist() == pytest.approx(expected[14:], rel=1e-9)


def test_rsi_is_100_with_only_gains_and_50_when_flat() -> None:
    assert rsi(series(list(range(1, 21))), 14).iloc[-1] == 100.0
    assert rsi(series([5.0] * 20), 14).iloc[-1] == 50.0


def test_rsi_is_undefined_until_period_changes_exist() -> None:
    assert rsi(series(list(range(1, 15))), 14).isna().all()  # 14 rows = 13 changes


# --- Bollinger, volatility, drawdown, returns, highs and lows --------------------------


def test_bollinger_uses_population_std() -> None:
    bands = bollinger(series([1, 2, 3, 4, 5]), window=3, width=2.0)
    # last window 3, 4, 5: mean 4, population variance (1+0+1)/3 = 2/3, std 0.8164965809
    std = 0.816496580927726
    assert bands.middle.iloc[-1] == pytest.approx(4.0)
    assert bands.upper.iloc[-1] == pytest.approx(4 + 2 * std)
    assert bands.lower.iloc[-1] == pytest.approx(4 - 2 * std)
    # %b of the close 5: (5 - lower) / (upper - lower) = (1 + 2*std) / (4*std) = 0.80618...
    assert bands.percent_b.iloc[-1] == pytest.approx((1 + 2 * std) / (4 * std))
    # the sample std of 3, 4, 5 is 1: the bands would be 2 and 6
    assert bands.upper.iloc[-1] != pytest.approx(6.0)


def test_bollinger_of_a_flat_series_has_no_percent_b() -> None:
    bands = bollinger(series([7.0] * 25))
    assert bands.upper.iloc[-1] == bands.lower.iloc[-1] == 7.0
    assert math.isnan(bands.percent_b.iloc[-1])


def test_volatility_of_alternating_log_returns() -> None:
    # log returns +a, -a, +a, -a with a = 0.01: mean 0, sample variance 4a^2/3,
    # std 2a/sqrt(3) = 0.0115470; annualized x sqrt(252) = 0.183303; in percent 18.3303
    close = np.exp(np.cumsum([0.0, 0.01, -0.01, 0.01, -0.01]))
    assert volatility(pd.Series(close)) == pytest.approx(18.330302779823, rel=1e-9)


def test_volatility_looks_at_the_last_252_returns_only() -> None:
    wild = np.exp(np.cumsum(np.tile([0.2, -0.2], 25)))
    steady = wild[-1] * 1.001 ** np.arange(1, 253)  # 252 equal log returns after the wild part
    assert volatility(pd.Series(np.concatenate([wild, steady]))) == pytest.approx(0.0, abs=1e-9)


def test_max_drawdown_by_hand() -> None:
    # peak 120, trough 90: 90/120 - 1 = -25%
    assert max_drawdown(series([100, 120, 90, 130])) == pytest.approx(-25.0)
    assert max_drawdown(series([1, 2, 3])) == 0.0


def test_period_return_in_percent_and_none_when_too_short() -> None:
    close = series([100, 101, 102, 103, 104, 110])
    assert period_return(close, 5) == pytest.approx(10.0)  # 110/100 - 1
    assert period_return(close, 2) == pytest.approx(110 / 103 * 100 - 100)
    assert period_return(close, 6) is None


def test_returns_over_week_month_quarter_year() -> None:
    close = series([100.0] * 252 + [150.0])  # 253 rows: a 252-row return exists
    assert returns(close) == pytest.approx({"1w": 50.0, "1m": 50.0, "3m": 50.0, "1y": 50.0})
    short = returns(series([100.0] * 10 + [90.0]))
    assert short["1w"] == pytest.approx(-10.0)
    assert short["1m"] is None and short["3m"] is None and short["1y"] is None


def test_high_low_over_the_last_252_rows() -> None:
    close = [100.0] * 300
    prices = frame_from_close(close)
    dates = prices.index
    prices.loc[dates[10], "High"] = 500.0  # older than 52 weeks: ignored
    prices.loc[dates[10], "Low"] = 1.0
    prices.loc[dates[100], "High"] = 180.0
    prices.loc[dates[299], "Low"] = 60.0
    assert high_low(prices) == (180.0, 60.0)


# --- signal ----------------------------------------------------------------------------


def test_signal_thresholds() -> None:
    assert [signal_for_score(s) for s in (5, 4, 3, 2, 1, 0, -1, -2, -3, -4, -7)] == [
        "strong_buy",
        "strong_buy",
        "buy",
        "buy",
        "hold",
        "hold",
        "hold",
        "sell",
        "sell",
        "strong_sell",
        "strong_sell",
    ]


def test_signal_order_sorts_strong_buy_first() -> None:
    assert list(SIGNAL_ORDER) == list(SIGNALS)
    shuffled = ["hold", "strong_sell", "buy", "sell", "strong_buy"]
    assert sorted(shuffled, key=SIGNAL_ORDER.__getitem__) == [
        "strong_buy",
        "buy",
        "hold",
        "sell",
        "strong_sell",
    ]


def zigzag_trend(n: int, daily: float) -> np.ndarray:
    """A trend of ``daily`` growth per row with a 1% up/down zigzag, so RSI stays moderate."""
    t = np.arange(n)
    return 100.0 * (1 + daily) ** t * (1 + 0.01 * (-1) ** t)


def test_steady_rise_is_on_the_buy_side() -> None:
    verdict = score_signal(pd.Series(zigzag_trend(260, 0.002)))
    assert verdict.signal in {"buy", "strong_buy"}
    assert verdict.score >= 2
    assert any("above SMA200" in r and r.endswith("(+1)") for r in verdict.reasons)
    assert "SMA50 above SMA200 (golden cross) (+1)" in verdict.reasons


def test_collapse_is_on_the_sell_side() -> None:
    verdict = score_signal(pd.Series(zigzag_trend(260, -0.004)))
    assert verdict.signal in {"sell", "strong_sell"}
    assert verdict.score <= -2
    assert any("below SMA200" in r for r in verdict.reasons)
    assert "SMA50 below SMA200 (death cross) (-1)" in verdict.reasons


def test_a_crash_reads_oversold() -> None:
    close = np.concatenate([zigzag_trend(240, 0.0), 100.0 * 0.97 ** np.arange(1, 21)])
    verdict = score_signal(pd.Series(close))
    rsi_reasons = [r for r in verdict.reasons if r.startswith("RSI ")]
    assert len(rsi_reasons) == 1
    assert "< 30: oversold (+1)" in rsi_reasons[0]
    assert float(rsi_reasons[0].split()[1]) < 30


def test_a_fresh_golden_cross_weighs_double() -> None:
    falling_then_rising = np.concatenate(
        [100.0 * 0.998 ** np.arange(200), 100.0 * 0.998**199 * 1.01 ** np.arange(1, 151)]
    )
    close = pd.Series(falling_then_rising)
    above = (sma(close, 50) > sma(close, 200)).to_numpy()
    first_above = int(np.argmax(above[200:])) + 200
    verdict = score_signal(close.iloc[: first_above + 3])
    assert "golden cross in the last 10 days: SMA50 rose above SMA200 (+2)" in verdict.reasons
    later = score_signal(close.iloc[: first_above + 30])
    assert "SMA50 above SMA200 (golden cross) (+1)" in later.reasons


def test_rules_needing_200_rows_are_skipped_on_shorter_series() -> None:
    verdict = score_signal(pd.Series(zigzag_trend(60, 0.002)))
    assert not any("SMA200" in r for r in verdict.reasons)
    assert any("SMA50" in r for r in verdict.reasons)


# --- analyze ---------------------------------------------------------------------------


def test_analyze_is_flat_json_with_every_field() -> None:
    prices = frame_from_close(zigzag_trend(300, 0.001))
    result = analyze(prices, "TCS.NS")
    assert tuple(result) == RESULT_FIELDS
    json.dumps(result, allow_nan=False)
    assert result["symbol"] == "TCS.NS"
    assert result["as_of"] == prices.index[-1].date().isoformat()
    assert result["rows"] == 300
    assert result["last_close"] == round(float(prices["Close"].iloc[-1]), 2)
    assert result["signal"] in SIGNALS
    assert isinstance(result["score"], int)
    assert all(isinstance(r, str) for r in result["reasons"])
    for key in RESULT_FIELDS:
        value = result[key]
        assert value is None or type(value) in {str, int, float, list}, key
    assert result["sma_200"] is not None and result["return_1y_pct"] is not None


def test_analyze_gives_none_not_nan_for_indicators_without_enough_rows() -> None:
    result = analyze(frame_from_close(zigzag_trend(MIN_ROWS, 0.001)), "INFY.NS")
    json.dumps(result, allow_nan=False)
    assert result["sma_50"] is None
    assert result["sma_200"] is None
    assert result["return_1m_pct"] is not None  # 30 rows > 21
    assert result["return_3m_pct"] is None
    assert result["return_1y_pct"] is None
    assert result["rsi_14"] is not None


def test_analyze_refuses_too_few_rows() -> None:
    with pytest.raises(PriceDataError, match=r"'WIPRO\.NS'.*at least 30 rows, got 29"):
        analyze(frame_from_close(zigzag_trend(MIN_ROWS - 1, 0.001)), "WIPRO.NS")


def test_analyze_refuses_frames_without_price_columns() -> None:
    prices = frame_from_close(zigzag_trend(40, 0.001)).drop(columns=["High", "Low"])
    with pytest.raises(PriceDataError, match="missing columns: High, Low"):
        analyze(prices, "ITC.NS")
