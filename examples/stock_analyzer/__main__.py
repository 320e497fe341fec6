"""Analyze many NSE stocks as one batch of jobs, with live progress, then print the results.

    python -m examples.stock_analyzer                     # the bundled sample, offline
    python -m examples.stock_analyzer --source yfinance --symbols TCS.NS,INFY.NS
    python -m examples.stock_analyzer --processes 2       # workers in separate processes
    python -m examples.stock_analyzer --db 'postgresql://app@db/app?schema=stocks'

Exit status 0 when every symbol was analyzed, 1 otherwise (the failures are listed).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sqlitejobq import Queue, SqliteJobQError, Worker
from sqlitejobq.backends import is_postgres_target
from sqlitejobq.cli import DB_ENV

from .indicators import SIGNAL_ORDER
from .prices import SAMPLE_SYMBOLS, SOURCE_NAMES
from .service import (
    DEFAULT_DB,
    AppQueue,
    SourceConfig,
    batch_report,
    describe,
    open_queue,
    results_of_batch,
    start_analysis,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.stock_analyzer",
        description="Analyze NSE stocks as one batch of sqlitejobq jobs with live progress.",
    )
    parser.add_argument("--symbols", help="comma-separated symbols (default: the sample's 12)")
    parser.add_argument(
        "--source",
        choices=SOURCE_NAMES,
        default="sample",
        help="where prices come from (default: the bundled offline sample)",
    )
    parser.add_argument("--folder", help="folder of <SYMBOL>.csv files for --source csv")
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help=f"SQLite file or postgresql:// URL, ?schema=NAME naming the schema "
        f"(default: {DEFAULT_DB})",
    )
    parser.add_argument("--workers", type=int, default=4, help="worker threads (default: 4)")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="run the workers in this many separate processes instead",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="pretend network time per symbol, in seconds (for demos)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every job's steps")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.processes < 0:
        parser.error("--workers must be >= 1 and --processes >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")  # fmt: skip
    console = Console() if sys.stdout.isatty() else Console(width=160)
    symbols = args.symbols.split(",") if args.symbols else list(SAMPLE_SYMBOLS)
    try:
        source = SourceConfig(args.source, args.folder, args.delay)
        queue = open_queue(args.db)
    except (ValueError, SqliteJobQError) as exc:  # a bad option, or no such database
        console.print(f"[red]error:[/red] {exc}")
        return 2
    with queue:
        try:
            batch = start_analysis(queue, symbols, source)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 2
        where = f"{args.processes} processes" if args.processes else f"{args.workers} threads"
        console.print(f"Analyzing {len(batch.job_ids)} stocks from the {source.name} source as "
                      f"batch {batch.id} in {describe(queue)}, workers: {where}")  # fmt: skip
        started = time.monotonic()
        with _workers(queue, args):
            _show_progress(queue, batch.id, console)
        elapsed = time.monotonic() - started
        return _print_results(queue, batch.id, elapsed, console)


class _workers:
    """Workers for the length of a ``with`` block: threads here, or supervised processes."""

    def __init__(self, queue: AppQueue, args: argparse.Namespace) -> None:
        self.queue, self.args = queue, args
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> None:
        if self.args.processes:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
            # The database as given (a URL's password included), through the environment
            # rather than the command line; a file's path made absolute for the new cwd.
            database = self.queue.database
            env[DB_ENV] = database if is_postgres_target(database) else os.path.abspath(database)
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "sqlitejobq", "worker",
                 "--app", "examples.stock_analyzer.tasks:registry", "--burst",
                 "--processes", str(self.args.processes), "--concurrency",
                 str(self.args.workers), "--log-level",
                 "INFO" if self.args.verbose else "WARNING"],
                cwd=REPO_ROOT, env=env,
            )  # fmt: skip
        else:
            self.worker = Worker(self.queue, concurrency=self.args.workers)
            self.thread = threading.Thread(
                target=self.worker.run, kwargs={"handle_signals": False}, daemon=True
            )
            self.thread.start()

    def __exit__(self, *exc: object) -> None:
        if self.worker is not None and self.thread is not None:
            self.worker.stop()
            self.thread.join(60)
        if self.process is not None:
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait(30)


def _show_progress(queue: Queue, batch_id: int, console: Console) -> None:
    """A live bar (12/40, 30%, rate, ETA) until no job of the batch is left to run."""
    progress = queue.batch_progress(batch_id)
    if not console.is_terminal:  # logs and CI: one plain line whenever the count moves
        last = -1
        while True:
            progress = queue.batch_progress(batch_id)
            if progress.finished != last:
                console.print(f"progress: {progress}")
                last = progress.finished
            if progress.done:
                return
            time.sleep(0.1)
    columns = (
        TextColumn("[bold]batch {task.fields[batch]}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("analyze", total=progress.total, batch=batch_id, rate="")
        started = time.monotonic()
        while True:
            progress = queue.batch_progress(batch_id)
            rate = progress.finished / max(time.monotonic() - started, 1e-9)
            bar.update(task, completed=progress.finished, rate=f"{rate:.1f}/s")
            if progress.done:
                return
            time.sleep(0.1)


def _print_results(queue: Queue, batch_id: int, elapsed: float, console: Console) -> int:
    results = sorted(
        results_of_batch(queue, batch_id),
        key=lambda r: (SIGNAL_ORDER.get(r["signal"], 99), -r["score"], r["symbol"]),
    )
    table = Table(title=f"Batch {batch_id}: {len(results)} stocks analyzed in {elapsed:.2f}s")
    table.add_column("symbol", no_wrap=True)
    table.add_column("signal", no_wrap=True)
    for name in ("score", "close", "1w %", "1m %", "1y %", "SMA50", "SMA200", "RSI14",
                 "MACD hist", "vol %", "max DD %"):  # fmt: skip
        table.add_column(name, justify="right", no_wrap=True)
    for r in results:
        table.add_row(
            r["symbol"], r["signal"], f"{r['score']:+d}", _num(r["last_close"]),
            _num(r["return_1w_pct"]), _num(r["return_1m_pct"]), _num(r["return_1y_pct"]),
            _num(r["sma_50"]), _num(r["sma_200"]), _num(r["rsi_14"]), _num(r["macd_hist"]),
            _num(r["volatility_annual_pct"]), _num(r["max_drawdown_pct"]),
        )  # fmt: skip
    console.print(table)
    report = batch_report(queue, batch_id)
    failures = [s for s in report["symbols"] if s["status"] != "completed"]
    if failures:
        console.print(f"[red]{len(failures)} of {report['total']} symbols failed:[/red]")
        for failure in failures:
            console.print(f"  {failure['symbol']}: {failure['status']}: {failure['error']}")
        return 1
    console.print(f"All {report['total']} symbols analyzed; results stored in "
                  f"{queue.target} (table analysis_results).")  # fmt: skip
    return 0


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
