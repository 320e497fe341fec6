"""Crashes: a snapshot of the files at any instant (what power loss leaves) is a consistent
queue holding every job whose enqueue returned; SIGKILL of workers and producers at random
loses nothing and completes nothing twice; clock jumps lose no job."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from sqlitejobq import JobStatus, Queue

from .conftest import ROOT, Engine, SqliteEngine, finish, wait_until

pytestmark = pytest.mark.timeout(240)


def start_producer(engine: Engine, log: str, batches: int, size: int) -> subprocess.Popen[str]:
    code = (f"from tests.faults.apps import produce; produce({engine.target!r}, {log!r}, "
            f"{batches}, {size})")  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=engine.env(), text=True)


def logged_ids(path: str) -> list[int]:
    if not os.path.exists(path):
        return []
    lines = open(path).read().splitlines()  # noqa: SIM115
    # a line being written at the snapshot has no newline yet: only whole lines count
    return [int(i) for line in lines for i in line.split()]


def assert_consistent(engine: Engine, queue: Queue) -> None:
    """The library's counts by queue and by batch agree with its jobs (and, on SQLite, the
    file passes integrity_check)."""
    if engine.name == "sqlite":
        assert engine.execute("PRAGMA integrity_check") == [("ok",)]
    counted = {
        (queue_name, status): count
        for queue_name, status, count in engine.execute(
            "SELECT queue, status, count(*) FROM sqlitejobq_jobs GROUP BY queue, status"
        )
    }
    kept = {
        (queue_name, status): count
        for queue_name, by_status in queue.stats().counts.items()
        for status, count in by_status.items()
        if count
    }
    assert counted == kept
    for batch_id, jobs in engine.execute(
        "SELECT batch_id, count(*) FROM sqlitejobq_jobs WHERE batch_id IS NOT NULL "
        "GROUP BY batch_id"
    ):
        total = queue.batch_progress(batch_id).total
        assert jobs == total, f"batch {batch_id} is partial: {jobs} of {total}"


@pytest.mark.engines("sqlite")
def test_a_snapshot_at_any_instant_is_a_consistent_queue_with_every_returned_enqueue(
    engine: Engine,
) -> None:
    Queue(engine.target).close()
    log = str(engine.tmp_path / "enqueued.log")
    producer = start_producer(engine, log, batches=400, size=20)
    worker = engine.worker("--concurrency", "4")
    rng = random.Random(3)
    snapshots = []
    try:
        for n in range(6):
            time.sleep(rng.uniform(0.1, 0.4))
            processes = [p for p in (producer, worker) if p.poll() is None]
            for process in processes:
                os.kill(process.pid, signal.SIGSTOP)  # the instant of the "power loss"
            try:
                returned = logged_ids(log)
                copy = engine.tmp_path / f"snapshot{n}"
                copy.mkdir()
                for suffix in ("", "-wal"):
                    if os.path.exists(engine.target + suffix):
                        shutil.copyfile(engine.target + suffix, copy / f"jobs.db{suffix}")
                snapshots.append((copy / "jobs.db", returned))
            finally:
                for process in processes:
                    os.kill(process.pid, signal.SIGCONT)
    finally:
        producer.kill()
        producer.wait(30)
        worker.send_signal(signal.SIGTERM)
        finish(worker)
    assert sum(len(returned) for _, returned in snapshots) > 0
    for db, returned in snapshots:
        copy = SqliteEngine(db.parent)
        copy.target = str(db)
        with Queue(db) as queue:  # recovers the copied log, as after a crash
            present = {job.id for job in queue.jobs(limit=100_000)}
            assert set(returned) <= present, "an enqueue that returned is missing"
            assert_consistent(copy, queue)


def test_random_sigkills_of_workers_and_producers_lose_nothing_and_complete_nothing_twice(
    engine: Engine,
) -> None:
    queue = engine.open()
    seeded = queue.enqueue_many("sleep", [{"seconds": 0.02}] * 300, max_attempts=20)
    log = str(engine.tmp_path / "enqueued.log")
    rng = random.Random(11)
    workers = [engine.worker("--concurrency", "4", "--lease", "1") for _ in range(3)]
    producers = []
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.6))
        victim = rng.randrange(len(workers))
        workers[victim].kill()
        workers[victim].wait(30)
        workers[victim] = engine.worker("--concurrency", "4", "--lease", "1")
        if rng.random() < 0.5:
            producer = start_producer(engine, log, batches=5, size=20)
            time.sleep(rng.uniform(0.0, 0.3))
            producer.kill()  # perhaps in the middle of an enqueue
            producer.wait(30)
            producers.append(producer)
    for process in workers:
        process.kill()
        process.wait(30)
    time.sleep(1.5)  # the killed workers' leases (1 s) run out: their jobs are runnable again
    finisher = engine.worker("--concurrency", "8", "--burst", "--lease", "1")
    output = finish(finisher, timeout=180)
    assert finisher.returncode == 0, output[-3000:]
    jobs = queue.jobs(limit=100_000)
    assert {j.id for j in jobs} >= set(seeded) | set(logged_ids(log))
    assert [j.id for j in jobs if j.status is not JobStatus.COMPLETED] == []
    # each completed exactly once: the stored result is from the attempt that completed it
    assert all(j.result == {"attempt": j.attempts} for j in jobs)
    runs = engine.runs()
    assert all(runs[j.id] >= 1 for j in jobs)
    assert_consistent(engine, queue)
    assert "database is locked" not in output


@pytest.mark.engines("sqlite")
def test_clock_jumps_back_and_forth_lose_no_job_and_run_none_twice(engine: Engine) -> None:
    offset = engine.tmp_path / "clock_offset"
    offset.write_text("0")
    release = engine.tmp_path / "release"
    queue = engine.open()
    running = queue.enqueue("wait_for_file", {"path": str(release)})
    delayed = queue.enqueue("sleep", {"seconds": 0}, delay=3600)
    worker = engine.worker("--concurrency", "2", "--lease", "3",
                           app="tests.faults.apps:jumping_clock_queue",
                           SQLITEJOBQ_CLOCK_OFFSET=str(offset))  # fmt: skip
    wait_until(lambda: engine.runs()[running] == 1, 60, "the first job to start")
    offset.write_text(str(-3600))  # an hour back: leases are renewed from the new time
    time.sleep(2.5)
    release.touch()
    wait_until(lambda: queue.get(running).status.finished, 60, "the running job")
    assert queue.get(delayed).status is JobStatus.QUEUED  # not due: an hour and more away
    offset.write_text(str(2 * 3600))  # two hours ahead: the delayed job is due
    wait_until(lambda: queue.get(delayed).status.finished, 60, "the delayed job")
    worker.send_signal(signal.SIGTERM)
    output = finish(worker)
    for job_id in (running, delayed):
        job = queue.get(job_id)
        assert job.status is JobStatus.COMPLETED and job.attempts == 1, job.error
        assert engine.runs()[job_id] == 1
    assert "0 lost" in output
