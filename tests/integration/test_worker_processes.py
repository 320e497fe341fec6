"""Worker processes on one database, on every engine: SIGKILL, SIGTERM, many processes,
delays, supervision.

Every test here starts real ``sqlitejobq worker`` processes (``--db`` names the test's
SQLite file, or its PostgreSQL URL with the schema) and sends them real signals.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sqlitejobq import JobStatus, Queue

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.apps:registry"


@pytest.fixture
def run_log(tmp_path: Path) -> Path:
    return tmp_path / "runs.log"


def start_worker(db: str, run_log: Path, *args: str, app: str = APP) -> subprocess.Popen[str]:
    # the tests' own PYTHONPATH goes on after the root: a run against a source tree
    # (PYTHONPATH=src) starts workers of that tree, not of an installed copy
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "SQLITEJOBQ_TEST_LOG": str(run_log), "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", db, "--app", app,
         "--log-level", "INFO", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def runs(run_log: Path) -> collections.Counter[int]:
    if not run_log.exists():
        return collections.Counter()
    return collections.Counter(int(line.split()[0]) for line in run_log.read_text().splitlines())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out


@pytest.fixture
def queue(target: str) -> Iterator[Queue]:
    q = Queue(target)
    yield q
    q.close()


def assert_no_lock_errors(output: str) -> None:
    for text in ("database is locked", "deadlock", "40P01", "Traceback"):
        assert text not in output, output[-3000:]


def test_sigkill_mid_job_loses_nothing_and_completes_nothing_twice(
    queue: Queue, target: str, run_log: Path
) -> None:
    ids = queue.enqueue_many("sleep", [{"seconds": 0.3}] * 24, max_attempts=5)
    victim = start_worker(target, run_log, "--concurrency", "4", "--lease", "1.5")
    wait_until(lambda: queue.stats().by_status["processing"] >= 2, 60, "jobs to start")
    wait_until(lambda: len(runs(run_log)) >= 4, 60, "some handlers to run")
    held = {j.id for j in queue.jobs(status="processing", limit=100)}
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    killed_at = time.monotonic()
    assert held, "the killed worker held no job"
    survivor = start_worker(target, run_log, "--concurrency", "4", "--lease", "1.5")
    wait_until(lambda: queue.stats().by_status["completed"] == len(ids), 120, "all jobs")
    recovery = time.monotonic() - killed_at
    survivor.send_signal(signal.SIGTERM)
    output = finish(survivor)
    jobs = {i: queue.get(i) for i in ids}
    assert all(j.status is JobStatus.COMPLETED for j in jobs.values())
    counted = runs(run_log)
    # those held at the kill ran again with their attempts incremented; the rest ran once
    for job_id in held:
        assert jobs[job_id].attempts >= 2, job_id
        assert counted[job_id] >= 2
    assert all(counted[i] == 1 for i in ids if i not in held and jobs[i].attempts == 1)
    # each completed exactly once: the stored result is from the attempt that completed it
    assert all(jobs[i].result["attempt"] == jobs[i].attempts for i in ids)
    assert_no_lock_errors(output)
    assert recovery < 120


def test_sigterm_stops_gracefully_and_leaves_nothing_processing(
    queue: Queue, target: str, run_log: Path
) -> None:
    ids = queue.enqueue_many("sleep", [{"seconds": 0.5}] * 20)
    worker = start_worker(target, run_log, "--concurrency", "2", "--grace", "20")
    wait_until(lambda: len(runs(run_log)) >= 2, 60, "handlers to start")
    worker.send_signal(signal.SIGTERM)
    output = finish(worker)
    assert worker.returncode == 0, output
    statuses = collections.Counter(queue.get(i).status for i in ids)
    assert statuses[JobStatus.PROCESSING] == 0
    assert statuses[JobStatus.COMPLETED] >= 2
    assert statuses[JobStatus.COMPLETED] + statuses[JobStatus.QUEUED] == 20
    started = runs(run_log)
    for job_id in ids:
        job = queue.get(job_id)
        if job.status is JobStatus.QUEUED:
            assert job.attempts == 0 and started[job_id] == 0
    assert "stopping gracefully" in output
    assert queue.workers()[0].stopped_at is not None


def test_a_second_sigterm_stops_at_once_and_hands_the_jobs_back(
    queue: Queue, target: str, run_log: Path
) -> None:
    ids = queue.enqueue_many("sleep", [{"seconds": 20}] * 2)
    worker = start_worker(target, run_log, "--concurrency", "2", "--grace", "60")
    wait_until(lambda: len(runs(run_log)) >= 2, 60, "handlers to start")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    finish(worker, timeout=15)
    for job_id in ids:
        job = queue.get(job_id)
        assert job.status is JobStatus.QUEUED and job.attempts == 1
        assert "interrupted" in (job.error or "")


# A signal arriving while the dispatcher (the main thread) holds the lock of the Event it
# waits on: a handler that set that Event itself waited forever for its own thread.
SIGNAL_WHILE_LOCKED = """
import logging, os, signal, sys, time
from sqlitejobq import Queue, Worker

