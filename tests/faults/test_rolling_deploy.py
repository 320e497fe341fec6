"""Rolling deploys: old and new workers side by side. A job whose task an old worker does
not know waits for a new one, its attempts untouched, for a bounded window."""

from __future__ import annotations

import signal

import pytest

from sqlitejobq import JobStatus

from .conftest import Engine, finish, wait_until

pytestmark = pytest.mark.timeout(180)

OLD = "tests.faults.apps:old_registry"


def test_new_tasks_wait_for_new_workers_without_using_their_attempts(engine: Engine) -> None:
    queue = engine.open()
    old = engine.worker("--concurrency", "2", app=OLD)
    wait_until(lambda: bool(queue.workers(alive_only=True)), 60, "the old worker")
    new_jobs = queue.enqueue_many("report_v2", [None] * 10)  # max_attempts=1
    old_jobs = queue.enqueue_many("sleep", [{"seconds": 0.05}] * 10)
    wait_until(lambda: all(queue.get(i).status is JobStatus.COMPLETED for i in old_jobs), 60,
               "the old worker's own jobs")  # fmt: skip
    # the old worker hands back what it claimed of the new task, then leaves it to others
    wait_until(
        lambda: any(
            (queue.get(i).error or "").startswith("UnknownTask: waiting") for i in new_jobs
        ),
        60,
        "the old worker to hand a new job back",
    )
    assert all(queue.get(i).status is JobStatus.QUEUED for i in new_jobs)
    assert all(queue.get(i).attempts == 0 for i in new_jobs)
    new = engine.worker("--concurrency", "2")
    wait_until(lambda: all(queue.get(i).status is JobStatus.COMPLETED for i in new_jobs), 60,
               "the new worker to run the new jobs")  # fmt: skip
    for process in (old, new):
        process.send_signal(signal.SIGTERM)
    outputs = [finish(old), finish(new)]
    jobs = [queue.get(i) for i in new_jobs]
    assert [j.attempts for j in jobs] == [1] * 10  # max_attempts=1: none was used up
    assert all(j.error is None for j in jobs)
    assert {j.result["pid"] for j in jobs} == {new.pid}
    assert all(engine.runs()[i] == 1 for i in new_jobs)
    assert "does not know task 'report_v2'" in outputs[0]


def test_the_deploy_recipe_stop_old_workers_gracefully_while_new_ones_start(
    engine: Engine,
) -> None:
    # the documented recipe: start the new workers, SIGTERM the old ones (they finish what
    # they run within their grace and hand back what they claimed), nothing is lost
    queue = engine.open()
    old = engine.worker("--concurrency", "4", "--grace", "30", app=OLD)
    ids = queue.enqueue_many("sleep", [{"seconds": 0.2}] * 40)
    v2 = queue.enqueue_many("report_v2", [None] * 5)
    wait_until(lambda: queue.stats().by_status["completed"] >= 4, 60, "the old worker to work")
    new = engine.worker("--concurrency", "4")
    old.send_signal(signal.SIGTERM)
    old_output = finish(old)
    assert old.returncode == 0, old_output[-3000:]
    wait_until(lambda: all(queue.get(i).status is JobStatus.COMPLETED for i in [*ids, *v2]), 90,
               "every job")  # fmt: skip
    new.send_signal(signal.SIGTERM)
    finish(new)
    assert queue.stats().by_status == {"queued": 0, "processing": 0, "completed": 45,
                                       "failed": 0, "cancelled": 0, "waiting": 0}  # fmt: skip
    assert all(engine.runs()[i] == 1 for i in [*ids, *v2])


def test_with_no_new_worker_in_the_window_the_job_fails_with_unknown_task(
    engine: Engine,
) -> None:
    queue = engine.open()
    job_id = queue.enqueue("report_v2")
    old = engine.worker("--concurrency", "1", "--unknown-task-window", "1", app=OLD)
    wait_until(lambda: queue.get(job_id).status is JobStatus.FAILED, 60, "the window to pass")
    old.send_signal(signal.SIGTERM)
    finish(old)
    job = queue.get(job_id)
    assert job.attempts == 0 and engine.runs()[job_id] == 0
    assert job.error is not None
    assert job.error.startswith("UnknownTask: no worker that knows task 'report_v2' took the job")
