"""The deterministic generator of the bundled sample prices (not real market data).

Each symbol gets a geometric Brownian motion on business days, seeded from the symbol's
CRC-32 so the same symbol always yields the same prices. Regenerate the bundled folder
with ``python -m examples.stock_analyzer.sample`` from the repository root.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .prices import PRICE_COLUMNS, SAMPLE_DIR, SAMPLE_SYMBOLS, validate_symbol
from .words import count

__all__ = ["PROFILES", "Profile", "generate_prices", "main", "profile_for", "write_sample"]

TRADING_DAYS = 252


@dataclass(frozen=True)
class Profile:
    """How one symbol's sample prices behave: level, trend and noise."""

    start_price: float
    drift: float  # annual drift of the log price over the whole series
    volatility: float  # annualized volatility of daily log returns
    volume: int  # typical shares traded per day
    late_drift: float | None = None  # drift over the last `late_days` rows, for a turn
    late_days: int = 80


# Price levels are near where these stocks traded at the start of 2023; the trends are
# chosen so the sample covers every signal, from steady climbers to a late collapse.
PROFILES: dict[str, Profile] = {
    "TCS.NS": Profile(3250.0, 0.10, 0.20, 2_000_000),
    "INFY.NS": Profile(1500.0, 0.02, 0.24, 6_000_000, late_drift=-0.90),
    "RELIANCE.NS": Profile(2550.0, 0.14, 0.22, 6_500_000),
    "HDFCBANK.NS": Profile(1630.0, 0.00, 0.19, 9_000_000),
    "ICICIBANK.NS": Profile(890.0, 0.28, 0.22, 14_000_000),
    "SBIN.NS": Profile(610.0, 0.22, 0.27, 16_000_000, late_drift=0.80),
    "WIPRO.NS": Profile(395.0, -0.18, 0.26, 8_000_000),
    "HINDUNILVR.NS": Profile(2700.0, -0.04, 0.18, 1_500_000, late_drift=0.40),
    "ITC.NS": Profile(330.0, 0.12, 0.18, 12_000_000),
    "LT.NS": Profile(2080.0, 0.32, 0.23, 2_500_000, late_drift=-0.50),
    "BHARTIARTL.NS": Profile(800.0, 0.30, 0.21, 7_000_000),
    "ASIANPAINT.NS": Profile(3080.0, -0.22, 0.21, 1_200_000, late_drift=-0.60),
}


def profile_for(symbol: str) -> Profile:
    """The symbol's profile, or one derived from its hash for symbols not bundled."""
    symbol = validate_symbol(symbol)
    if symbol in PROFILES:
        return PROFILES[symbol]
    h = zlib.crc32(symbol.encode("utf-8"))
    return Profile(
        start_price=float(50 + h % 3000),
        drift=((h >> 12) % 61 - 30) / 100,  # -0.30 .. +0.30
        volatility=(15 + (h >> 20) % 21) / 100,  # 0.15 .. 0.35
        volume=1_000_000 + (h >> 8) % 9_000_000,
    )


def generate_prices(
    symbol: str, *, start: str = "2023-01-02", days: int = 520, seed: int | None = None
) -> pd.DataFrame:
    """Business-day OHLCV for ``symbol``, the same on every call with the same arguments.

    Close follows a geometric Brownian motion; Open gaps from the previous close; High and
    Low extend beyond both by a random intraday range; prices are rounded to 2 decimals.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    symbol = validate_symbol(symbol)
    profile = profile_for(symbol)
    rng = np.random.default_rng(zlib.crc32(symbol.encode("utf-8")) if seed is None else seed)
    dates = pd.bdate_range(start=start, periods=days, name="Date")

    dt = 1.0 / TRADING_DAYS
    drift = np.full(days, profile.drift)
    if profile.late_drift is not None:
        drift[-profile.late_days :] = profile.late_drift
    daily_sigma = profile.volatility * np.sqrt(dt)
    shocks = rng.standard_normal(days)
    log_returns = (drift - profile.volatility**2 / 2) * dt + daily_sigma * shocks
    log_returns[0] = 0.0
    close = profile.start_price * np.exp(np.cumsum(log_returns))

    previous_close = np.concatenate(([profile.start_price], close[:-1]))
    opening = previous_close * np.exp(0.3 * daily_sigma * rng.standard_normal(days))
    reach = 0.5 * daily_sigma
    high = np.maximum(opening, close) * np.exp(np.abs(reach * rng.standard_normal(days)))
    low = np.minimum(opening, close) * np.exp(-np.abs(reach * rng.standard_normal(days)))

    # Busier on days that move more, as markets are.
    activity = rng.lognormal(mean=0.0, sigma=0.35, size=days) * (1 + 8 * np.abs(log_returns))
    volume = np.maximum(1, np.round(profile.volume * activity)).astype(np.int64)

    frame = pd.DataFrame(
        {
            "Open": np.round(opening, 2),
            "High": np.round(high, 2),
            "Low": np.round(low, 2),
            "Close": np.round(close, 2),
            "Volume": volume,
        },
        index=dates,
    )
    return frame[list(PRICE_COLUMNS)]


def write_sample(
    folder: str | Path, symbols: Iterable[str], *, start: str = "2023-01-02", days: int = 520
) -> list[Path]:
    """Write ``<folder>/<SYMBOL>.csv`` for each symbol; returns the paths written."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for symbol in symbols:
        frame = generate_prices(symbol, start=start, days=days)
        path = target / f"{validate_symbol(symbol)}.csv"
        frame.to_csv(path, date_format="%Y-%m-%d", float_format="%.2f", lineterminator="\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Regenerate the bundled sample (or write it to the folder given as the one argument)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print("usage: python -m examples.stock_analyzer.sample [FOLDER]", file=sys.stderr)
        return 2
    folder = Path(args[0]) if args else SAMPLE_DIR
    paths = write_sample(folder, SAMPLE_SYMBOLS)
    size = sum(p.stat().st_size for p in paths)
    print(f"wrote {count(len(paths), 'file')} ({size / 1024:.0f} KiB) to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
