"""sqlitejobq beside huey, persist-queue, litequeue and raw sqlite3, on the same workloads.

Every measurement runs on a fresh database file; within each repeat the systems take turns,
and each figure is the median over the repeats. A drain counts every run of every job: one
that loses or repeats a job is reported as an error, never as a figure.

    python -m benchmarks.compare [--jobs N] [--repeats R] [--systems a,b,...]
        [--out docs/benchmarks.md] [--chart docs/benchmarks-compare.png] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.peers import (
    ADAPTERS,
    PROJECT_ROOT,
    SYNCHRONOUS_NAMES,
    SYSTEMS,
    Adapter,
    Durability,
    ExecutionCounter,
    Stored,
)
from benchmarks.report import markers, throughput_chart, write_section

SECTION = "compare"
BEGIN_MARKER, END_MARKER = markers(SECTION)
DEFAULT_JOBS = 10_000
DEFAULT_REPEATS = 3
QUICK_JOBS = 200
QUICK_REPEATS = 1
DEFAULT_OUT = PROJECT_ROOT / "docs" / "benchmarks.md"
CHART_NAME = "benchmarks-compare.png"
SYNCHRONOUS_ORDER = ("EXTRA", "FULL", "NORMAL", "OFF")


@dataclass(frozen=True)
class Workload:
    """One column of the table."""

    key: str
    title: str
    threads: int = 0
    batched: bool = False


WORKLOADS = (
    Workload("enqueue", "Enqueue, one call each"),
    Workload("enqueue_batch", "Enqueue, batched", batched=True),
    Workload("drain_1", "Drain, 1 thread", threads=1),
    Workload("drain_4", "Drain, 4 threads", threads=4),
)


@dataclass(frozen=True)
class Cell:
    """One row of the table: a system at one requested durability setting (None: as shipped)."""

    adapter: type[Adapter]
    setting: str | None

    @property
    def name(self) -> str:
        """The system and setting, for progress lines."""
        return f"{self.adapter.label} [{self.setting or 'as shipped'}]"


@dataclass(frozen=True)
class Outcome:
    """One measurement: a rate in jobs/s, or the error that stands in its place."""

    rate: float | None = None
    error: str | None = None
    durability: Durability | None = None


@dataclass
class Row:
    """Every measurement of one cell, by workload."""

    cell: Cell
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)

    def observed(self) -> Durability | None:
        """The journal mode and level read from the system during the first measurement."""
        for outcomes in self.outcomes.values():
            for outcome in outcomes:
                if outcome.durability is not None:
                    return outcome.durability
        return None

    @property
    def durability(self) -> str:
        """The journal mode and level, as the table shows them."""
        observed = self.observed()
        return str(observed) if observed else f"?, {self.cell.setting or '?'}"

    @property
    def synchronous(self) -> str:
        """The level the row runs at: the one asked for, else the one observed."""
        if self.cell.setting:
            return self.cell.setting
        observed = self.observed()
        return observed.synchronous if observed else "?"

    def median(self, key: str) -> float | None:
        """The median rate of a workload, or None if any of its runs failed."""
        rates = [outcome.rate for outcome in self.outcomes.get(key, [])]
        if not rates or any(rate is None for rate in rates):
            return None
        return statistics.median(rate for rate in rates if rate is not None)

    def errors(self, key: str) -> list[str]:
        """The errors of a workload's failed runs."""
        return [outcome.error for outcome in self.outcomes.get(key, []) if outcome.error]


def applies(cell: Cell, workload: Workload) -> bool:
    """Whether the workload is measured for this cell at all."""
    if workload.batched:
        return cell.adapter.batch_note is not None
    if not workload.threads:
        return cell.adapter.measures_single
    return True


def drain_timeout(jobs: int) -> float:
    """The bound on one drain, far above any healthy run (20 jobs/s at worst)."""
    return max(30.0, jobs / 20)


