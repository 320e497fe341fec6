"""Handlers and tasks steering their jobs, on both engines: ``raise Snooze`` (sync and async,
bounded by ``max_snoozes``, in worker processes), retry schedules given as lists of waits,
and the backoff of runs that ended without an outcome (an expired lease, a worker gone)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sqlitejobq import (
    AsyncQueue,
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobNotFound,
    JobStatus,
    Queue,
    Registry,
    Snooze,
    Worker,
)
from tests.conftest import Clock
from tests.integration.test_worker_processes import APP, ROOT, assert_no_lock_errors

pytestmark = pytest.mark.timeout(120)


def due_in(queue: Queue, job_id: int) -> float:
    return queue.get(job_id).run_at - time.time()


# --- Snooze ------------------------------------------------------------------------------


def test_a_snooze_puts_the_job_back_without_counting_the_attempt(target: str) -> None:
    registry = Registry()

    @registry.task("later")
    def later(job: Job) -> None:
        raise Snooze(30)

    with Queue(target, registry=registry) as queue:
        job_id = queue.enqueue("later", {})
        summary = Worker(queue).run(burst=True)
        job = queue.get(job_id)
        assert job.status is JobStatus.QUEUED and job.attempts == 0 and job.error is None
        assert 28 < due_in(queue, job_id) <= 30.5
        assert (summary.snoozed, summary.retried, summary.failed) == (1, 0, 0)
        events = [event.event for event in queue.timeline(job_id)]
        assert events == ["enqueued", "started", "snoozed"]
        snoozed = queue.timeline(job_id)[-1]
        assert snoozed.outcome == "queued" and snoozed.error == "snoozed for 30s"


def test_an_async_handler_snoozes_too(target: str) -> None:
    registry = Registry()

    @registry.task("later")
    async def later(job: Job) -> None:
        await asyncio.sleep(0)
        raise Snooze(5)

    with Queue(target, registry=registry) as queue:
        job_id = queue.enqueue("later", {})
        summary = Worker(queue).run(burst=True)
        assert summary.snoozed == 1
        assert queue.get(job_id).status is JobStatus.QUEUED
        assert 3 < due_in(queue, job_id) <= 5.5


def test_a_job_snoozed_past_max_snoozes_fails_saying_so(target: str) -> None:
    registry = Registry()
    runs: list[int] = []

    @registry.task("forever")
    def forever(job: Job) -> None:
        runs.append(job.attempts)
        raise Snooze(0)

    with Queue(target, registry=registry, max_snoozes=2) as queue:
        job_id = queue.enqueue("forever", {})
        Worker(queue).run(burst=True)
        job = queue.get(job_id)
        assert job.status is JobStatus.FAILED
        assert runs == [1, 1, 1]  # snoozed twice, uncounted; the third snooze ends it
        assert job.attempts == 1
        assert "max_snoozes=2" in (job.error or "")
        events = [event.event for event in queue.timeline(job_id)]
        assert events.count("snoozed") == 3 and events[-1] == "snoozed"
        assert queue.timeline(job_id)[-1].outcome == "failed"


def test_a_snoozed_job_keeps_its_attempts_for_real_failures(target: str) -> None:
    registry = Registry()
    seen: list[int] = []

    @registry.task("picky", max_attempts=2, backoff=0)
    def picky(job: Job) -> str:
        seen.append(job.attempts)
        if len(seen) <= 2:
            raise Snooze(0)
        if len(seen) == 3:
            raise RuntimeError("one real failure")
        return "done"

    with Queue(target, registry=registry) as queue:
        job_id = queue.enqueue("picky", {})
        Worker(queue).run(burst=True)
        job = queue.get(job_id)
        assert job.status is JobStatus.COMPLETED and job.result == "done"
        assert seen == [1, 1, 1, 2] and job.attempts == 2


@pytest.mark.parametrize(
    ("seconds", "error"),
    [(-1, InvalidArgument), (float("nan"), InvalidArgument), ("30", InvalidArgumentType)],
)
def test_a_bad_snooze_is_refused_where_it_is_raised(seconds: object, error: type) -> None:
    with pytest.raises(error, match="Snooze seconds"):
        Snooze(seconds)  # type: ignore[arg-type]


def test_max_snoozes_must_be_a_count(target: str) -> None:
    with pytest.raises(InvalidArgument, match="max_snoozes"):
        Queue(target, max_snoozes=-1)


def test_worker_processes_run_a_snoozing_job_to_its_end_once(target: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with Queue(target, strict_tasks=False) as queue:
        job_id = queue.enqueue("snoozy", {"marker": str(marker), "runs": 4})
    env = {**os.environ, "SQLITEJOBQ_TEST_LOG": str(tmp_path / "runs.log"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", target, "--app", APP,
         "--processes", "2", "--burst"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_lock_errors(done.stdout + done.stderr)
    with Queue(target, strict_tasks=False) as queue:
        job = queue.get(job_id)
        assert job.status is JobStatus.COMPLETED and job.result == 4 and job.attempts == 1
        events = [event.event for event in queue.timeline(job_id)]
        assert events.count("snoozed") == 3 and events.count("completed") == 1
    assert marker.stat().st_size == 4


# --- retry schedules -----------------------------------------------------------------------


def test_a_list_backoff_gives_the_wait_before_each_retry_the_last_repeated(
    target: str,
) -> None:
    registry = Registry()

    @registry.task("sync", max_attempts=5, backoff=[10, 60])
    def sync(job: Job) -> None: ...

    clock = Clock()
    with Queue(target, registry=registry, clock=clock) as queue:
        job_id = queue.enqueue("sync", {})
        waits = []
        for _ in range(3):
            (job,) = queue.claim("w")
            queue.fail(job, "down")
            waits.append(queue.get(job_id).run_at - clock())
            assert queue.claim("w") == []
            clock.advance(waits[-1])
        assert waits == [10, 60, 60]


def test_the_queue_default_may_be_a_list(target: str) -> None:
    registry = Registry()

    @registry.task("sync", max_attempts=3)
    def sync(job: Job) -> None: ...

    with Queue(target, registry=registry, retry_backoff=[7]) as queue:
        job_id = queue.enqueue("sync", {})
        (job,) = queue.claim("w")
        queue.fail(job, "down")
        assert 6 < due_in(queue, job_id) <= 7.5


@pytest.mark.parametrize(
    ("backoff", "error", "message"),
    [
        ([], InvalidArgument, "at least one wait"),
        ([5, -1], InvalidArgument, r"backoff\[1\]"),
        (["5"], InvalidArgumentType, r"backoff\[0\]"),
        ("10", InvalidArgumentType, "list of waits"),
        (list(range(101)), InvalidArgument, "at most 100"),
    ],
)
def test_a_bad_backoff_is_refused_at_declaration(
    backoff: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        Registry().task("t", backoff=backoff)  # type: ignore[arg-type]


# --- runs that ended without an outcome -------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [3, 1], ids=["attempts left", "last attempt"])
def test_a_job_whose_lease_expired_waits_its_backoff_before_running_again(
    target: str, max_attempts: int
) -> None:
    registry = Registry()

    @registry.task("crashy", max_attempts=max_attempts, backoff=[20])
    def crashy(job: Job) -> None: ...

    with Queue(target, registry=registry) as queue:
        job_id = queue.enqueue("crashy", {})
        queue.claim("w", lease=0.2)
        time.sleep(0.5)
        assert queue.rescue_expired() == [job_id]
        job = queue.get(job_id)
        if max_attempts == 1:  # nothing left to wait for: failed at once
            assert job.status is JobStatus.FAILED
            return
        assert job.status is JobStatus.QUEUED and job.attempts == 1
        assert 18 < due_in(queue, job_id) <= 20.5
        assert queue.claim("w") == []  # not at once, again and again


def test_an_abandoned_run_waits_its_backoff(target: str) -> None:
    registry = Registry()

    @registry.task("crashy", max_attempts=3, backoff=[15])
    def crashy(job: Job) -> None: ...

    with Queue(target, registry=registry) as queue:
        job_id = queue.enqueue("crashy", {})
        jobs = queue.claim("w")
        assert queue.lifecycle.abandon(jobs, "worker interrupted") == [True]
        assert queue.get(job_id).status is JobStatus.QUEUED
        assert 13 < due_in(queue, job_id) <= 15.5


# --- changing a job that has not started -------------------------------------------------------


def test_update_changes_a_queued_jobs_priority_queue_and_due_time(queue: Queue) -> None:
    first = queue.enqueue("noop", {}, queue="bulk")
    second = queue.enqueue("noop", {}, queue="bulk")
    job = queue.update(second, priority=10, queue="urgent")
    assert (job.priority, job.queue, job.status) == (10, "urgent", JobStatus.QUEUED)
    assert queue.stats().counts["urgent"]["queued"] == 1
    assert queue.stats().counts["bulk"]["queued"] == 1
    assert [j.id for j in queue.claim("w", ["urgent", "bulk"], limit=2)] == [second, first]
    third = queue.enqueue("noop", {})
    later = queue.update(third, delay=60)
    assert 58 < later.run_at - time.time() <= 61
    assert queue.claim("w") == []
    sooner = queue.update(third, run_at=datetime.now(UTC))
    assert sooner.run_at <= time.time()
    events = [(e.event, e.outcome, e.error) for e in queue.timeline(third)]
    assert events[1] == ("updated", "queued", "changed: due in 60s")
    assert events[2][:2] == ("updated", "queued") and events[2][2].startswith("changed: due at")
    assert [e.event for e in queue.timeline(second)][1:] == ["updated", "started"]


def test_update_refuses_a_job_that_started_and_changes_nothing(queue: Queue) -> None:
    job_id = queue.enqueue("noop", {})
    (claimed,) = queue.claim("w")
    with pytest.raises(InvalidArgument, match=f"job {job_id} is processing"):
        queue.update(job_id, priority=5)
    assert queue.get(job_id).priority == 0
    queue.complete(claimed, 1)
    with pytest.raises(InvalidArgument, match="is completed"):
        queue.update(job_id, queue="other")
    assert queue.get(job_id).queue == "default"


def test_update_of_a_waiting_job_takes_priority_and_queue_not_a_due_time(queue: Queue) -> None:
    first = queue.enqueue("noop", {})
    waiting = queue.enqueue("noop", {}, depends_on=[first])
    assert queue.update(waiting, priority=3).priority == 3
    with pytest.raises(InvalidArgument, match="waiting for its dependencies"):
        queue.update(waiting, delay=10)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({}, InvalidArgument, "needs priority, queue, delay or run_at"),
        ({"delay": -1}, InvalidArgument, "delay"),
        ({"delay": 1, "run_at": datetime.now(UTC)}, InvalidArgument, "not both"),
        ({"run_at": datetime(2030, 1, 1)}, InvalidArgument, "naive"),
        ({"run_at": 1_900_000_000}, InvalidArgumentType, "aware datetime"),
        ({"queue": ""}, InvalidArgument, "queue"),
        ({"priority": "high"}, InvalidArgumentType, "priority"),
    ],
)
def test_bad_changes_are_refused_with_nothing_changed(
    queue: Queue, changes: dict[str, object], error: type, message: str
) -> None:
    job_id = queue.enqueue("noop", {})
    before = queue.get(job_id)
    with pytest.raises(error, match=message):
        queue.update(job_id, **changes)  # type: ignore[arg-type]
    assert queue.get(job_id) == before


def test_update_of_an_unknown_job_is_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        queue.update(12345, priority=1)


def test_async_queue_updates_too(target: str) -> None:
    async def main() -> Job:
        async with AsyncQueue(target) as aqueue:
            job_id = await aqueue.enqueue("noop", {})
            return await aqueue.update(job_id, priority=7)

    assert asyncio.run(main()).priority == 7
