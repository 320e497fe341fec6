"""Analyze many NSE stocks as one batch of jobs, with live progress, then print the results.

    python -m examples.stock_analyzer                     # the bundled sample, offline
    python -m examples.stock_analyzer --source yfinance --symbols TCS.NS,INFY.NS
    python -m examples.stock_analyzer --processes 2       # workers in separate processes
    python -m examples.stock_analyzer --db 'postgresql://app@db/app?schema=stocks'
    python -m examples.stock_analyzer --charts charts     # and a PNG chart per stock
    python -m examples.stock_analyzer --batch latest --format csv > results.csv

The results table fits the terminal without cutting a value: a narrow one gets the most
important columns and a note naming the others (``--columns`` chooses them); output that
is not a terminal gets them all. ``--format csv`` and ``json`` print the stored values
for scripts, the rest going to stderr. After the table comes the batch's ranking by
signal score, which its summary job stored in the table batch_summaries. ``--batch``
prints a stored batch again instead of starting one. Loads from yfinance start at most 2
per second (see ``tasks``); the sample and CSV sources are not limited.

Exit status 0 when every symbol was analyzed and the batch summarized, 1 otherwise (the
failures are listed) or when an input is missing or unusable: the database, the price
folder, a symbol the sample or folder has no prices for, the charts folder (one line on
stderr, starting ``error:``, before anything is written); 2 on bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

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

from sqlitejobq import Job, JobNotFound, Queue, SqliteJobQError, Worker
from sqlitejobq.backends import is_postgres_target
from sqlitejobq.cli import DB_ENV

from .output import (
    COLUMNS,
    FORMATS,
    Column,
    fit_table,
    left_out_note,
    parse_columns,
    print_table,
    sort_results,
    write_csv,
    write_json,
)
from .prices import SAMPLE_SYMBOLS, SOURCE_NAMES, PriceDataError, UnknownSymbol
from .service import (
    DEFAULT_DB,
    MAX_ID,
    AppQueue,
    SourceConfig,
    app_worker,
    batch_report,
    batch_summary,
    check_available,
    check_id,
    check_symbols,
    describe,
    open_queue,
    prices_of_analysis,
    results_of_batch,
    start_analysis,
    summary_job_id,
)
from .words import count, shown

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A ranking this long or shorter is printed whole; a longer one, its top and bottom few.
RANKING_IN_FULL = 8
RANKING_ENDS = 3
#: The width of output that is not a terminal (logs, CI, a file): wider if the table is.
PIPE_WIDTH = 160


class InputError(Exception):
    """An input that names something missing or unusable here (not bad usage): one line
    on stderr, exit status 1, nothing written."""


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
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default), or csv or json on stdout for scripts (progress and messages "
        "go to stderr)",
    )
    parser.add_argument(
        "--columns",
        help=f"comma-separated columns of the table and the CSV, in this order (the symbol "
        f"always first): {','.join(c.name for c in COLUMNS)} (default: all that fit)",
    )
    parser.add_argument(
        "--charts",
        metavar="DIR",
        help="write a PNG chart per stock to DIR/<SYMBOL>.png (created if missing)",
    )
    parser.add_argument(
        "--batch",
        metavar="ID",
        help="print batch ID stored in --db ('latest': the newest) instead of starting one",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every job's steps")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.processes < 0:
        parser.error("--workers must be >= 1 and --processes >= 0")
    if args.batch is not None:
        if args.batch != "latest":
            try:
                check_id(args.batch, "--batch")
            except ValueError:
                parser.error(f"--batch takes a batch id (a whole number from 1 to {MAX_ID}) "
                             f"or 'latest', got {shown(args.batch)}")  # fmt: skip
        if args.symbols or args.folder:
            parser.error("--batch prints a stored batch: --symbols and --folder start a new one")
    try:  # bad usage, exit status 2: options that cannot work, whatever the database
        args.columns = None if args.columns is None else parse_columns(args.columns)
        args.symbols = check_symbols(args.symbols.split(",") if args.symbols else SAMPLE_SYMBOLS)
        if args.folder is not None and not Path(args.folder).is_dir():
            # a folder missing here is not bad usage: status 1, as a missing database
            raise InputError(f"price folder {args.folder!r} is not a directory")
        args.source_config = SourceConfig(args.source, args.folder, args.delay)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.batch is None:  # symbols the sample or the folder lacks: before any job
            check_available(args.symbols, args.source_config)
        charts = None if args.charts is None else _chart_folder(args.charts)
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except UnknownSymbol as exc:
        # advice on flags is the script's own: the error itself also reaches job errors and
        # the API's answers, where no flag means anything
        said = exc
        if args.source == "sample":
            advice = f"{exc.hint}; --source yfinance or csv for other symbols"
            said = UnknownSymbol(exc.symbols, exc.source, advice)
        print(f"error: {' '.join(str(said).split())}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")  # fmt: skip
    # the driver reports each failed connection attempt; the one-line error says it once
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    width = _terminal_width(sys.stdout)
    console = Console(width=width or PIPE_WIDTH)
    # csv and json: the data alone on stdout, what people read on stderr
    info = console if args.format == "table" else Console(
        stderr=True, width=_terminal_width(sys.stderr) or PIPE_WIDTH)  # fmt: skip
    try:
        if args.batch is not None and not is_postgres_target(args.db) and not Path(
                args.db).is_file():  # fmt: skip
            raise InputError(f"no database {args.db}: nothing was analyzed there yet")
        queue = open_queue(args.db)
    except (InputError, SqliteJobQError, OSError) as exc:  # no such directory, no server
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, as the CLI
        return 1
    with queue:
        elapsed: float | None = None
        if args.batch is None:
            batch_id, elapsed, summary_job = _analyze(queue, args, info)
        else:
            try:
                batch_id, summary_job = _stored_batch(queue, args.batch)
            except InputError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        results = sort_results(results_of_batch(queue, batch_id))
        if args.format == "table":
            took = "" if elapsed is None else f" in {elapsed:.2f}s"
            title = f"Batch {batch_id}: {count(len(results), 'stock')} analyzed{took}"
            _print_results(results, args.columns, title, width, console)
        elif args.format == "csv":
            write_csv(sys.stdout, results, args.columns or COLUMNS)
        else:
            write_json(sys.stdout, batch_id, results, _failures(queue, batch_id))
        summarized = _print_ranking(queue, batch_id, summary_job, info)
        drawn = True if charts is None else _write_charts(queue, results, charts, info)
        code = _print_outcome(queue, batch_id, info)
        return code if summarized and drawn else 1


def _analyze(
    queue: AppQueue, args: argparse.Namespace, info: Console
) -> tuple[int, float, Job | None]:
    """Run a new batch to its end, showing its progress: its id, the seconds it took and
    its summary job as it ended."""
    source: SourceConfig = args.source_config
    batch = start_analysis(queue, args.symbols, source)
    where = (count(args.processes, "process", "processes") if args.processes
             else count(args.workers, "thread"))  # fmt: skip
    info.print(f"Analyzing {count(len(batch.job_ids), 'stock')} from the {source.name} source as "
               f"batch {batch.id} in {describe(queue)}, workers: {where}")  # fmt: skip
    started = time.monotonic()
    with _workers(queue, args) as workers:
        _show_progress(queue, batch.id, info)
        summary_job = _wait_for(queue, batch.then_id, workers)
    return batch.id, time.monotonic() - started, summary_job


def _stored_batch(queue: Queue, which: str) -> tuple[int, Job | None]:
    """The id of a stored batch (a number, or 'latest') and its summary job, if any."""
    batch_id = queue.latest_batch_id() if which == "latest" else int(which)
    if batch_id is None:
        raise InputError(f"no batch in {describe(queue)}: nothing was analyzed there yet")
    try:
        queue.batch_progress(batch_id)
    except JobNotFound:
        raise InputError(f"no batch with id {batch_id} in {describe(queue)}") from None
    job_id = summary_job_id(queue, batch_id)
    try:
        return batch_id, None if job_id is None else queue.get(job_id)
    except JobNotFound:
        return batch_id, None


def _terminal_width(stream: TextIO) -> int | None:
    """The width of the terminal ``stream`` writes to ($COLUMNS first, as for any program),
    or None when it is not a terminal. Measured on that stream: rich would measure stdin
    first, which may be another terminal, or none."""
    if not stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


def _chart_folder(path: str) -> Path:
    """The charts folder, made if missing, once a file was seen to be writable in it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"cannot write charts to {path}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write charts to {path}: {exc.strerror or exc}") from None
    return folder


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


