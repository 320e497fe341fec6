"""Waiting for a job or a batch to finish, on every engine: woken by the transaction that
ends it (in this process or another), not by a sleep loop; bounded by a timeout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sqlitejobq import (
    JobFailed,
    JobNotFound,
    JobStatus,
    Queue,
    Registry,
    WaitTimeout,
    Worker,
)

ROOT = Path(__file__).resolve().parents[1]


def finish_later(target: str, seconds: float, fail: bool = False) -> threading.Thread:
    """A thread that claims one job on a queue of its own after ``seconds`` and ends it."""

    def run() -> None:
        time.sleep(seconds)
        with Queue(target) as other:
            [job] = other.claim("finisher", limit=1)
            if fail:
                other.fail(job, "it broke", retry=False)
            else:
                other.complete(job, {"answer": 42})

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_wait_returns_the_finished_job(queue: Queue, target: str) -> None:
    job_id = queue.enqueue("t", 1)
    thread = finish_later(target, 0.2)
    job = queue.wait(job_id, timeout=30)
    thread.join()
    assert job.status is JobStatus.COMPLETED and job.result == {"answer": 42}


def test_wait_on_a_finished_job_returns_at_once(queue: Queue) -> None:
    job_id = queue.enqueue("t", 1)
    [claimed] = queue.claim("w", limit=1)
    queue.complete(claimed, "done")
    assert queue.wait(job_id, timeout=0.001).result == "done"


def test_wait_raises_job_failed_on_request(queue: Queue, target: str) -> None:
    job_id = queue.enqueue("t", 1)
    thread = finish_later(target, 0.1, fail=True)
    with pytest.raises(JobFailed, match="it broke") as caught:
        queue.wait(job_id, timeout=30, raise_on_failure=True)
    thread.join()
    assert caught.value.job.status is JobStatus.FAILED
    assert queue.wait(job_id).status is JobStatus.FAILED  # without the request: the job


def test_wait_times_out_with_a_library_error_that_is_a_timeout_error(queue: Queue) -> None:
    job_id = queue.enqueue("t", 1)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=f"job {job_id} did not finish within 0.2s"):
        queue.wait(job_id, timeout=0.2)
    assert time.monotonic() - started < 5
    with pytest.raises(TimeoutError):
        queue.wait(job_id, timeout=0.05)


def test_wait_for_a_job_that_does_not_exist(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        queue.wait(12345, timeout=1)


def test_wait_is_woken_by_another_process_not_by_its_safety_look(queue: Queue, target: str) -> None:
    """The other process completes the job 0.3 s after it claims it; the wait returns well
    before the waiter's own once-a-second look could have found it."""
    job_id = queue.enqueue("t", 1)
    code = (
        "import time, sys\n"
        "from sqlitejobq import Queue\n"
        f"q = Queue({target!r})\n"
        "[j] = q.claim('other', limit=1)\n"
        "time.sleep(0.3)\n"
        "q.complete(j, 'ok')\n"
        "print(time.time(), flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    job = queue.wait(job_id, timeout=60)
    woke = time.time()
    committed = float(process.communicate(timeout=60)[0])
    assert job.result == "ok"
    assert woke - committed < 0.5  # the safety look comes once a second


def test_wait_batch_returns_when_every_job_has_finished(registry: Registry, queue: Queue) -> None:
    registry.task("part")(lambda job: job.payload)
    batch = queue.enqueue_batch("part", [1, 2, 3])
    worker = Worker(queue, concurrency=2)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        progress = queue.wait_batch(batch.id, timeout=30)
    finally:
        worker.stop()
        thread.join(30)
    assert progress.done and progress.completed == 3


def test_wait_batch_times_out_and_knows_missing_batches(queue: Queue) -> None:
    batch = queue.enqueue_batch("part", [1])
    with pytest.raises(WaitTimeout, match=f"batch {batch.id}"):
        queue.wait_batch(batch.id, timeout=0.1)
    with pytest.raises(JobNotFound):
        queue.wait_batch(999, timeout=0.1)


@pytest.mark.parametrize("timeout", [-1, float("nan"), "5"])
def test_a_bad_timeout_is_refused(queue: Queue, timeout: object) -> None:
    job_id = queue.enqueue("t", 1)
    with pytest.raises((ValueError, TypeError), match="timeout"):
        queue.wait(job_id, timeout=timeout)  # type: ignore[arg-type]