def _stored_fault(stored: Stored, waiting: int, finished: int) -> str | None:
    faults = []
    if stored.waiting != waiting:
        faults.append(f"the table holds {stored.waiting} unfinished jobs, expected {waiting}")
    if stored.finished is not None and stored.finished != finished:
        faults.append(f"the table records {stored.finished} finished jobs, expected {finished}")
    return "; ".join(faults) or None


def measure(cell: Cell, workload: Workload, jobs: int, base: Path) -> Outcome:
    """Run one workload once on a fresh database under ``base`` and check every job."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{cell.adapter.key}-", dir=base))
    counter = ExecutionCounter(jobs)
    adapter = cell.adapter(workdir, cell.setting, counter)
    payloads = [{"i": i} for i in range(jobs)]
    durability: Durability | None = None
    opened = False
    try:
        adapter.open()
        opened = True
        durability = adapter.durability()
        if workload.threads:
            adapter.preload(payloads)
            fault = _stored_fault(adapter.stored(), waiting=jobs, finished=0)
            if fault:
                return Outcome(error=f"before the drain, {fault}", durability=durability)
            gc.collect()
            seconds = adapter.drain(workload.threads, drain_timeout(jobs))
            fault = counter.problem() or _stored_fault(adapter.stored(), waiting=0, finished=jobs)
        else:
            enqueue = adapter.enqueue_batch if workload.batched else adapter.enqueue_each
            gc.collect()
            start = time.perf_counter()
            enqueue(payloads)
            seconds = time.perf_counter() - start
            fault = _stored_fault(adapter.stored(), waiting=jobs, finished=0)
    except Exception as exc:
        message = " ".join(str(exc).split())
        return Outcome(error=f"{type(exc).__name__}: {message}", durability=durability)
    finally:
        if opened:
            with contextlib.suppress(Exception):
                adapter.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if fault:
        return Outcome(error=fault, durability=durability)
    return Outcome(rate=jobs / max(seconds, 1e-9), durability=durability)


Reporter = Callable[[int, Cell, Workload, Outcome], None]


def run(cells: Sequence[Cell], jobs: int, repeats: int, base: Path, report: Reporter) -> list[Row]:
    """Every workload for every cell, ``repeats`` times, the cells taking turns in each repeat."""
    rows = {cell: Row(cell) for cell in cells}
    for repeat in range(repeats):
        shift = repeat % len(cells) if cells else 0
        order = [*cells[shift:], *cells[:shift]]
        for workload in WORKLOADS:
            for cell in order:
                if not applies(cell, workload):
                    continue
                outcome = measure(cell, workload, jobs, base)
                rows[cell].outcomes.setdefault(workload.key, []).append(outcome)
                report(repeat, cell, workload, outcome)
    return sorted(rows.values(), key=_row_order)


def _row_order(row: Row) -> tuple[int, int]:
    synchronous = row.synchronous
    rank = SYNCHRONOUS_ORDER.index(synchronous) if synchronous in SYNCHRONOUS_ORDER else 99
    return rank, ADAPTERS.index(row.cell.adapter)


# --- the machine --------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path``, from /proc/mounts."""
    real = os.path.realpath(path)
    best_mount, best_type = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].encode().decode("unicode_escape")
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best_mount):
                best_mount, best_type = mount, fields[2]
    return best_type


def default_synchronous() -> str:
    """The ``synchronous`` level a new SQLite connection gets here when nobody sets one."""
    conn = sqlite3.connect(":memory:")
    try:
        level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        conn.close()
    return SYNCHRONOUS_NAMES.get(level, str(level))


@dataclass(frozen=True)
class Context:
    """What the section says about the run besides the figures."""

    started: dt.datetime
    command: str
    jobs: int
    repeats: int
    tmp_dir: Path
    filesystem: str
    skipped: dict[str, str]
    chart_link: str | None = None


# --- output -------------------------------------------------------------------------------


