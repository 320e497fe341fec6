"""No outcome is dropped while its worker lives: not when the database stays busy past the
retry bound, not when the clock jumps, not when one outcome of a group cannot be stored."""

from __future__ import annotations

import collections
import signal
import sqlite3
import threading
import time

import pytest

from sqlitejobq import Job, JobStatus, Registry, Worker

from .conftest import Engine, finish, wait_until

pytestmark = pytest.mark.timeout(180)


def test_outcomes_survive_a_write_lock_held_past_the_retry_bound(engine: Engine) -> None:
    # the worker gives up a write after 0.5 s (retry_timeout), the lock is held for 3 s,
    # well inside the 10 s lease: the handlers finish during the hold, their outcomes must
    # be kept and written once the lock is free, not thrown away and run again
    queue = engine.open()
    ids = queue.enqueue_many("sleep", [{"seconds": 1.5}] * 8)
    worker = engine.worker("--concurrency", "8", "--lease", "10",
                           app="tests.faults.apps:short_retry_queue")  # fmt: skip
    wait_until(lambda: len(engine.runs()) == 8, 60, "the handlers to start")
    with engine.writes_blocked(3.0):
        time.sleep(3.0)
    wait_until(lambda: queue.stats().by_status["completed"] == 8, 60, "every outcome")
    worker.send_signal(signal.SIGTERM)
    output = finish(worker)
    assert "; trying again in" in output, output[-3000:]  # the writes did fail meanwhile
    jobs = [queue.get(i) for i in ids]
    assert [j.status for j in jobs] == [JobStatus.COMPLETED] * 8
    assert [j.attempts for j in jobs] == [1] * 8, "a finished job ran again"
    assert engine.runs() == collections.Counter(dict.fromkeys(ids, 1))
    assert "0 lost" in output, output[-3000:]


def test_a_forward_clock_jump_does_not_lose_a_running_job(engine: Engine) -> None:
    # a day forward: every lease looks expired, the worker's own running job included; the
    # worker renews its own jobs before it rescues, so the job runs once and completes
    offset = engine.tmp_path / "clock_offset"
    offset.write_text("0")
    release = engine.tmp_path / "release"
    queue = engine.open()
    job_id = queue.enqueue("wait_for_file", {"path": str(release)})
    worker = engine.worker("--concurrency", "2", "--lease", "5",
                           app="tests.faults.apps:jumping_clock_queue",
                           SQLITEJOBQ_CLOCK_OFFSET=str(offset))  # fmt: skip
    wait_until(lambda: engine.runs()[job_id] == 1, 60, "the handler to start")
    offset.write_text(str(24 * 3600))
    time.sleep(3.0)  # several rescue rounds (every second) under the jumped clock
    release.touch()
    wait_until(lambda: queue.get(job_id).status.finished, 60, "the job to finish")
    worker.send_signal(signal.SIGTERM)
    output = finish(worker)
    job = queue.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.attempts == 1 and job.result == {"attempt": 1}
    assert engine.runs()[job_id] == 1
    assert "0 lost" in output, output[-3000:]


def test_a_result_that_cannot_be_stored_fails_its_own_job_and_no_other(engine: Engine) -> None:
    # seven jobs finish together and are recorded in one transaction; one result is not
    # valid Unicode: that job fails at once, the six others complete, none runs twice
    queue = engine.open()
    values = ["fine"] * 3 + ["lone surrogate"] + ["fine"] * 3
    ids = queue.enqueue_many("echo", [{"value": v, "seconds": 0.3} for v in values])
    worker = engine.worker("--concurrency", "7", "--burst", "--prefetch", "0")
    output = finish(worker)
    assert worker.returncode == 0, output[-3000:]
    jobs = [queue.get(i) for i in ids]
    bad = jobs[3]
    assert bad.status is JobStatus.FAILED and bad.attempts == 1
    assert bad.error is not None and "lone surrogate" in bad.error
    others = jobs[:3] + jobs[4:]
    assert [j.status for j in others] == [JobStatus.COMPLETED] * 6
    assert [j.attempts for j in others] == [1] * 6
    assert queue.stats().by_status["processing"] == 0
    assert engine.runs() == collections.Counter(dict.fromkeys(ids, 1))


@pytest.mark.engines("sqlite")
def test_an_outcome_the_database_refuses_is_recorded_alone_as_a_failure(engine: Engine) -> None:
    # a trigger refuses one completion: the group's set-based write fails, the worker
    # records each outcome alone, and the refused one fails its job with the reason
    registry = Registry()

    @registry.task("answer", max_attempts=3)
    def answer(job: Job) -> str:
        time.sleep(0.2)
        return str(job.payload)

    queue = engine.open(registry=registry)
    conn = sqlite3.connect(engine.target)
    conn.execute(
        "CREATE TRIGGER refuse_poison BEFORE UPDATE OF result ON sqlitejobq_jobs "
        "WHEN NEW.result = '\"poison\"' BEGIN SELECT RAISE(ABORT, 'poisoned result'); END"
    )
    conn.commit()
    conn.close()
    ids = queue.enqueue_many("answer", ["a", "b", "poison", "c", "d"])
    summary = Worker(queue, concurrency=5, prefetch=0).run(burst=True)
    jobs = [queue.get(i) for i in ids]
    assert jobs[2].status is JobStatus.FAILED and jobs[2].attempts == 1
    assert jobs[2].error is not None and "poisoned result" in jobs[2].error
    assert [jobs[n].status for n in (0, 1, 3, 4)] == [JobStatus.COMPLETED] * 4
    assert (summary.completed, summary.failed, summary.lost) == (4, 1, 0)


def test_a_job_reclaimed_while_its_handler_still_runs_keeps_both_runs_apart(
    engine: Engine,
) -> None:
    # another process takes a running job back and this worker claims it again while the
    # first run goes on: each run is tracked by (id, attempt), so the late first run is
    # refused by the fence and the second run's outcome is kept, not dropped
    registry = Registry()
    started = threading.Event()
    release = threading.Event()
    attempts: list[int] = []

    @registry.task("slow_then_fast", max_attempts=5, backoff=0.0)
    def slow_then_fast(job: Job) -> int:
        attempts.append(job.attempts)
        if job.attempts == 1:
            started.set()
            release.wait(30)
        return job.attempts

    ahead = [0.0]  # the worker's clock, moved by the test
    queue = engine.open(registry=registry, clock=lambda: time.time() + ahead[0])
    job_id = queue.enqueue("slow_then_fast")
    worker = Worker(queue, concurrency=2, lease=30.0)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    assert started.wait(30)
    # another process whose clock jumped a day ahead takes the job back
    with engine.open(clock=lambda: time.time() + 86400) as other:
        assert other.rescue_expired() == [job_id]
    ahead[0] = 86400 + 60  # and this worker's clock jumps too: the job is due again
    wait_until(lambda: len(attempts) == 2, 30, "the second run")
    wait_until(lambda: queue.get(job_id).status is JobStatus.COMPLETED, 30, "the second outcome")
    release.set()
    worker.stop()
    thread.join(30)
    job = queue.get(job_id)
    assert job.attempts == 2 and job.result == 2
    assert attempts == [1, 2]
    assert queue.stats().by_status["processing"] == 0
