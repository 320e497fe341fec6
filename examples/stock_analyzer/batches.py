"""Starting an analysis: the checks, the task each price source's jobs go to, and the batch
enqueued with its summary job, recorded in the app's ``analysis_batches`` table.

Loads from yfinance go to ``analyze_stock_online``, limited across every worker (Yahoo
throttles clients that ask too fast); the offline sources go to ``analyze_stock``, which
has no limit. The queue must know the registry (``open_queue`` gives it): a task's limits
are attached to its jobs when they are enqueued.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlitejobq import AsyncQueue, Batch, Queue

from .database import app_transaction
from .prices import SOURCE_NAMES, CsvFolderSource, sample_source, validate_symbol
from .words import count

ANALYZE_STOCK = "analyze_stock"
ANALYZE_STOCK_ONLINE = "analyze_stock_online"
SUMMARIZE_BATCH = "summarize_batch"
#: The task of each source: network loads go to the rate-limited one.
TASK_OF_SOURCE = {"sample": ANALYZE_STOCK, "csv": ANALYZE_STOCK, "yfinance": ANALYZE_STOCK_ONLINE}
#: The most symbols one batch may hold (the original app analyzed a few hundred at most).
MAX_SYMBOLS = 1000

_RECORD = {
    "sqlite": "INSERT INTO analysis_batches (batch_id, source, summary_job_id, created_at) "
    "VALUES (?, ?, ?, ?)",
    "postgres": "INSERT INTO analysis_batches (batch_id, source, summary_job_id, created_at) "
    "VALUES (%s, %s, %s, %s)",
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
        if self.folder is not None:
            if not Path(self.folder).is_dir():
                raise ValueError(f"price folder {self.folder!r} is not a directory")
            # absolute: workers started elsewhere, and a chart drawn later, find it too
            object.__setattr__(self, "folder", os.path.abspath(self.folder))
        if not 0.0 <= self.delay <= 60.0:
            raise ValueError(f"delay must be between 0 and 60 seconds, got {self.delay}")

    @property
    def task(self) -> str:
        """The task that analyzes a symbol from this source."""
        return TASK_OF_SOURCE[self.name]


def check_symbols(symbols: Sequence[object]) -> list[str]:
    """Normalized, de-duplicated symbols; ValueError naming the first bad one."""
    if isinstance(symbols, str | bytes) or not isinstance(symbols, Sequence):
        raise ValueError("symbols must be a list of strings")
    if not symbols:
        raise ValueError("symbols must not be empty")
    if len(symbols) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols per batch, got {len(symbols)}")
    return list(dict.fromkeys(validate_symbol(s) for s in symbols))


def check_available(symbols: Sequence[str], source: SourceConfig) -> None:
    """UnknownSymbol naming the symbols an offline source has no prices for, before any
    job is enqueued (yfinance knows its symbols only when asked: those jobs fail instead)."""
    if source.name == "yfinance":
        return
    folder = sample_source() if source.name == "sample" else CsvFolderSource(str(source.folder))
    missing = folder.missing(symbols)
    if missing:
        raise folder.unknown(missing)


def start_analysis(queue: Queue, symbols: Sequence[object], source: SourceConfig) -> Batch:
    """Enqueue one analysis job per symbol as one batch, followed by its summary job
    (``batch.then_id``), and record the batch: all in one transaction."""
    checked = check_symbols(symbols)
    payloads = [
        {"symbol": s, "source": source.name, "folder": source.folder, "delay": source.delay}
        for s in checked
    ]
    with app_transaction(queue) as (conn, dialect):
        batch = queue.enqueue_batch(
            source.task, payloads, name=f"analyze {count(len(checked), 'stock')}",
            then=SUMMARIZE_BATCH, connection=conn,
        )  # fmt: skip
        conn.execute(_RECORD[dialect], (batch.id, source.name, batch.then_id, time.time()))
    return batch


async def start_analysis_async(
    queue: AsyncQueue, symbols: Sequence[object], source: SourceConfig
) -> Batch:
    """``start_analysis`` for asyncio code, in a thread: the batch and the app's record of it
    share one transaction on a connection of the app's own, which lives in one thread."""
    return await asyncio.to_thread(start_analysis, queue.queue, symbols, source)
