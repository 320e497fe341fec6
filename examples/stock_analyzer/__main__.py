"""Analyze many NSE stocks as one batch of jobs, with live progress, then print the results.

    python -m examples.stock_analyzer                     # the bundled sample, offline
    python -m examples.stock_analyzer --source yfinance --symbols TCS.NS,INFY.NS
    python -m examples.stock_analyzer --processes 2       # workers in separate processes
    python -m examples.stock_analyzer --db 'postgresql://app@db/app?schema=stocks'

After the results table comes the batch's ranking by signal score, which its summary job
stored in the table batch_summaries. Loads from yfinance start at most 2 per second (see
``tasks``); the sample and CSV sources are not limited.

Exit status 0 when every symbol was analyzed and the batch summarized, 1 otherwise (the
failures are listed) or when the database cannot be opened (one line on stderr, starting
``error:``), 2 on bad usage.
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
from rich.markup import escape
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

from sqlitejobq import Job, Queue, SqliteJobQError, Worker
from sqlitejobq.backends import is_postgres_target
from sqlitejobq.cli import DB_ENV

from .indicators import SIGNAL_ORDER
from .prices import SAMPLE_SYMBOLS, SOURCE_NAMES
from .service import (
    DEFAULT_DB,
    AppQueue,
    SourceConfig,
    app_worker,
    batch_report,
    batch_summary,
    check_symbols,
    describe,
    open_queue,
    results_of_batch,
    start_analysis,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A ranking this long or shorter is printed whole; a longer one, its top and bottom few.
RANKING_IN_FULL = 8
RANKING_ENDS = 3


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
    try:  # bad usage, exit status 2: options that cannot work, whatever the database
        args.source_config = SourceConfig(args.source, args.folder, args.delay)
        args.symbols = check_symbols(args.symbols.split(",") if args.symbols else SAMPLE_SYMBOLS)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")  # fmt: skip
    # the driver reports each failed connection attempt; the one-line error says it once
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    source: SourceConfig = args.source_config
    try:
        queue = open_queue(args.db)
    except (SqliteJobQError, OSError) as exc:  # no such directory, not a database, no server
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, as the CLI
        return 1
    with queue:
        batch = start_analysis(queue, args.symbols, source)
        where = f"{args.processes} processes" if args.processes else f"{args.workers} threads"
        console.print(f"Analyzing {len(batch.job_ids)} stocks from the {source.name} source as "
                      f"batch {batch.id} in {describe(queue)}, workers: {where}")  # fmt: skip
        started = time.monotonic()
        with _workers(queue, args) as workers:
            _show_progress(queue, batch.id, console)
            summary_job = _wait_for(queue, batch.then_id, workers)
        elapsed = time.monotonic() - started
        _print_results(queue, batch.id, elapsed, console)
        summarized = _print_ranking(queue, batch.id, summary_job, console)
        code = _print_outcome(queue, batch.id, console)
        return code if summarized else 1


class _workers:
    """Workers for the length of a ``with`` block: threads here, or supervised processes."""

    def __init__(self, queue: AppQueue, args: argparse.Namespace) -> None:
        self.queue, self.args = queue, args
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _workers:
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
            # no schedules: the daily refresh belongs to long-running workers (the API's,
            # `sqlitejobq worker`), not to a script that stops once its batch is done
            self.worker = app_worker(self.queue, concurrency=self.args.workers, run_schedules=False)
            self.thread = threading.Thread(
                target=self.worker.run, kwargs={"handle_signals": False}, daemon=True
            )
            self.thread.start()
        return self

    def alive(self) -> bool:
        """False once the workers are gone: a burst worker process ends when nothing is
        left to run."""
        if self.process is not None:
            return self.process.poll() is None
        return self.thread is not None and self.thread.is_alive()

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


def _wait_for(queue: Queue, job_id: int | None, workers: _workers) -> Job | None:
    """The job once it has finished, or as it is when the workers are gone (None: no job).

    The summary job becomes runnable when the batch's last job finishes, in the same
    transaction, so the workers (burst ones too) are still there to run it.
    """
    if job_id is None:
        return None
    while True:
        job = queue.get(job_id)
        if job.status.finished or not workers.alive():
            return job
        time.sleep(0.05)


def _print_results(queue: Queue, batch_id: int, elapsed: float, console: Console) -> None:
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


def _print_ranking(queue: Queue, batch_id: int, job: Job | None, console: Console) -> bool:
    """The batch's stored ranking, short (its ends when long); False if there is none."""
    summary = batch_summary(queue, batch_id)
    if summary is None:
        state = "missing" if job is None else f"{job.status.value}: {job.error or 'not run'}"
        console.print(f"[red]no summary of batch {batch_id}:[/red] summary job {escape(state)}")
        return False
    ranking = summary["ranking"]
    console.print("Ranking by signal score, best first (rank 1 is the most bullish; table "
                  "batch_summaries):")  # fmt: skip
    if len(ranking) <= RANKING_IN_FULL:
        shown: list[dict[str, Any] | None] = list(ranking)
    else:
        shown = [*ranking[:RANKING_ENDS], None, *ranking[-RANKING_ENDS:]]
    for entry in shown:
        if entry is None:
            console.print(f"   ... {len(ranking) - 2 * RANKING_ENDS} more ...")
            continue
        month = entry["return_1m_pct"]
        change = "-" if month is None else f"{month:+.2f}%"
        console.print(f"  {entry['rank']:>3}. {entry['symbol']:<14} {entry['score']:+3d}  "
                      f"{entry['signal']:<11} 1m {change}")  # fmt: skip
    if summary["failures"]:
        names = ", ".join(failure["symbol"] for failure in summary["failures"])
        console.print(f"  not ranked, failed: {names}")
    return True


def _print_outcome(queue: Queue, batch_id: int, console: Console) -> int:
    """The failures, or that every symbol was analyzed; the exit status."""
    report = batch_report(queue, batch_id)
    failures = [s for s in report["symbols"] if s["status"] != "completed"]
    if failures:
        console.print(f"[red]{len(failures)} of {report['total']} symbols failed:[/red]")
        for failure in failures:  # one line each, however long the error
            why = f": {failure['error']}" if failure["error"] else ""
            console.print(f"  {failure['symbol']}: {failure['status']}{escape(why)}",
                          soft_wrap=True)  # fmt: skip
        return 1
    console.print(f"All {report['total']} symbols analyzed; results stored in "
                  f"{queue.target} (table analysis_results).")  # fmt: skip
    return 0


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
