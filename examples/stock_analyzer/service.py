"""What the script and the HTTP API share: open the queue, start a batch, report on it.

The script calls the plain functions; the API, on an event loop, awaits ``batch_report_async``
and runs the reads of the app's tables in threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sqlitejobq import AsyncQueue, BatchProgress, Job, JobNotFound, JobStatus, Queue
from sqlitejobq.backends import is_postgres_target

from .batches import (
    MAX_SYMBOLS,
    SourceConfig,
    check_available,
    check_symbols,
    start_analysis,
    start_analysis_async,
)
from .database import AppQueue, app_worker, open_app_queue, read_rows
from .prices import PriceDataError, get_source, validate_symbol
from .tasks import registry
from .words import shown

__all__ = [
    "DEFAULT_DB",
    "MAX_ID",
    "MAX_SYMBOLS",
    "AppQueue",
    "SourceConfig",
    "app_worker",
    "batch_report",
    "batch_report_async",
    "batch_summary",
    "check_available",
    "check_id",
    "check_symbols",
    "describe",
    "latest_analysis",
    "open_queue",
    "prices_of_analysis",
    "results_of_batch",
    "start_analysis",
    "start_analysis_async",
    "summary_job_id",
    "symbol_report",
]

DEFAULT_DB = "stock_analysis.db"
#: Job and batch ids are counted from 1 in 64-bit integers, on both engines.
MAX_ID = 2**63 - 1

#: The app's reads, in each engine's SQL: sqlite3 takes ``?``, psycopg ``%s``; symbols sort
#: by code point on both (PostgreSQL would otherwise follow the database's collation).
_LATEST = {
    "sqlite": "SELECT result, job_id, batch_id, analyzed_at FROM analysis_results "
    "WHERE symbol = ? ORDER BY analyzed_at DESC LIMIT 1",
    "postgres": "SELECT result, job_id, batch_id, analyzed_at FROM analysis_results "
    "WHERE symbol = %s ORDER BY analyzed_at DESC LIMIT 1",
}
_OF_BATCH = {
    "sqlite": "SELECT result, job_id, batch_id, analyzed_at FROM analysis_results "
    "WHERE batch_id = ? ORDER BY symbol",
    "postgres": "SELECT result, job_id, batch_id, analyzed_at FROM analysis_results "
    'WHERE batch_id = %s ORDER BY symbol COLLATE "C"',
}
_SUMMARY_JOB = {
    "sqlite": "SELECT summary_job_id FROM analysis_batches WHERE batch_id = ?",
    "postgres": "SELECT summary_job_id FROM analysis_batches WHERE batch_id = %s",
}
_SUMMARY = {
    "sqlite": "SELECT job_id, created_at, completed, failed, best_symbol, ranking, failures "
    "FROM batch_summaries WHERE batch_id = ?",
    "postgres": "SELECT job_id, created_at, completed, failed, best_symbol, ranking, failures "
    "FROM batch_summaries WHERE batch_id = %s",
}


def check_id(value: object, what: str) -> int:
    """``value`` as a job or batch id: an int, or decimal digits as a URL or a command line
    gives them; ValueError naming ``what``, the value and the range if no id can be it."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        # the length first: int() of thousands of digits is slow, then refused by Python
        number = int(value) if len(value) <= len(str(MAX_ID)) else MAX_ID + 1
    if number is None or not 1 <= number <= MAX_ID:
        raise ValueError(f"{what} must be a whole number from 1 to {MAX_ID}, got {shown(value)}")
    return number


def describe(queue: Queue) -> str:
    """The database for messages: the SQLite file's name, or the URL without its password."""
    return queue.target if is_postgres_target(queue.target) else Path(queue.target).name


def open_queue(db: str | os.PathLike[str] = DEFAULT_DB) -> AppQueue:
    """The job queue and the app's tables, in one database: a SQLite file, or a PostgreSQL
    database (``postgresql://user@host/db?schema=NAME``). Run it with ``app_worker``."""
    return open_app_queue(db, registry)


def batch_report(queue: Queue, batch_id: int) -> dict[str, Any]:
    """The batch's status (queued, processing, completed or completed_with_errors), counts
    and percent, where each symbol is, and the job that summarizes the finished batch."""
    progress = queue.batch_progress(batch_id)
    return _report(progress, queue.batch_jobs(batch_id), summary_job_id(queue, batch_id))


async def batch_report_async(queue: AsyncQueue, batch_id: int) -> dict[str, Any]:
    """``batch_report`` for asyncio code: its three reads at once, on threads, never on the
    event loop (JobNotFound if there is no such batch)."""
    progress, jobs, summary_job = await asyncio.gather(
        queue.batch_progress(batch_id),
        queue.batch_jobs(batch_id),
        asyncio.to_thread(summary_job_id, queue.queue, batch_id),
    )
    return _report(progress, jobs, summary_job)


