"""Jobs that expire, on both engines: ``enqueue(..., expires=seconds or an aware datetime)``.
A job not started by then never runs (it ends cancelled, its error saying it expired); one
already running is not touched; a waiting job expires too, and its dependents follow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sqlitejobq import (
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobStatus,
    Queue,
    Registry,
    Worker,
)
from sqlitejobq.backends.base import EXPIRED_ERROR
from tests.conftest import Clock
from tests.integration.test_worker_processes import APP, ROOT, assert_no_lock_errors, runs

pytestmark = pytest.mark.timeout(120)


def clocked(target: str, registry: Registry | None = None) -> tuple[Queue, Clock]:
    clock = Clock()
    return Queue(target, registry=registry, clock=clock, retry_backoff=0), clock


def test_a_job_not_started_by_its_expiry_never_runs(target: str) -> None:
    registry = Registry()
    ran: list[int] = []

    @registry.task("otp")
    def otp(job: Job) -> None:
        ran.append(job.id)

    queue, clock = clocked(target, registry)
    with queue:
        expiring = queue.enqueue("otp", {"code": 1}, expires=60)
        lasting = queue.enqueue("otp", {"code": 2})
        clock.advance(61)
        summary = Worker(queue).run(burst=True)
        assert ran == [lasting] and summary.completed == 1
        job = queue.get(expiring)
        assert job.status is JobStatus.CANCELLED and job.error == EXPIRED_ERROR
        assert job.attempts == 0 and job.finished_at == clock()
        events = [(e.event, e.outcome) for e in queue.timeline(expiring)]
        assert events == [("enqueued", None), ("expired", "cancelled")]
        counts = queue.stats().counts["default"]
        assert (counts["cancelled"], counts["completed"], counts["queued"]) == (1, 1, 0)
        assert [j.id for j in queue.jobs(status="cancelled", error="Expired")] == [expiring]


def test_a_job_started_before_its_expiry_is_not_touched(target: str) -> None:
    queue, clock = clocked(target)
    with queue:
        job_id = queue.enqueue("t", {}, expires=10)
        (job,) = queue.claim("w", lease=60)
        clock.advance(20)
        assert queue.claim("w") == []  # the sweep passes it by
        assert queue.complete(job, "done") is True
        assert queue.get(job_id).status is JobStatus.COMPLETED


def test_a_job_due_later_than_its_expiry_expires_unrun(target: str) -> None:
    queue, clock = clocked(target)
    with queue:
        job_id = queue.enqueue("t", {}, delay=30, expires=20)
        clock.advance(31)
        assert queue.claim("w") == []
        assert queue.get(job_id).status is JobStatus.CANCELLED


def test_a_waiting_job_expires_and_its_dependents_follow(target: str) -> None:
    queue, clock = clocked(target)
    with queue:
        first = queue.enqueue("t", {})
        waiting = queue.enqueue("t", {}, depends_on=[first], expires=5)
        after = queue.enqueue("t", {}, depends_on=[waiting])
        clock.advance(6)
        (claimed,) = queue.claim("w", limit=5)
        assert claimed.id == first
        assert queue.get(waiting).status is JobStatus.CANCELLED
        assert queue.get(waiting).error == EXPIRED_ERROR
        assert queue.get(after).status is JobStatus.CANCELLED  # its dependency did not complete


def test_every_job_of_a_batch_and_of_enqueue_many_gets_the_expiry(target: str) -> None:
    queue, clock = clocked(target)
    with queue:
        many = queue.enqueue_many("t", [1, 2], expires=10)
        batch = queue.enqueue_batch("t", [3, 4], expires=10)
        clock.advance(11)
        assert queue.claim("w", limit=10) == []
        for job_id in [*many, *batch.job_ids]:
            assert queue.get(job_id).status is JobStatus.CANCELLED
        assert queue.batch_progress(batch.id).cancelled == 2


def test_an_aware_datetime_is_an_expiry_too(target: str) -> None:
    with Queue(target) as queue:
        job_id = queue.enqueue("t", {}, expires=datetime.now(UTC) + timedelta(seconds=0.3))
        time.sleep(0.5)
        assert queue.claim("w") == []
        assert queue.get(job_id).status is JobStatus.CANCELLED


@pytest.mark.parametrize(
    ("expires", "error", "message"),
    [
        (0, InvalidArgument, "expires must be > 0"),
        (-5, InvalidArgument, "expires must be > 0"),
        (float("inf"), InvalidArgument, "finite"),
        ("60", InvalidArgumentType, "seconds or an aware datetime"),
        (True, InvalidArgumentType, "seconds or an aware datetime"),
        (datetime(2030, 1, 1), InvalidArgument, "naive"),
        (datetime(2020, 1, 1, tzinfo=UTC), InvalidArgument, "in the past"),
    ],
)
def test_a_bad_expiry_is_refused_with_nothing_stored(
    target: str, expires: object, error: type, message: str
) -> None:
    with Queue(target) as queue:
        with pytest.raises(error, match=message):
            queue.enqueue("t", {}, expires=expires)  # type: ignore[arg-type]
        with pytest.raises(error, match=message):
            queue.enqueue_many("t", [1, 2], expires=expires)  # type: ignore[arg-type]
        assert queue.stats().total() == 0


def test_worker_processes_never_run_an_expired_job(target: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    with Queue(target, strict_tasks=False) as queue:
        expiring = [queue.enqueue("noop", {}, expires=0.5) for _ in range(3)]
        lasting = [queue.enqueue("noop", {}) for _ in range(3)]
    time.sleep(1.0)
    env = {**os.environ, "SQLITEJOBQ_TEST_LOG": str(log), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", target, "--app", APP,
         "--processes", "2", "--burst"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_lock_errors(done.stdout + done.stderr)
    assert set(runs(log)) == set(lasting)
    with Queue(target, strict_tasks=False) as queue:
        for job_id in expiring:
            job = queue.get(job_id)
            assert job.status is JobStatus.CANCELLED and job.error == EXPIRED_ERROR
