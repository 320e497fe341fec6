"""``async def`` handlers, on every engine: run by the same Worker on one event loop, many at
once, counted by ``concurrency``; progress awaited; failures, retries, hooks, timeouts and
cancellation as for sync handlers; sync and async handlers side by side."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from sqlitejobq import Job, JobStatus, Queue, Registry, Worker

pytestmark = pytest.mark.timeout(120)


def run_in_background(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    return thread


def test_a_thousand_async_jobs_run_at_once_up_to_the_concurrency(
    registry: Registry, queue: Queue
) -> None:
    running = peak = 0

    @registry.task("nap")
    async def nap(job: Job) -> int:
        nonlocal running, peak
        running += 1  # one loop: no lock needed
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1
        return int(job.payload)

    queue.enqueue_many("nap", list(range(1000)))
    summary = Worker(queue, concurrency=200).run(burst=True)
    assert summary.completed == 1000
    assert peak == 200  # as many at once as the concurrency, on one thread
    assert queue.stats().by_status["completed"] == 1000
    assert sorted(j.result for j in queue.jobs(status="completed", limit=2000)) == list(range(1000))


def test_progress_is_awaited_and_stored(registry: Registry, queue: Queue) -> None:
    seen: list[Any] = []

    @registry.task("report")
    async def report(job: Job) -> str:
        seen.append(await job.set_progress(0.5, "halfway"))
        seen.append(await job.heartbeat())
        seen.append(job.cancelled)
        return "done"

    job_id = queue.enqueue("report")
    Worker(queue).run(burst=True)
    job = queue.get(job_id)
    assert seen == [True, True, False]
    assert (job.status, job.result, job.progress_message) == (
        JobStatus.COMPLETED, "done", "halfway"
    )  # fmt: skip


def test_a_failing_async_handler_is_retried_then_fails_with_its_traceback(
    registry: Registry, queue: Queue
) -> None:
    attempts: list[int] = []

    @registry.task("flaky", max_attempts=2, backoff=0.0)
    async def flaky(job: Job) -> None:
        attempts.append(job.attempts)
        await asyncio.sleep(0)
        raise RuntimeError(f"attempt {job.attempts} broke")

    job_id = queue.enqueue("flaky")
    Worker(queue).run(burst=True)
    job = queue.get(job_id)
    assert attempts == [1, 2]
    assert job.status is JobStatus.FAILED
    assert job.error == "RuntimeError: attempt 2 broke"
    assert job.traceback is not None and "in flaky" in job.traceback


def test_sync_and_async_handlers_in_one_worker_and_the_hook_runs(
    registry: Registry, queue: Queue
) -> None:
    hooked: list[int] = []

    @registry.task("double")
    def double(job: Job) -> int:
        return int(job.payload) * 2

    @registry.task("triple", on_complete=lambda conn, job, result: hooked.append(result))
    async def triple(job: Job) -> int:
        await asyncio.sleep(0.01)
        return int(job.payload) * 3

    a = queue.enqueue_many("double", [1, 2, 3])
    b = queue.enqueue_many("triple", [1, 2, 3])
    Worker(queue, concurrency=4).run(burst=True)
    assert [queue.get(i).result for i in a] == [2, 4, 6]
    assert [queue.get(i).result for i in b] == [3, 6, 9]
    assert sorted(hooked) == [3, 6, 9]


def test_cancelling_a_running_async_job_raises_cancelled_error_in_it(
    registry: Registry, queue: Queue
) -> None:
    started = threading.Event()
    outcome: list[str] = []

    @registry.task("long")
    async def long(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    job_id = queue.enqueue("long")
    worker = Worker(queue, lease=0.6)  # heartbeats every 0.2 s carry the cancel
    thread = run_in_background(worker)
    try:
        assert started.wait(30)
        assert queue.cancel(job_id)
        deadline = time.monotonic() + 30
        while queue.get(job_id).status is not JobStatus.CANCELLED:
            assert time.monotonic() < deadline, "the cancel did not reach the handler"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(30)
    assert outcome == ["cancelled"]
    assert "CancelledError" in (queue.get(job_id).error or "")


def test_an_async_handler_past_its_timeout_is_cancelled_and_its_attempt_fails(
    registry: Registry, queue: Queue
) -> None:
    @registry.task("stuck", timeout=0.2, max_attempts=1)
    async def stuck(job: Job) -> None:
        await asyncio.sleep(60)

    job_id = queue.enqueue("stuck")
    started = time.monotonic()
    summary = Worker(queue).run(burst=True)
    job = queue.get(job_id)
    assert job.status is JobStatus.FAILED and "JobTimeout" in (job.error or "")
    assert summary.stuck == 0  # a coroutine is stopped, not left behind as a thread is
    assert time.monotonic() - started < 30
