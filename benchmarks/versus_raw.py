"""sqlitejobq against raw sqlite3 in the same run: the ratios the hot paths are held to.

Raw sqlite3 is the limit a queue on SQLite cannot beat one job per transaction: a bare
jobs table in WAL mode at the same ``synchronous``, one ``INSERT`` + ``COMMIT`` per job,
and a drain whose threads each claim one job per ``BEGIN IMMEDIATE`` transaction and
complete it in another. sqlitejobq and raw take turns within each repeat on fresh files,
every job is counted, and each figure is the median over the repeats.

    python -m benchmarks.versus_raw [--jobs N] [--repeats R] [--quick]

Targets: a single ``Queue.enqueue`` at >= 0.7x raw ``INSERT`` + ``COMMIT``, a drain with
one process and 4 threads at >= 2x raw one-transaction-per-step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.compare import WORKLOADS, Cell, measure
from benchmarks.peers import RawAdapter, SqliteJobQAdapter, load_sqlitejobq

#: (workload key, the ratio to raw it is held to)
TARGETS = {"enqueue": 0.7, "drain_4": 2.0}
SYNCHRONOUS = "NORMAL"


def run(jobs: int, repeats: int, base: Path) -> dict[str, dict[str, list[float]]]:
    """Rates by workload and system, ``repeats`` of each, the systems taking turns."""
    cells = {
        "sqlitejobq": Cell(SqliteJobQAdapter, SYNCHRONOUS),
        "raw": Cell(RawAdapter, SYNCHRONOUS),
    }
    workloads = [w for w in WORKLOADS if w.key in TARGETS]
    rates: dict[str, dict[str, list[float]]] = {w.key: {k: [] for k in cells} for w in workloads}
    for _ in range(repeats):
        for workload in workloads:
            for key, cell in cells.items():
                outcome = measure(cell, workload, jobs, base)
                if outcome.error or outcome.rate is None:
                    raise RuntimeError(f"{key} {workload.key}: {outcome.error}")
                rates[workload.key][key].append(outcome.rate)
    return rates


def report(rates: dict[str, dict[str, list[float]]]) -> list[str]:
    """One line per workload: both medians, the ratio and its target."""
    lines = []
    for key, by_system in rates.items():
        ours = statistics.median(by_system["sqlitejobq"])
        raw = statistics.median(by_system["raw"])
        ratio = ours / raw
        mark = "met" if ratio >= TARGETS[key] else "missed"
        lines.append(
            f"{key:8} sqlitejobq {ours:9,.0f}/s  raw {raw:9,.0f}/s  "
            f"ratio {ratio:4.2f}x (target >= {TARGETS[key]}x: {mark})"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus_raw")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 jobs, 1 repeat (CI)")
    args = parser.parse_args(argv)
    jobs, repeats = (200, 1) if args.quick else (args.jobs, args.repeats)
    module = load_sqlitejobq()
    if isinstance(module, str):
        print(f"sqlitejobq {module}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="versus-raw-") as base:
        rates = run(jobs, repeats, Path(base))
    print(f"sqlitejobq from {Path(module.__file__ or '?').parent}; {jobs} jobs, {repeats} repeats")
    for line in report(rates):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