logging.basicConfig(level=logging.INFO)
queue = Queue(sys.argv[1])
worker = Worker(queue, concurrency=1)
with worker._signals(True):
    with worker._wake._cond:  # as inside Event.wait, between waking and returning
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs at one of these bytecodes
            pass
    deadline = time.monotonic() + 20
    while not worker.stopping and time.monotonic() < deadline:
        time.sleep(0.01)
print("stopping" if worker.stopping else "still running")
queue.close()
"""


def test_a_signal_that_lands_while_the_dispatcher_holds_a_lock_still_stops_the_worker(
    target: str,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_WHILE_LOCKED, target], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        output = finish(process, timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        output = finish(process)
        raise AssertionError(f"the worker deadlocked in its signal handler:\n{output}") from None
    assert process.returncode == 0, output
    assert "stopping" in output.splitlines()[-1], output
    assert "stopping gracefully" in output


def test_twelve_processes_of_four_threads_run_3000_jobs_exactly_once(
    queue: Queue, target: str, run_log: Path
) -> None:
    ids = queue.enqueue_many("noop", [{"n": n} for n in range(3000)])
    supervisor = start_worker(
        target, run_log, "--processes", "12", "--concurrency", "4", "--burst", "--lease", "60"
    )
    output = finish(supervisor, timeout=240)
    assert supervisor.returncode == 0, output[-3000:]
    counted = runs(run_log)
    assert set(counted) == set(ids)
    assert [i for i, n in counted.items() if n != 1] == []
    assert queue.stats().by_status == {"queued": 0, "processing": 0, "completed": 3000,
                                       "failed": 0, "cancelled": 0, "waiting": 0}  # fmt: skip
    pids = {line.split()[2] for line in run_log.read_text().splitlines()}
    assert len(pids) > 1
    assert_no_lock_errors(output)


def test_delayed_jobs_start_no_earlier_than_their_time(
    queue: Queue, target: str, run_log: Path
) -> None:
    worker = start_worker(target, run_log, "--concurrency", "4")
    wait_until(lambda: bool(queue.workers(alive_only=True)), 60, "the worker to start")
    ids = [queue.enqueue("noop", {"d": d}, delay=d) for d in (0.0, 0.3, 0.6, 0.9, 1.2)]
    wait_until(lambda: all(queue.get(i).status is JobStatus.COMPLETED for i in ids), 60,
               "delayed jobs")  # fmt: skip
    worker.send_signal(signal.SIGTERM)
    finish(worker)
    for job_id in ids:
        job = queue.get(job_id)
        assert job.started_at is not None and job.started_at >= job.run_at


def test_the_supervisor_restarts_a_killed_worker_process(
    queue: Queue, target: str, run_log: Path
) -> None:
    supervisor = start_worker(target, run_log, "--processes", "2", "--concurrency", "1")
    wait_until(lambda: len(queue.workers(alive_only=True)) == 2, 60, "two workers")
    first = {w.pid for w in queue.workers(alive_only=True)}
    os.kill(next(iter(first)), signal.SIGKILL)
    wait_until(
        lambda: len({w.pid for w in queue.workers(alive_only=True)} - first) >= 1, 60,
        "a replacement worker",
    )  # fmt: skip
    ids = queue.enqueue_many("noop", list(range(10)))
    wait_until(lambda: all(queue.get(i).status is JobStatus.COMPLETED for i in ids), 60, "jobs")
    supervisor.send_signal(signal.SIGTERM)
    output = finish(supervisor)
    assert "restarting" in output
    assert supervisor.returncode == 0, output[-2000:]


def test_the_worker_command_hands_its_database_to_handlers(
    queue: Queue, target: str, run_log: Path
) -> None:
    job_id = queue.enqueue("db_seen")
    env_free = {k: v for k, v in os.environ.items() if k != "SQLITEJOBQ_DB"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", target, "--app", APP, "--burst"],
        cwd=ROOT, env={**env_free, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    expected = target if target.startswith("postgres") else os.path.abspath(target)
    assert queue.get(job_id).result == expected
