"""The jobs of the app: analyze one stock, summarize a finished batch, refresh the
watchlist every day. Analyses and summaries are stored with their job's completion.

``registry`` is what workers run: ``sqlitejobq worker --db stock_analysis.db --app
examples.stock_analyzer.tasks:registry`` (or ``--db`` a ``postgresql://`` URL; the command
hands it to the handlers as ``$SQLITEJOBQ_DB``, which the summary and the refresh use to
reach the database: see ``database``).

- ``analyze_stock``: one symbol from the bundled sample or a CSV folder; no limit. An
  ``async def`` handler: a worker runs many at once on its event loop, each loading its
  prices and computing its indicators in a thread (``asyncio.to_thread``).
- ``analyze_stock_online``: the same for yfinance, at most 2 starts per second and 4
  running at once across every worker and host (Yahoo throttles clients that ask faster).
- ``summarize_batch``: runs once every job of a batch has finished (``then=``); ranks the
  batch's analyses (see ``summary``) into the ``batch_summaries`` table.
- ``refresh_watchlist``: every day at 16:00 Asia/Kolkata, after the NSE closes, analyzes the
  watchlist (``$STOCK_WATCHLIST``, comma-separated; default: the sample's 12 symbols) from
  the sample source as one batch, with its summary. Long-running workers fire it (the API's,
  ``sqlitejobq worker``), one job per day however many run; the script's do not.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pandas as pd

from sqlitejobq import Job, JobNotFound, PermanentFailure, Registry, TransactionConnection
from sqlitejobq.job import AsyncJob

from .batches import (
    ANALYZE_STOCK,
    ANALYZE_STOCK_ONLINE,
    SUMMARIZE_BATCH,
    SourceConfig,
    start_analysis,
)
from .database import handler_queue, read_rows
from .indicators import analyze
from .prices import SAMPLE_SYMBOLS, PriceDataError, UnknownSymbol, get_source
from .summary import summarize
from .words import count

__all__ = [
    "ANALYZE_STOCK",
    "ANALYZE_STOCK_ONLINE",
    "ONLINE_LIMIT",
    "ONLINE_RATE",
    "REFRESH_SCHEDULE",
    "REFRESH_TIMEZONE",
    "REFRESH_WATCHLIST",
    "SUMMARIZE_BATCH",
    "WATCHLIST_ENV",
    "analyze_stock",
    "refresh_watchlist",
    "registry",
    "store_analysis",
    "store_summary",
    "summarize_batch",
    "watchlist",
]

registry = Registry()

REFRESH_WATCHLIST = "refresh_watchlist"
#: yfinance loads: at most this many starts per second across every worker and host...
ONLINE_RATE = "2/s"
#: ...and at most this many running at once.
ONLINE_LIMIT = 4
#: The daily refresh: 16:00 in Mumbai, half an hour after the NSE closes (15:30 IST).
REFRESH_SCHEDULE = "0 16 * * *"
REFRESH_TIMEZONE = "Asia/Kolkata"
#: Comma-separated symbols the daily refresh analyzes (default: the sample's 12).
WATCHLIST_ENV = "STOCK_WATCHLIST"

_COLUMNS = ("job_id", "batch_id", "symbol", "as_of", "signal", "score", "last_close", "result",
            "analyzed_at", "source")  # fmt: skip
_SUMMARY_COLUMNS = ("batch_id", "job_id", "created_at", "completed", "failed", "best_symbol",
                    "ranking", "failures")  # fmt: skip


def _insert(placeholder: str) -> str:
    """The INSERT of one analysis, with the named placeholders of one engine's driver."""
    values = ", ".join(placeholder.format(name) for name in _COLUMNS)
    return (
        f"INSERT INTO analysis_results ({', '.join(_COLUMNS)}) VALUES ({values}) "
        f"ON CONFLICT (job_id) DO NOTHING"
    )


def _upsert_summary(placeholder: str) -> str:
    """The INSERT of a batch's summary, replacing an older one (a summary job run again)."""
    values = ", ".join(placeholder.format(name) for name in _SUMMARY_COLUMNS)
    updates = ", ".join(f"{name} = excluded.{name}" for name in _SUMMARY_COLUMNS[1:])
    return (
        f"INSERT INTO batch_summaries ({', '.join(_SUMMARY_COLUMNS)}) VALUES ({values}) "
        f"ON CONFLICT (batch_id) DO UPDATE SET {updates}"
    )


#: The statements for each ``dialect`` of the hook's connection: sqlite3 takes ``:name``,
#: psycopg ``%(name)s``.
_STORE = {"sqlite": _insert(":{}"), "postgres": _insert("%({})s")}
_STORE_SUMMARY = {"sqlite": _upsert_summary(":{}"), "postgres": _upsert_summary("%({})s")}
_ANALYSES_OF_BATCH = {
    "sqlite": "SELECT job_id, result FROM analysis_results WHERE batch_id = ?",
    "postgres": "SELECT job_id, result FROM analysis_results WHERE batch_id = %s",
}


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


