"""The contention proof: many processes and threads on one file, nothing lost or doubled.

These assert counts, never times, and run in CI at a size that fits. Every run of every
handler is logged (one O_APPEND line per run), so "exactly once" is checked on what really
ran, not only on what the table says.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from benchmarks.conftest import size, start_workers
from sqlitejobq import Queue

pytestmark = pytest.mark.timeout(900)


def runs(log: Path) -> collections.Counter[int]:
    return collections.Counter(int(line.split()[0]) for line in log.read_text().splitlines())


def assert_clean(output: str) -> None:
    for sign in ("database is locked", "DatabaseBusy", "Traceback", "busy"):
        assert sign not in output, f"{sign!r} in the workers' output:\n{output[-3000:]}"


def test_32_processes_of_4_threads_run_every_job_exactly_once(tmp_path: Path) -> None:
    db, log = tmp_path / "contention.db", tmp_path / "runs.log"
    jobs = size(10_000, 3_000)
    with Queue(db) as queue:
        ids = queue.enqueue_many("noop", [{"n": n} for n in range(jobs)])
    workers = start_workers(db, 32, 4, "--burst", "--lease", "120", log=log)
    output, _ = workers.communicate(timeout=800)
    assert workers.returncode == 0, output[-3000:]
    assert_clean(output)
    counted = runs(log)
    assert set(counted) == set(ids)  # none lost
    assert [i for i, n in counted.items() if n != 1] == []  # none run twice
    with Queue(db) as queue:
        stats = queue.stats()
        assert stats.by_status == {"queued": 0, "processing": 0, "completed": jobs,
                                   "failed": 0, "cancelled": 0, "waiting": 0}  # fmt: skip
        reports = queue.workers(limit=100)
    assert len({line.split()[2] for line in log.read_text().splitlines()}) > 1
    assert sum(w.busy_errors for w in reports) == 0  # no caller ever saw DatabaseBusy


def test_over_100_slow_jobs_at_once(tmp_path: Path) -> None:
    """128 handler threads take 150 jobs of 0.5 s at once: long handlers beside the short
    write transactions of claims, heartbeats and completions; all complete, each once."""
    db, log = tmp_path / "slow.db", tmp_path / "runs.log"
    with Queue(db) as queue:
        ids = queue.enqueue_many("sleep", [{"seconds": 0.5}] * 150)
    workers = start_workers(db, 32, 4, "--burst", "--lease", "30", log=log)
    output, _ = workers.communicate(timeout=800)
    assert workers.returncode == 0, output[-3000:]
    assert_clean(output)
    counted = runs(log)
    assert set(counted) == set(ids)
    assert set(counted.values()) == {1}
    with Queue(db) as queue:
        assert queue.stats().by_status["completed"] == 150
