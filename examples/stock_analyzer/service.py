"""What the script and the HTTP API share: open the queue, start a batch, report on it."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlitejobq import Batch, JobStatus, Queue
from sqlitejobq.backends import is_postgres_target

from .prices import SOURCE_NAMES, validate_symbol
from .schema import migrate_app
from .tasks import ANALYZE_STOCK, registry

DEFAULT_DB = "stock_analysis.db"
#: The most symbols one batch may hold (the original app analyzed a few hundred at most).
MAX_SYMBOLS = 1000

#: The app's reads, in each engine's SQL: sqlite3 takes ``?``, psycopg ``%s``; symbols sort
#: by code point on both (PostgreSQL would otherwise follow the database's collation).
_LATEST = {
    "sqlite": "SELECT result, job_id, batch_id, analyzed_at FROM analysis_results "
    "WHERE symbol = ? ORDER BY analyzed_at DESC LIMIT 1",
    "postgres": "SELECT result, job_id, batch_id, analyzed_at FROM analysis_results "
    "WHERE symbol = %s ORDER BY analyzed_at DESC LIMIT 1",
}
_OF_BATCH = {
    "sqlite": "SELECT result FROM analysis_results WHERE batch_id = ? ORDER BY symbol",
    "postgres": "SELECT result FROM analysis_results WHERE batch_id = %s "
    'ORDER BY symbol COLLATE "C"',
}


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where the workers load prices from, and an optional pretend delay per symbol."""

    name: str = "sample"
    folder: str | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in SOURCE_NAMES:
            raise ValueError(f"source must be one of {', '.join(SOURCE_NAMES)}, got {self.name!r}")
        if self.name == "csv" and not self.folder:
            raise ValueError("the csv source needs a folder of <SYMBOL>.csv files")
        if self.folder is not None and not Path(self.folder).is_dir():
            raise ValueError(f"price folder {self.folder!r} is not a directory")
        if not 0.0 <= self.delay <= 60.0:
            raise ValueError(f"delay must be between 0 and 60 seconds, got {self.delay}")


class AppQueue(Queue):
    """The app's job queue: it keeps the database string it was opened with, because
    ``target`` hides the password of a URL and the app's reads connect on their own."""

    def __init__(self, db: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(db, **options)
        self.database = os.fspath(db)


def describe(queue: Queue) -> str:
    """The database for messages: the SQLite file's name, or the URL without its password."""
    return queue.target if is_postgres_target(queue.target) else Path(queue.target).name


def _read(queue: Queue, queries: Mapping[str, str], params: Sequence[Any]) -> list[Any]:
    """The rows of one query (given in each engine's SQL) on the queue's database, on a
    connection of its own."""
    database = queue.database if isinstance(queue, AppQueue) else queue.target
    if not is_postgres_target(database):
        with closing(sqlite3.connect(database)) as conn:
            return conn.execute(queries["sqlite"], params).fetchall()
    import psycopg  # only a URL needs the driver (the postgres extra)

    from sqlitejobq.backends.postgres.connection import split_schema

    url, schema = split_schema(database)
    with psycopg.connect(url, autocommit=True, connect_timeout=5,
                         options=f"-c search_path={schema or 'public'}") as conn:  # fmt: skip
        return conn.execute(queries["postgres"], params).fetchall()


def open_queue(db: str | os.PathLike[str] = DEFAULT_DB) -> AppQueue:
    """The job queue and the app's tables, in one database: a SQLite file, or a PostgreSQL
    database (``postgresql://user@host/db?schema=NAME``)."""
    queue = AppQueue(db, registry=registry)
    try:
        migrate_app(queue.database)
    except BaseException:
        queue.close()
        raise
    return queue


def check_symbols(symbols: Sequence[object]) -> list[str]:
    """Normalized, de-duplicated symbols; ValueError naming the first bad one."""
    if isinstance(symbols, str | bytes) or not isinstance(symbols, Sequence):
        raise ValueError("symbols must be a list of strings")
    if not symbols:
        raise ValueError("symbols must not be empty")
    if len(symbols) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols per batch, got {len(symbols)}")
    return list(dict.fromkeys(validate_symbol(s) for s in symbols))


def start_analysis(queue: Queue, symbols: Sequence[object], source: SourceConfig) -> Batch:
    """Enqueue one analysis job per symbol, as one batch."""
    checked = check_symbols(symbols)
    payloads = [
        {"symbol": s, "source": source.name, "folder": source.folder, "delay": source.delay}
        for s in checked
    ]
    return queue.enqueue_batch(ANALYZE_STOCK, payloads, name=f"analyze {len(checked)} stocks")


def batch_report(queue: Queue, batch_id: int) -> dict[str, Any]:
    """The batch's status, counts and percent, and where each symbol is."""
    progress = queue.batch_progress(batch_id)
    if not progress.done:
        status = "queued" if progress.queued == progress.total else "running"
    elif progress.completed == progress.total:
        status = "completed"
    else:
        status = "completed_with_errors"
    symbols = [
        {
            "symbol": job.payload["symbol"], "job_id": job.id, "status": job.status.value,
            "progress": job.progress, "message": job.progress_message,
            "attempts": job.attempts, "error": job.error if job.status is JobStatus.FAILED
            else None,
        }
        for job in queue.batch_jobs(batch_id)
    ]  # fmt: skip
    return {**progress.as_dict(), "status": status, "symbols": symbols}


def latest_analysis(queue: Queue, symbol: str) -> dict[str, Any] | None:
    """The newest stored analysis of ``symbol``, or None."""
    rows = _read(queue, _LATEST, (validate_symbol(symbol),))
    if not rows:
        return None
    row = rows[0]
    return {**json.loads(row[0]), "job_id": row[1], "batch_id": row[2], "analyzed_at": row[3]}


def results_of_batch(queue: Queue, batch_id: int) -> list[dict[str, Any]]:
    """The analyses the batch stored, one per completed job."""
    rows = _read(queue, _OF_BATCH, (batch_id,))
    return [json.loads(row[0]) for row in rows]