@registry.task(ANALYZE_STOCK_ONLINE, max_attempts=3, lease=60.0, backoff=2.0,
               on_complete=store_analysis, limit=ONLINE_LIMIT, rate=ONLINE_RATE)  # fmt: skip
@registry.task(ANALYZE_STOCK, max_attempts=3, lease=60.0, backoff=2.0,
               on_complete=store_analysis)  # fmt: skip
async def analyze_stock(job: AsyncJob) -> dict[str, Any]:
    """Load a symbol's prices and compute its indicators and signal, on the worker's event
    loop: the load and the computation run in threads, the loop never waits for them.

    Payload: ``{"symbol": "TCS.NS", "source": "sample" | "yfinance" | "csv",
    "folder": "..." (for csv), "delay": seconds of pretend network time (demos)}``.
    """
    payload = job.payload
    symbol, source_name = payload["symbol"], payload.get("source", "sample")
    await job.set_progress(0.1, f"loading {symbol} from {source_name}")
    try:  # yfinance and the files are blocking I/O: a thread's, not the loop's
        prices = await asyncio.to_thread(_load, source_name, payload.get("folder"), symbol)
    except (UnknownSymbol, PriceDataError) as exc:
        raise PermanentFailure(str(exc)) from exc  # retrying will not make the data appear
    # pretend network time (demos): a cancel of the job interrupts it (CancelledError)
    await asyncio.sleep(float(payload.get("delay", 0.0)))
    await job.set_progress(0.7, f"computing indicators over {count(len(prices), 'day')}")
    result = await asyncio.to_thread(analyze, prices, symbol)  # pandas: CPU, off the loop
    result["source"] = source_name
    if source_name == "csv":  # where to find these prices again (a chart of the analysis)
        result["folder"] = payload.get("folder")
    return result


def _load(source_name: str, folder: str | None, symbol: str) -> pd.DataFrame:
    """The symbol's prices from the named source (blocking: run it in a thread)."""
    return get_source(source_name, folder).load(symbol)


def store_summary(conn: TransactionConnection, job: Job, summary: dict[str, Any]) -> None:
    """Write the batch's summary in the transaction that completes its job: both or neither."""
    conn.execute(_STORE_SUMMARY[conn.dialect], {
        "batch_id": summary["batch_id"], "job_id": job.id, "created_at": time.time(),
        "completed": summary["completed"], "failed": summary["failed"],
        "best_symbol": summary["best_symbol"], "ranking": json.dumps(summary["ranking"]),
        "failures": json.dumps(summary["failures"]),
    })  # fmt: skip


@registry.task(SUMMARIZE_BATCH, max_attempts=3, backoff=2.0, on_complete=store_summary)
def summarize_batch(job: Job) -> dict[str, Any]:
    """Rank a finished batch's stored analyses and list its failed symbols.

    Payload: ``{"batch_id": 7}`` (``enqueue_batch(..., then=)`` adds it).
    """
    batch_id = job.payload.get("batch_id") if isinstance(job.payload, dict) else None
    if isinstance(batch_id, bool) or not isinstance(batch_id, int):
        raise PermanentFailure(f"the payload must hold an int batch_id, got {job.payload!r}")
    with handler_queue(job, registry) as queue:
        try:
            queue.batch_progress(batch_id)
        except JobNotFound as exc:
            raise PermanentFailure(str(exc)) from exc
        jobs = queue.batch_jobs(batch_id)
        rows = read_rows(queue, _ANALYSES_OF_BATCH, (batch_id,))
    return summarize(batch_id, jobs, {int(job_id): json.loads(text) for job_id, text in rows})


def watchlist() -> list[str]:
    """The symbols the daily refresh analyzes: ``$STOCK_WATCHLIST``, else the sample's."""
    text = os.environ.get(WATCHLIST_ENV, "").strip()
    if not text:
        return list(SAMPLE_SYMBOLS)
    return [symbol.strip() for symbol in text.split(",") if symbol.strip()]


@registry.task(REFRESH_WATCHLIST, max_attempts=3, backoff=10.0, schedule=REFRESH_SCHEDULE,
               timezone=REFRESH_TIMEZONE)  # fmt: skip
def refresh_watchlist(job: Job) -> dict[str, Any]:
    """Analyze the watchlist from the sample source as one batch, with its summary job.

    Payload: ``{"slot": "2025-01-02T10:30:00Z"}``, the day's slot (the schedule sets it).
    """
    symbols = watchlist()
    with handler_queue(job, registry) as queue:
        try:
            batch = start_analysis(queue, symbols, SourceConfig("sample"))
        except ValueError as exc:
            raise PermanentFailure(f"${WATCHLIST_ENV}={os.environ.get(WATCHLIST_ENV)!r}: "
                                   f"{exc}") from exc  # fmt: skip
    slot = job.payload.get("slot") if isinstance(job.payload, dict) else None
    return {"slot": slot, "batch_id": batch.id, "summary_job_id": batch.then_id,
            "symbols": len(batch.job_ids)}  # fmt: skip