def _print_results(
    results: Sequence[Mapping[str, Any]],
    columns: Sequence[Column] | None,
    title: str,
    width: int | None,
    console: Console,
) -> None:
    """The table, uncut: in a terminal, the columns that fit its ``width`` and a note
    naming the others; elsewhere (``width`` None), every column."""
    fitted = fit_table(console, results, columns, width=width, title=title)
    print_table(console, fitted)
    note = None if width is None else left_out_note(fitted, width)
    if note:
        console.print(note, markup=False, highlight=False)


def _failures(queue: Queue, batch_id: int) -> list[dict[str, Any]]:
    """The symbols of the batch that have no analysis: their job, its status and error."""
    return [{key: entry[key] for key in ("symbol", "job_id", "status", "error")}
            for entry in batch_report(queue, batch_id)["symbols"]
            if entry["status"] != "completed"]  # fmt: skip


def _write_charts(
    queue: Queue, results: Sequence[Mapping[str, Any]], folder: Path, console: Console
) -> bool:
    """A chart per stored analysis in ``folder``, each written whole; False if any could
    not be drawn (each such symbol is named, with why)."""
    from .charts import render_chart, write_chart  # matplotlib: only when charts are asked for

    failed: list[str] = []
    for analysis in results:
        try:
            png = render_chart(prices_of_analysis(queue, analysis), analysis)
            write_chart(png, folder, analysis["symbol"])
        except (UnknownSymbol, PriceDataError, OSError) as exc:
            failed.append(f"  {analysis['symbol']}: {' '.join(str(exc).split())}")
    written = len(results) - len(failed)
    console.print(f"Charts of {count(written, 'stock')} written to {folder}{os.sep} "
                  f"(<SYMBOL>.png)", markup=False)  # fmt: skip
    if failed:
        console.print(f"[red]{count(len(failed), 'chart')} not drawn:[/red]")
        for line in failed:
            console.print(line, markup=False, soft_wrap=True)
    return not failed


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
    if not report["done"]:  # a stored batch (--batch) that workers elsewhere still run
        console.print(f"Batch {batch_id} is still {report['status']}: {report['finished']} of "
                      f"{count(report['total'], 'symbol')} finished.")  # fmt: skip
        return 1
    failures = [s for s in report["symbols"] if s["status"] != "completed"]
    if failures:
        console.print(f"[red]{len(failures)} of {count(report['total'], 'symbol')} "
                      f"failed:[/red]")  # fmt: skip
        for failure in failures:  # one line each, however long the error
            why = f": {failure['error']}" if failure["error"] else ""
            console.print(f"  {failure['symbol']}: {failure['status']}{escape(why)}",
                          soft_wrap=True)  # fmt: skip
        return 1
    analyzed = "1 symbol" if report["total"] == 1 else f"All {report['total']} symbols"
    console.print(f"{analyzed} analyzed; results stored in "
                  f"{queue.target} (table analysis_results).")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
