"""Jobs that wait for other jobs (``depends_on``) and batch follow-ups (``then``), on every
engine: they wait in status ``waiting``, start once every dependency has finished, and are
cancelled (or, by option, run) when one did not complete."""

from __future__ import annotations

import pytest

from sqlitejobq import (
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobNotFound,
    JobStatus,
    Queue,
    Registry,
    Worker,
)

from .conftest import Database


def claim_all(queue: Queue, limit: int = 100) -> list[Job]:
    return queue.claim(worker_id="w1", limit=limit, lease=30.0)


def test_a_job_waits_until_its_dependency_completes_then_is_due_at_once(queue: Queue) -> None:
    first = queue.enqueue("a", {"n": 1})
    second = queue.enqueue("b", {"n": 2}, depends_on=[first])
    assert queue.get(second).status is JobStatus.WAITING
    assert queue.stats().by_status["waiting"] == 1
    [claimed] = claim_all(queue)
    assert claimed.id == first  # the waiting job is not claimable
    assert queue.complete(claimed, "done")
    assert queue.get(second).status is JobStatus.QUEUED
    [then] = claim_all(queue)
    assert then.id == second
    assert queue.stats().by_status["waiting"] == 0


def test_a_job_with_several_dependencies_waits_for_the_last(queue: Queue) -> None:
    deps = queue.enqueue_many("a", [{"n": n} for n in range(3)])
    waiter = queue.enqueue("b", None, depends_on=deps)
    jobs = claim_all(queue)
    assert sorted(j.id for j in jobs) == deps
    for job in jobs[:2]:
        queue.complete(job, None)
        assert queue.get(waiter).status is JobStatus.WAITING
    queue.complete(jobs[2], None)
    assert queue.get(waiter).status is JobStatus.QUEUED


def test_a_failed_dependency_cancels_the_dependent_with_the_reason(queue: Queue) -> None:
    first = queue.enqueue("a", None, max_attempts=1)
    second = queue.enqueue("b", None, depends_on=[first])
    [claimed] = claim_all(queue)
    queue.fail(claimed, "boom")
    job = queue.get(second)
    assert job.status is JobStatus.CANCELLED
    assert job.error is not None and f"dependency {first}" in job.error
    assert job.finished_at is not None
    assert claim_all(queue) == []


def test_run_anyway_starts_the_dependent_when_a_dependency_fails(queue: Queue) -> None:
    first = queue.enqueue("a", None, max_attempts=1)
    second = queue.enqueue("b", None, depends_on=[first], on_dependency_failure="run")
    [claimed] = claim_all(queue)
    queue.fail(claimed, "boom")
    assert queue.get(second).status is JobStatus.QUEUED


def test_a_retry_of_the_dependency_does_not_release_the_dependent_twice(queue: Queue) -> None:
    first = queue.enqueue("a", None, max_attempts=2)
    second = queue.enqueue("b", None, depends_on=[first])
    [claimed] = claim_all(queue)
    queue.fail(claimed, "once")  # back to the queue for a retry: not finished
    assert queue.get(second).status is JobStatus.WAITING


def test_cancelling_a_dependency_cancels_the_chain_after_it(queue: Queue) -> None:
    a = queue.enqueue("a", None)
    b = queue.enqueue("b", None, depends_on=[a])
    c = queue.enqueue("c", None, depends_on=[b])
    d = queue.enqueue("d", None, depends_on=[c], on_dependency_failure="run")
    queue.cancel(a)
    assert queue.get(b).status is JobStatus.CANCELLED
    assert queue.get(c).status is JobStatus.CANCELLED
    assert queue.get(d).status is JobStatus.QUEUED  # it runs whatever became of c
    counts = queue.stats().by_status
    assert counts["cancelled"] == 3 and counts["queued"] == 1 and counts["waiting"] == 0


def test_cancelling_a_waiting_job_cancels_it(queue: Queue) -> None:
    a = queue.enqueue("a", None)
    b = queue.enqueue("b", None, depends_on=[a])
    assert queue.cancel(b)
    assert queue.get(b).status is JobStatus.CANCELLED
    [claimed] = claim_all(queue)
    queue.complete(claimed, None)
    assert queue.get(b).status is JobStatus.CANCELLED  # stays cancelled


def test_dependencies_that_finished_already_are_counted_at_enqueue(queue: Queue) -> None:
    done = queue.enqueue("a", None)
    doomed = queue.enqueue("a", None, max_attempts=1)
    for job in claim_all(queue):
        if job.id == done:
            queue.complete(job, None)
        else:
            queue.fail(job, "boom")
    assert queue.get(queue.enqueue("b", None, depends_on=[done])).status is JobStatus.QUEUED
    cancelled = queue.get(queue.enqueue("b", None, depends_on=[done, doomed]))
    assert cancelled.status is JobStatus.CANCELLED
    assert f"dependency {doomed}" in (cancelled.error or "")
    ran = queue.enqueue("b", None, depends_on=[doomed], on_dependency_failure="run")
    assert queue.get(ran).status is JobStatus.QUEUED