def render_table(rows: Sequence[Row]) -> tuple[list[str], list[str]]:
    """The Markdown table (jobs/s, medians) and the notes its error marks point to."""
    notes: list[str] = []
    header = ["System", "Journal, synchronous", "Setting chosen by"]
    header += [f"{workload.title} (jobs/s)" for workload in WORKLOADS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * len(WORKLOADS)) + "|",
    ]
    for row in rows:
        texts = [
            row.cell.adapter.label,
            row.durability,
            row.cell.adapter.setting_note(row.cell.setting),
        ]
        for workload in WORKLOADS:
            texts.append(_figure(row, workload, notes))
        lines.append("| " + " | ".join(texts) + " |")
    return lines, notes


def _figure(row: Row, workload: Workload, notes: list[str]) -> str:
    if not applies(row.cell, workload):
        return "n/a" if workload.batched else "—"
    errors = row.errors(workload.key)
    if errors:
        runs = len(row.outcomes.get(workload.key, []))
        notes.append(
            f"{row.cell.adapter.label} ({row.synchronous}), {workload.title.lower()}, "
            f"{len(errors)} of {runs} runs: {errors[0]}"
        )
        return f"error [{len(notes)}]"
    value = row.median(workload.key)
    return "—" if value is None else f"{value:,.0f}"


def render_section(rows: Sequence[Row], context: Context) -> str:
    """The Markdown that goes between the markers."""
    adapters = [adapter for adapter in ADAPTERS if any(row.cell.adapter is adapter for row in rows)]
    systems = {adapter.key: adapter for adapter in reversed(adapters)}
    versions = "; ".join(
        f"raw sqlite3 on SQLite {systems[key].version()}"
        if key == "raw"
        else f"{key} {systems[key].version()}"
        for key in dict.fromkeys(adapter.key for adapter in adapters)
    )
    table, notes = render_table(rows)
    when = context.started.strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "## Compared with other SQLite queues",
        "",
        f"Measured {when} with `{context.command}`.",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; "
        f"SQLite {sqlite3.sqlite_version}; databases in `{context.tmp_dir}` "
        f"({context.filesystem}).",
        f"- Versions: {versions or 'none measured'}.",
        f"- Method: {context.jobs:,} no-op jobs per measurement, each on a fresh database file; "
        f"each figure is the median of {context.repeats} run{'s' if context.repeats != 1 else ''}, "
        "the systems taking turns within each repeat. Drains start from jobs already queued and "
        "count every run of every job: a drain that loses or repeats one is shown as an error, "
        "never as a figure.",
        f"- Durability: rows are grouped by `synchronous`, each system beside sqlitejobq at the "
        f"same level. A system that offers no choice runs as shipped, and the table says so. "
        f"SQLite's default `synchronous` here is {default_synchronous()}.",
        "",
        *table,
    ]
    legend = []
    if any(adapter.batch_note is None for adapter in adapters):
        legend.append("n/a: the system has no batch call.")
    if any(not adapter.measures_single for adapter in adapters):
        legend.append("—: not measured separately (the row above has it).")
    if legend:
        out += ["", " ".join(legend)]
    if notes:
        out += ["", "Errors:", ""]
        out += [f"{number}. {note}" for number, note in enumerate(notes, 1)]
    out += ["", "How each system is driven:", ""]
    for adapter in adapters:
        parts = []
        if adapter.measures_single:
            parts.append(f"enqueue: {adapter.enqueue_note}")
        parts.append(f"batched: {adapter.batch_note or 'no batch call'}")
        parts.append(f"drain: {adapter.drain_note}")
        out.append(f"- **{adapter.label}**: " + "; ".join(parts) + ".")
    if context.skipped:
        out += ["", "Not measured:", ""]
        out += [f"- {key}: {reason}" for key, reason in context.skipped.items()]
    if context.chart_link:
        out += ["", f"![Drain throughput by system and setting]({context.chart_link})"]
    return "\n".join(out) + "\n"


