"""Scheduling across real worker processes, on every engine: eight ``sqlitejobq worker``
processes of four threads each create exactly one job per slot of a schedule, never run
more than a global limit at once, and never start more than a rate allows in any window."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sqlitejobq import JobStatus, Queue

from . import limited_apps
from .test_worker_processes import ROOT, assert_no_lock_errors, start_worker, wait_until

pytestmark = pytest.mark.timeout(300)

LIMITED = "tests.integration.limited_apps:registry"


def spans(path: Path) -> list[tuple[int, int, float, float]]:
    """(job id, pid, start, end) of every handler run recorded in ``path``."""
    rows = []
    for line in path.read_text().splitlines():
        job_id, pid, start, end = line.split()
        rows.append((int(job_id), int(pid), float(start), float(end)))
    return rows


def peak_overlap(runs: list[tuple[int, int, float, float]]) -> int:
    """The most handler runs in progress at one instant (an end before a start at a tie)."""
    events = sorted([(start, 1) for _, _, start, _ in runs] + [(end, -1) for *_, end in runs],
                    key=lambda e: (e[0], e[1]))  # fmt: skip
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def stop_cleanly(workers: list[subprocess.Popen[str]]) -> None:
    """SIGTERM each worker process; each must exit 0 with no lock error in its output."""
    for worker in workers:
        worker.terminate()
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
        assert_no_lock_errors(output)


def test_eight_processes_never_run_more_than_a_global_limit(target: str, tmp_path: Path) -> None:
    span_log = tmp_path / "spans.log"
    with Queue(target, registry=limited_apps.registry) as queue:  # the producer knows the limit
        ids = queue.enqueue_many("limited", [{"seconds": 0.05}] * 120)
    os.environ["SQLITEJOBQ_TEST_SPANS"] = str(span_log)
    try:  # not in burst mode: a worker waits for a slot another one holds
        workers = [start_worker(target, tmp_path / "runs.log", "--concurrency", "4", app=LIMITED)
                   for _ in range(8)]  # fmt: skip
    finally:
        del os.environ["SQLITEJOBQ_TEST_SPANS"]
    with Queue(target) as queue:
        wait_until(lambda: queue.stats().by_status["completed"] == 120, 200, "120 completions")
    stop_cleanly(workers)
    runs = spans(span_log)
    assert sorted(r[0] for r in runs) == ids  # each job ran once
    assert peak_overlap(runs) <= 3
    assert peak_overlap(runs) == 3  # and the limit was used, not just respected
    assert len({pid for _, pid, _, _ in runs}) >= 2  # spread over processes


def test_eight_processes_never_start_more_than_a_rate_allows(target: str, tmp_path: Path) -> None:
    span_log = tmp_path / "spans.log"
    # a producer that does not know the rate: the workers that do hold the jobs to it
    with Queue(target) as queue:
        ids = queue.enqueue_many("rated", [{}] * 200)  # 20/s: 10 s of work
    os.environ["SQLITEJOBQ_TEST_SPANS"] = str(span_log)
    try:
        workers = [start_worker(target, tmp_path / "runs.log", "--concurrency", "4", "--burst",
                            app=LIMITED)
                   for _ in range(8)]  # fmt: skip
    finally:
        del os.environ["SQLITEJOBQ_TEST_SPANS"]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
        assert_no_lock_errors(output)
    with Queue(target) as queue:
        jobs = queue.jobs(task="rated", limit=1000)
        assert sorted(j.id for j in jobs) == ids
        assert {j.status for j in jobs} == {JobStatus.COMPLETED}
        # the claims' own start times (one clock): no 21 of them within any second
        starts = sorted(j.started_at for j in jobs if j.started_at is not None)
    assert len(starts) == 200
    for n in range(len(starts) - 20):
        assert starts[n + 20] - starts[n] >= 1.0 - 1e-6, (n, starts[n], starts[n + 20])
    assert starts[-1] - starts[0] >= 9.0  # 200 starts at 20/s take at least 9 s


def test_eight_processes_create_exactly_one_job_per_slot(target: str, tmp_path: Path) -> None:
    factor = 120.0  # 30 simulated minutes in 15 s
    real_start = time.time() + 6.0  # eight workers are up by then, on a busy machine too
    simulated_start = 1_800_000_000.0 - (1_800_000_000.0 % 60) + 30.0  # mid-minute
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "SQLITEJOBQ_DB": target,
        "SQLITEJOBQ_TEST_T0": str(real_start), "SQLITEJOBQ_TEST_START": str(simulated_start),
        "SQLITEJOBQ_TEST_FACTOR": str(factor),
    }  # fmt: skip
    Queue(target).close()  # created and migrated once, before eight processes race to it
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sqlitejobq",
                "worker",
                "--app",
                "tests.integration.scheduled_app:queue",
                "--concurrency",
                "4",
                "--lease",
                "3600",
                "--schedule-check",
                "0.05",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(max(0.0, real_start - time.time()) + 30 * 60 / factor)
    stop_cleanly(workers)
    with Queue(target) as queue:
        jobs = queue.jobs(task="minute", limit=1000, oldest_first=True)
    slots = [dt.datetime.fromisoformat(j.payload["slot"]).timestamp() for j in jobs]
    assert len(slots) == len(set(slots))  # no slot twice
    assert slots == sorted(slots)
    assert all(b - a == 60.0 for a, b in itertools.pairwise(slots))  # none skipped
    assert slots[0] == simulated_start - 30.0  # the minute the workers started in
    assert len(slots) >= 28  # about 30 simulated minutes ran
