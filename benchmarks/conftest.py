"""Shared pieces of the benchmark suite.

Sizes shrink with ``SQLITEJOBQ_BENCH_QUICK=1`` (what CI runs, with timing disabled); every
correctness assertion stays on at every size. Each benchmark records its figures (jobs/s,
latency percentiles) in ``benchmark.extra_info``; the session ends with a table of them.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import Queue

QUICK = os.environ.get("SQLITEJOBQ_BENCH_QUICK") == "1"
PG_DSN = os.environ.get("SQLITEJOBQ_PG_DSN")
ROOT = Path(__file__).resolve().parents[1]
SYNCHRONOUS = ("NORMAL", "FULL")
#: The handlers worker processes run: the same as the integration tests', which log each run.
APP = "tests.integration.apps:registry"

_figures: list[tuple[str, dict[str, Any]]] = []


def postgres_dsn() -> str:
    """``$SQLITEJOBQ_PG_DSN``; without it a PostgreSQL benchmark skips (fails under CI)."""
    if PG_DSN:
        return PG_DSN
    reason = "set $SQLITEJOBQ_PG_DSN to a PostgreSQL database to run these"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the PostgreSQL benchmarks: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def engine_target(engine: str, folder: Path, name: str) -> Iterator[str]:
    """A queue target on ``engine``: a SQLite file in ``folder``, or a schema of its own in
    the PostgreSQL database (dropped afterwards)."""
    if engine == "sqlite":
        yield str(folder / f"{name}.db")
        return
    dsn = postgres_dsn()
    schema = f"b_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    finally:
        import psycopg  # the postgres extra: only where PostgreSQL runs

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def size(full: int, quick: int) -> int:
    """The size of a workload in a full run, or in a quick one."""
    return quick if QUICK else full


def record(benchmark: Any, request: pytest.FixtureRequest, **figures: Any) -> None:
    """Attach figures to the benchmark's JSON and to the end-of-session table."""
    benchmark.extra_info.update(figures)
    _figures.append((request.node.name, figures))


def timed(
    benchmark: Any,
    target: Callable[..., Any],
    *,
    rounds: int,
    setup: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
    **options: Any,
) -> list[float]:
    """Run ``target`` through pytest-benchmark and return each round's seconds.

    The durations are taken here too, so the figures exist when timing is disabled
    (``--benchmark-disable``, as CI runs it) and the benchmark runs each target once.
    """
    durations: list[float] = []

    def measured(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return target(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - started)

    benchmark.pedantic(measured, setup=setup, rounds=rounds, iterations=1, **options)
    return durations


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "bench.db"


@pytest.fixture
def fresh_queue(tmp_path: Path) -> Iterator[Callable[..., Queue]]:
    """A factory of queues, each on a new file; all closed at the end."""
    made: list[Queue] = []

    def make(synchronous: str = "NORMAL", **options: Any) -> Queue:
        queue = Queue(tmp_path / f"q{len(made)}.db", synchronous=synchronous, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


def start_workers(
    db: Path, processes: int, concurrency: int, *extra: str, log: Path | None = None
) -> subprocess.Popen[str]:
    """``sqlitejobq worker`` over the benchmark app, in ``processes`` supervised processes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if log is not None:
        env["SQLITEJOBQ_TEST_LOG"] = str(log)
    return subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", str(db), "--app",
         APP, "--processes", str(processes), "--concurrency",
         str(concurrency), "--log-level", "WARNING", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _figures:
        return
    terminalreporter.section("sqlitejobq figures" + (" (quick sizes)" if QUICK else ""))
    for name, figures in _figures:
        shown = ", ".join(
            f"{key} {value:,.1f}" if isinstance(value, float) else f"{key} {value}"
            for key, value in figures.items()
        )
        terminalreporter.write_line(f"{name}: {shown}")
