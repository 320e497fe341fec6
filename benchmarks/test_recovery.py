"""How long a crash costs: from SIGKILL of a worker to the last of its jobs completing.

The killed worker's jobs come back when their lease expires, so the figure is about the
lease plus the rescue interval plus the job's own run; it is reported with the lease used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import APP, ROOT, record, size, timed, wait_for
from sqlitejobq import JobStatus, Queue

LEASE = 2.0


def worker(db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", str(db), "--app",
         APP, "--concurrency", "4", "--lease", str(LEASE),
         "--log-level", "WARNING"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_sigkill_to_last_rescued_job_completed(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    figures: list[tuple[float, int]] = []

    def run() -> None:
        db = tmp_path / f"recovery-{len(figures)}.db"
        queue = Queue(db)
        ids = queue.enqueue_many("sleep", [{"seconds": 0.3}] * size(24, 12))
        victim = worker(db)
        wait_for(lambda: queue.stats().by_status["processing"] >= 4, 60, "jobs to start")
        held = [j.id for j in queue.jobs(status="processing", limit=100)]
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(30)
        survivor = worker(db)
        wait_for(lambda: all(queue.get(i).status is JobStatus.COMPLETED for i in held), 120,
                 "the killed worker's jobs")  # fmt: skip
        figures.append((time.monotonic() - killed, len(held)))
        wait_for(lambda: queue.stats().by_status["completed"] == len(ids), 120, "all jobs")
        survivor.terminate()
        output, _ = survivor.communicate(timeout=60)
        assert "database is locked" not in output
        assert all(queue.get(i).attempts >= 2 for i in held)
        queue.close()

    timed(benchmark, run, rounds=size(3, 1))
    seconds = sorted(f[0] for f in figures)
    record(benchmark, request, lease_s=LEASE, jobs_held=figures[0][1],
           kill_to_last_rescued_done_s=seconds[len(seconds) // 2])  # fmt: skip