def test_a_missing_dependency_is_refused_and_nothing_is_stored(
    queue: Queue, database: Database
) -> None:
    real = queue.enqueue("a", None)
    before = database.value("SELECT count(*) FROM sqlitejobq_jobs")
    with pytest.raises(JobNotFound, match="99999"):
        queue.enqueue("b", None, depends_on=[real, 99999])
    with pytest.raises(JobNotFound):
        queue.enqueue_many("b", [1, 2], depends_on=[99999])
    assert database.value("SELECT count(*) FROM sqlitejobq_jobs") == before
    assert database.value("SELECT count(*) FROM sqlitejobq_dependencies") == 0
    assert queue.stats().by_status["queued"] == 1


@pytest.mark.parametrize(
    ("depends_on", "error"),
    [("12", InvalidArgumentType), ([1.5], InvalidArgumentType), ([0], InvalidArgument),
     ([-3], InvalidArgument), (7, InvalidArgumentType)],
)  # fmt: skip
def test_bad_dependency_ids_are_refused(queue: Queue, depends_on: object, error: type) -> None:
    with pytest.raises(error):
        queue.enqueue("b", None, depends_on=depends_on)  # type: ignore[arg-type]


def test_a_bad_dependency_policy_is_refused(queue: Queue) -> None:
    a = queue.enqueue("a", None)
    with pytest.raises(InvalidArgument, match="on_dependency_failure"):
        queue.enqueue("b", None, depends_on=[a], on_dependency_failure="maybe")


def test_a_batch_counts_its_waiting_jobs_and_is_not_done_while_they_wait(queue: Queue) -> None:
    gate = queue.enqueue("gate", None)
    batch = queue.enqueue_batch("b", [1, 2, 3], depends_on=[gate])
    progress = queue.batch_progress(batch.id)
    assert (progress.waiting, progress.queued, progress.done) == (3, 0, False)
    [claimed] = claim_all(queue)
    queue.complete(claimed, None)
    progress = queue.batch_progress(batch.id)
    assert (progress.waiting, progress.queued) == (0, 3)


def test_then_runs_once_after_every_job_of_the_batch_with_its_id(
    registry: Registry, queue: Queue
) -> None:
    seen: list[dict[str, object]] = []

    @registry.task("part")
    def part(job: Job) -> int:
        if job.payload == 2:
            raise RuntimeError("one part fails")
        return int(job.payload)

    @registry.task("summary")
    def summary(job: Job) -> None:
        seen.append(job.payload)
        progress = queue.batch_progress(job.payload["batch_id"])
        assert progress.done  # every part has finished when the follow-up runs

    batch = queue.enqueue_batch("part", [1, 2, 3], then="summary", then_payload={"k": "v"},
                                max_attempts=1)  # fmt: skip
    assert batch.then_id is not None and batch.then_id not in batch.job_ids
    assert queue.get(batch.then_id).status is JobStatus.WAITING
    Worker(queue, concurrency=2).run(burst=True)
    assert seen == [{"k": "v", "batch_id": batch.id}]
    assert queue.get(batch.then_id).status is JobStatus.COMPLETED
    assert queue.batch_progress(batch.id).total == 3  # the follow-up is not one of its jobs


def test_then_needs_a_dict_payload(queue: Queue) -> None:
    with pytest.raises(InvalidArgumentType, match="then_payload"):
        queue.enqueue_batch("part", [1], then="summary", then_payload=[1, 2])
    assert queue.stats().by_status["queued"] == 0


def test_a_chain_of_1000_jobs_completes_in_order(registry: Registry, queue: Queue) -> None:
    order: list[int] = []

    @registry.task("step")
    def step(job: Job) -> None:
        order.append(job.payload)

    previous = queue.enqueue("step", 0)
    for n in range(1, 1000):
        previous = queue.enqueue("step", n, depends_on=[previous])
    summary = Worker(queue, concurrency=4).run(burst=True)
    assert order == list(range(1000))
    assert summary.completed == 1000
    assert queue.stats().by_status["completed"] == 1000


def test_a_dependency_may_be_named_twice(queue: Queue) -> None:
    a = queue.enqueue("a", None)
    b = queue.enqueue("b", None, depends_on=[a, a])
    [claimed] = claim_all(queue)
    queue.complete(claimed, None)
    assert queue.get(b).status is JobStatus.QUEUED


def test_a_rescued_job_that_ends_failed_releases_its_dependents(
    clocked_queue: Queue, clock: object
) -> None:
    queue = clocked_queue
    a = queue.enqueue("a", None, max_attempts=1)
    b = queue.enqueue("b", None, depends_on=[a])
    queue.claim(worker_id="dead", limit=1, lease=5.0)
    clock.advance(10.0)  # type: ignore[attr-defined]
    assert queue.lifecycle.rescue_expired() == [a]
    assert queue.get(a).status is JobStatus.FAILED
    assert queue.get(b).status is JobStatus.CANCELLED
