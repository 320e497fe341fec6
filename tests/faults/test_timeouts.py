"""Job timeouts: a handler past its timeout is told so, loses its lease renewal, and past a
grace its attempt fails; a stuck thread is replaced, a stuck process too."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from sqlitejobq import Job, JobStatus, Registry, Worker

from .conftest import Engine, finish, wait_until

pytestmark = pytest.mark.timeout(180)


def run_in_background(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    return thread


def test_a_handler_reporting_past_its_timeout_gets_job_timeout_and_is_retried(
    engine: Engine,
) -> None:
    registry = Registry()
    seen: list[tuple[int, bool]] = []

    @registry.task("crawl", timeout=0.3, max_attempts=2, backoff=0.0)
    def crawl(job: Job) -> None:
        for step in range(200):
            time.sleep(0.05)
            seen.append((job.attempts, job.timed_out))
            job.set_progress(step / 200)  # raises JobTimeout once the job is past 0.3 s

    queue = engine.open(registry=registry)
    job_id = queue.enqueue("crawl")
    summary = Worker(queue, concurrency=1).run(burst=True)
    job = queue.get(job_id)
    assert job.status is JobStatus.FAILED and job.attempts == 2
    assert job.error == f"JobTimeout: job {job_id} crawl timed out after 0.3s"
    assert job.traceback is not None and "set_progress" in job.traceback
    assert (summary.retried, summary.failed, summary.stuck) == (1, 1, 0)
    for attempt in (1, 2):
        flags = [timed_out for n, timed_out in seen if n == attempt]
        assert flags[0] is False and flags[-1] is True  # job.timed_out turned on, once
        assert len(flags) < 20  # the handler stopped at its first report past 0.3 s


def test_the_queue_default_timeout_applies_to_tasks_without_one(engine: Engine) -> None:
    registry = Registry()

    @registry.task("report")
    def report(job: Job) -> None:
        time.sleep(0.4)
        job.heartbeat()

    queue = engine.open(registry=registry, job_timeout=0.2, max_attempts=1)
    job_id = queue.enqueue("report")
    Worker(queue, concurrency=1).run(burst=True)
    job = queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == f"JobTimeout: job {job_id} report timed out after 0.2s"


def test_a_hung_handler_fails_after_the_grace_and_a_new_thread_takes_its_place(
    engine: Engine,
) -> None:
    registry = Registry()
    hung_returned = threading.Event()

    @registry.task("hang", timeout=0.3, max_attempts=1)
    def hang(job: Job) -> None:
        time.sleep(6.0)  # deaf to its timeout, like a network call without one
        hung_returned.set()

    @registry.task("quick")
    def quick(job: Job) -> str:
        return "done"

    queue = engine.open(registry=registry)
    hung = queue.enqueue("hang")
    quick_ids = queue.enqueue_many("quick", [None] * 3)
    worker = Worker(queue, concurrency=1, timeout_grace=0.3)
    thread = run_in_background(worker)
    wait_until(lambda: all(queue.get(i).status.finished for i in [hung, *quick_ids]), 30,
               "every job")  # fmt: skip
    # one handler thread only, and it is still asleep in the hung job: the quick jobs ran
    # on the thread that took its place
    assert not hung_returned.is_set()
    job = queue.get(hung)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert job.error is not None
    assert job.error.startswith("JobTimeout: timed out after 0.3s (the handler still ran 0.3s")
    assert [queue.get(i).status for i in quick_ids] == [JobStatus.COMPLETED] * 3
    worker.stop(timeout=0)
    thread.join(30)
    assert hung_returned.is_set() or not thread.is_alive()


def test_the_lease_of_a_job_past_its_timeout_is_no_longer_renewed(engine: Engine) -> None:
    registry = Registry()

    @registry.task("deaf", timeout=0.2, max_attempts=1)
    def deaf(job: Job) -> str:
        time.sleep(3.0)
        return "too late"

    queue = engine.open(registry=registry)
    job_id = queue.enqueue("deaf")
    # a long grace: the lease (1 s, renewed every third of it while in time) runs out first
    worker = Worker(queue, concurrency=1, lease=1.0, timeout_grace=30.0)
    thread = run_in_background(worker)
    wait_until(lambda: queue.get(job_id).status is JobStatus.PROCESSING, 30, "the job to start")
    wait_until(lambda: queue.get(job_id).status.finished, 30, "the lease to run out")
    job = queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error.startswith("lease expired")
    worker.stop()
    thread.join(30)
    assert queue.get(job_id).result is None  # the late result was refused by the fence


def test_a_supervised_process_with_a_stuck_handler_is_replaced(engine: Engine) -> None:
    queue = engine.open()
    job_id = queue.enqueue("stuck", {"seconds": 3600})
    supervisor = engine.worker("--processes", "1", "--concurrency", "2", "--timeout-grace", "0.5",
                               "--grace", "1")  # fmt: skip
    wait_until(lambda: queue.get(job_id).status is JobStatus.FAILED, 90, "both attempts to fail")
    supervisor.send_signal(signal.SIGTERM)
    output = finish(supervisor)
    job = queue.get(job_id)
    assert job.attempts == 2
    assert job.error is not None and job.error.startswith("JobTimeout: timed out after 0.5s")
    pids = {line.split()[2] for line in engine.run_log.read_text().splitlines()}
    assert len(pids) == 2, "the second attempt ran in the process that replaced the first"
    assert "exited with 75" in output and "supervisor replaces this process" in output


def test_a_process_hung_holding_the_interpreter_is_killed_and_its_job_taken_back(
    engine: Engine,
) -> None:
    queue = engine.open()
    job_id = queue.enqueue("hold_the_interpreter")
    supervisor = engine.worker("--processes", "1", "--hang-timeout", "3", "--lease", "2")
    wait_until(lambda: queue.get(job_id).status is JobStatus.FAILED, 120, "the job to end")
    supervisor.send_signal(signal.SIGTERM)
    output = finish(supervisor)
    job = queue.get(job_id)
    assert job.attempts == 1
    assert job.error is not None and job.error.startswith("lease expired")
    assert "gave no sign of life" in output, output[-3000:]
    assert len(queue.workers()) >= 2  # the killed process and the one that replaced it
