"""The jobs of the app: analyze one stock, and store its result with the job's completion.

``registry`` is what workers run: ``sqlitejobq worker --app
examples.stock_analyzer.tasks:registry --db stock_analysis.db`` (or ``--db`` a
``postgresql://`` URL).
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlitejobq import Job, PermanentFailure, Registry, TransactionConnection

from .indicators import analyze
from .prices import PriceDataError, UnknownSymbol, get_source

registry = Registry()

ANALYZE_STOCK = "analyze_stock"

_COLUMNS = ("job_id", "batch_id", "symbol", "as_of", "signal", "score", "last_close", "result",
            "analyzed_at", "source")  # fmt: skip


def _insert(placeholder: str) -> str:
    """The INSERT of one analysis, with the named placeholders of one engine's driver."""
    values = ", ".join(placeholder.format(name) for name in _COLUMNS)
    return (
        f"INSERT INTO analysis_results ({', '.join(_COLUMNS)}) VALUES ({values}) "
        f"ON CONFLICT (job_id) DO NOTHING"
    )


#: The INSERT for each ``dialect`` of the hook's connection: sqlite3 takes ``:name``,
#: psycopg ``%(name)s``.
_STORE = {"sqlite": _insert(":{}"), "postgres": _insert("%({})s")}


def store_analysis(conn: TransactionConnection, job: Job, result: dict[str, Any]) -> None:
    """Write the analysis in the transaction that completes the job: both or neither.

    ``conn`` is the completion's transaction, on SQLite or PostgreSQL (``conn.dialect``).
    """
    conn.execute(_STORE[conn.dialect], {
        "job_id": job.id, "batch_id": job.batch_id, "symbol": result["symbol"],
        "as_of": result["as_of"], "signal": result["signal"], "score": result["score"],
        "last_close": result["last_close"], "result": json.dumps(result),
        "analyzed_at": time.time(), "source": result["source"],
    })  # fmt: skip


@registry.task(ANALYZE_STOCK, max_attempts=3, lease=60.0, backoff=2.0,
               on_complete=store_analysis)  # fmt: skip
def analyze_stock(job: Job) -> dict[str, Any]:
    """Load a symbol's prices and compute its indicators and signal.

    Payload: ``{"symbol": "TCS.NS", "source": "sample" | "yfinance" | "csv",
    "folder": "..." (for csv), "delay": seconds of pretend network time (demos)}``.
    """
    payload = job.payload
    symbol, source_name = payload["symbol"], payload.get("source", "sample")
    job.set_progress(0.1, f"loading {symbol} from {source_name}")
    try:
        prices = get_source(source_name, payload.get("folder")).load(symbol)
    except (UnknownSymbol, PriceDataError) as exc:
        raise PermanentFailure(str(exc)) from exc  # retrying will not make the data appear
    _pretend_network_time(job, float(payload.get("delay", 0.0)))
    job.set_progress(0.7, f"computing indicators over {len(prices)} days")
    result = analyze(prices, symbol)
    result["source"] = source_name
    return result


def _pretend_network_time(job: Job, seconds: float) -> None:
    """Spread a demo delay over small sleeps, giving up early if the job is cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not job.cancelled:
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