def draw_chart(rows: Sequence[Row], path: Path, jobs: int, repeats: int) -> None:
    """A grouped horizontal bar chart of drain throughput per system and setting, as PNG."""
    drains = [workload for workload in WORKLOADS if workload.threads]
    throughput_chart(
        [f"{row.cell.adapter.label}\n{row.durability}" for row in rows],
        {
            f"{w.threads} worker thread{'s' if w.threads != 1 else ''}": [
                row.median(w.key) for row in rows
            ]
            for w in drains
        },
        path,
        f"Draining {jobs:,} queued no-op jobs, median of {repeats}",
    )


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="Compare sqlitejobq with other SQLite job queues on the same workloads.",
    )
    parser.add_argument("--jobs", type=int, help=f"jobs per measurement (default {DEFAULT_JOBS})")
    parser.add_argument(
        "--repeats", type=int, help=f"runs per figure, median taken (default {DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, from: {', '.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="Markdown file whose compare section is replaced "
        "(default docs/benchmarks.md; none with --quick)",
    )
    parser.add_argument(
        "--chart", type=Path, help=f"PNG chart of drain throughput (default {CHART_NAME} by --out)"
    )
    parser.add_argument(
        "--tmp-dir", type=Path, help="where the databases go (default: system temp)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny sizes for CI: {QUICK_JOBS} jobs, {QUICK_REPEATS} run, no files unless --out",
    )
    args = parser.parse_args(argv)
    args.jobs = args.jobs if args.jobs is not None else QUICK_JOBS if args.quick else DEFAULT_JOBS
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    chosen = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SYSTEMS]
    if unknown or not chosen:
        parser.error(f"--systems takes some of {', '.join(SYSTEMS)}; got {args.systems!r}")
    args.systems = list(dict.fromkeys(chosen))
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    if args.chart is None and args.out is not None:
        args.chart = args.out.parent / CHART_NAME
    return args


def _command(args: argparse.Namespace) -> str:
    command = f"python -m benchmarks.compare --jobs {args.jobs} --repeats {args.repeats}"
    if list(args.systems) != list(SYSTEMS):
        command += f" --systems {','.join(args.systems)}"
    return command


def _progress(repeats: int) -> Reporter:
    def report(repeat: int, cell: Cell, workload: Workload, outcome: Outcome) -> None:
        result = f"{outcome.rate:,.0f} jobs/s" if outcome.rate is not None else outcome.error
        print(
            f"[{repeat + 1}/{repeats}] {cell.name} {workload.key}: {result}",
            file=sys.stderr,
            flush=True,
        )

    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; 0 when every measurement succeeded, 1 when any failed."""
    args = parse_args(argv)
    skipped: dict[str, str] = {}
    cells: list[Cell] = []
    for adapter in ADAPTERS:
        if adapter.key not in args.systems:
            continue
        reason = adapter.unavailable()
        if reason is not None:
            skipped[adapter.key] = reason
            continue
        cells += [Cell(adapter, setting) for setting in adapter.settings]
    for key, reason in skipped.items():
        print(f"skipping {key}: {reason}", file=sys.stderr)

    started = dt.datetime.now(dt.UTC)
    base = Path(tempfile.mkdtemp(prefix="sqlitejobq-compare-", dir=args.tmp_dir))
    fs_type = filesystem(base)
    try:
        rows = run(cells, args.jobs, args.repeats, base, _progress(args.repeats))
    finally:
        shutil.rmtree(base, ignore_errors=True)

    chart_link = None
    if args.chart is not None and args.out is not None:
        chart_link = Path(os.path.relpath(args.chart, args.out.parent)).as_posix()
    context = Context(
        started=started,
        command=_command(args),
        jobs=args.jobs,
        repeats=args.repeats,
        tmp_dir=base.parent,
        filesystem=fs_type,
        skipped=skipped,
        chart_link=chart_link,
    )
    section = render_section(rows, context)
    print(section.replace(f"\n![Drain throughput by system and setting]({chart_link})", ""))
    if args.chart is not None and rows:
        draw_chart(rows, args.chart, args.jobs, args.repeats)
        print(f"chart: {args.chart}", file=sys.stderr)
    if args.out is not None:
        write_section(args.out, section, SECTION)
        print(f"section written to {args.out}", file=sys.stderr)
    failed = any(row.errors(workload.key) for row in rows for workload in WORKLOADS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