def _report(progress: BatchProgress, jobs: list[Job], summary_job: int | None) -> dict[str, Any]:
    """The report of a batch from its counts, its jobs and its summary job's id."""
    if not progress.done:
        status = "queued" if progress.queued == progress.total else "processing"
    elif progress.completed == progress.total:
        status = "completed"
    else:
        status = "completed_with_errors"
    symbols = [symbol_report(job) for job in jobs]
    return {**progress.as_dict(), "status": status, "summary_job_id": summary_job,
            "symbols": symbols}  # fmt: skip


def symbol_report(job: Job) -> dict[str, Any]:
    """Where one symbol's job is: progress and message of the run at work (none while it
    waits, no message once it has finished), and the error that failed it or its last try."""
    # A failed or cancelled job's last message ("loading X") is no longer true, and a job
    # waiting for a retry keeps the progress of the attempt that failed: neither is shown.
    at_work = job.status is JobStatus.PROCESSING
    waiting = job.status is JobStatus.QUEUED
    return {
        "symbol": job.payload["symbol"], "job_id": job.id, "status": job.status.value,
        "progress": 0.0 if waiting else job.progress,
        "message": job.progress_message if at_work else None, "attempts": job.attempts,
        "error": job.error if job.status in (JobStatus.FAILED, JobStatus.QUEUED) else None,
    }  # fmt: skip


def latest_analysis(queue: Queue, symbol: str) -> dict[str, Any] | None:
    """The newest stored analysis of ``symbol``, or None."""
    rows = read_rows(queue, _LATEST, (validate_symbol(symbol),))
    return _stored(rows[0]) if rows else None


def results_of_batch(queue: Queue, batch_id: int) -> list[dict[str, Any]]:
    """The analyses the batch stored, one per completed job, by symbol."""
    rows = read_rows(queue, _OF_BATCH, (check_id(batch_id, "batch_id"),))
    return [_stored(row) for row in rows]


def _stored(row: Sequence[Any]) -> dict[str, Any]:
    """A row of ``analysis_results`` as one dict: the analysis (its ``result``) and the job
    that stored it, its batch and when."""
    result, job_id, batch_id, analyzed_at = row
    return {**json.loads(result), "job_id": job_id, "batch_id": batch_id,
            "analyzed_at": analyzed_at}  # fmt: skip


def prices_of_analysis(queue: Queue, analysis: Mapping[str, Any]) -> pd.DataFrame:
    """The prices a stored ``analysis`` was computed from, loaded again from its source:
    its ``rows`` days up to its ``as_of`` date (blocking: asyncio code runs it in a thread).

    UnknownSymbol if the source has no prices for the symbol any more; PriceDataError if
    they are no longer those the analysis saw (another last close: analyze it again).
    """
    symbol, as_of = str(analysis["symbol"]), str(analysis["as_of"])
    source = get_source(str(analysis.get("source", "sample")), _folder_of(queue, analysis))
    prices = source.load(symbol)
    end = pd.Timestamp(as_of)
    kept = prices.loc[:end].tail(int(analysis["rows"]))
    close = None if kept.empty or kept.index[-1] != end else round(float(kept["Close"].iloc[-1]), 2)
    if close is None or close != analysis["last_close"]:
        found = "none that day" if close is None else f"close {close}"
        raise PriceDataError(
            f"the prices of {symbol} from {source.name} are not those of its analysis as of "
            f"{as_of} (close {analysis['last_close']}; {found} now): analyze it again"
        )
    return kept


def _folder_of(queue: Queue, analysis: Mapping[str, Any]) -> str | None:
    """The CSV folder of an analysis from the csv source: stored with it, or, for one
    stored before analyses kept it, its job's."""
    if analysis.get("source") != "csv":
        return None
    if analysis.get("folder"):
        return str(analysis["folder"])
    try:
        payload = queue.get(int(analysis["job_id"])).payload
    except JobNotFound:
        raise PriceDataError(
            f"the CSV folder of the analysis of {analysis['symbol']} is unknown: its job "
            f"{analysis['job_id']} was purged; analyze it again"
        ) from None
    folder = payload.get("folder") if isinstance(payload, dict) else None
    return None if folder is None else str(folder)


def summary_job_id(queue: Queue, batch_id: int) -> int | None:
    """The job that summarizes the batch once it has finished (None: the batch was not
    started by this app, or before it had summaries)."""
    rows = read_rows(queue, _SUMMARY_JOB, (check_id(batch_id, "batch_id"),))
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def batch_summary(queue: Queue, batch_id: int) -> dict[str, Any] | None:
    """The stored summary of a finished batch (its ranking, best first, and its failed
    symbols), or None if there is none yet."""
    rows = read_rows(queue, _SUMMARY, (check_id(batch_id, "batch_id"),))
    if not rows:
        return None
    job_id, created_at, completed, failed, best, ranking, failures = rows[0]
    return {
        "batch_id": batch_id, "job_id": int(job_id), "created_at": float(created_at),
        "completed": int(completed), "failed": int(failed), "best_symbol": best,
        "ranking": json.loads(ranking), "failures": json.loads(failures),
    }  # fmt: skip
