"""Worker: threads running handlers, on every engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from sqlitejobq import (
    InvalidArgument,
    Job,
    JobStatus,
    PermanentFailure,
    Queue,
    Registry,
    TaskOptions,
    TransactionConnection,
    Worker,
)

from .conftest import Database

pytestmark = pytest.mark.timeout(120)


def wait_until(condition: object, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_in_background(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def app(target: str) -> Iterator[tuple[Queue, Registry]]:
    registry = Registry()
    queue = Queue(target, registry=registry, retry_backoff=0.0)
    yield queue, registry
    queue.close()


def test_burst_runs_every_job_once_and_stores_results(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    seen: list[int] = []
    lock = threading.Lock()

    @registry.task("square")
    def square(job: Job) -> int:
        with lock:
            seen.append(job.id)
        return int(job.payload["n"]) ** 2

    ids = queue.enqueue_many("square", [{"n": n} for n in range(200)])
    summary = Worker(queue, concurrency=4).run(burst=True)
    assert summary.completed == 200 and summary.failed == summary.lost == 0
    assert sorted(seen) == sorted(ids)
    assert [queue.get(i).result for i in ids[:5]] == [0, 1, 4, 9, 16]
    assert queue.stats().by_status["completed"] == 200


def test_a_handler_exception_is_retried_then_failed_with_its_traceback(
    app: tuple[Queue, Registry],
) -> None:
    queue, registry = app
    calls: list[int] = []

    @registry.task("flaky", max_attempts=3)
    def flaky(job: Job) -> None:
        calls.append(job.attempts)
        raise ConnectionError(f"upstream down (attempt {job.attempts})")

    @registry.task("fine")
    def fine(job: Job) -> str:
        return "ok"

    bad = queue.enqueue("flaky")
    good = queue.enqueue_many("fine", [1, 2, 3])
    summary = Worker(queue, concurrency=2).run(burst=True)
    assert calls == [1, 2, 3]
    job = queue.get(bad)
    assert job.status is JobStatus.FAILED and job.attempts == 3
    assert job.error == "ConnectionError: upstream down (attempt 3)"
    assert job.traceback is not None and 'raise ConnectionError(f"upstream down' in job.traceback
    assert all(queue.get(i).status is JobStatus.COMPLETED for i in good)
    assert (summary.failed, summary.retried, summary.completed) == (1, 2, 3)


def test_an_unknown_task_goes_back_without_using_an_attempt_and_the_worker_goes_on(
    app: tuple[Queue, Registry],
) -> None:
    queue, registry = app
    registry.register("known", lambda job: "done")
    queue.strict_tasks = False  # enqueued by name for a worker elsewhere (a rolling deploy)
    unknown = queue.enqueue("never_registered", max_attempts=5)
    known = queue.enqueue("known")
    summary = Worker(queue, concurrency=1).run(burst=True)
    job = queue.get(unknown)
    assert job.status is JobStatus.QUEUED and job.attempts == 0
    assert job.run_at > job.created_at  # not claimed again at once by the same worker
    assert job.error is not None and job.error.startswith("UnknownTask: waiting up to 600s")
    assert queue.get(known).status is JobStatus.COMPLETED
    assert (summary.completed, summary.failed, summary.retried, summary.lost) == (1, 0, 0, 0)


def test_an_unknown_task_fails_with_unknown_task_once_its_window_is_over(
    app: tuple[Queue, Registry],
) -> None:
    queue, _ = app
    unknown = queue.enqueue("never_registered", max_attempts=5)
    Worker(queue, concurrency=1, unknown_task_window=0.2).run(burst=True)
    assert queue.get(unknown).status is JobStatus.QUEUED
    time.sleep(0.3)
    summary = Worker(queue, concurrency=1, unknown_task_window=0.2).run(burst=True)
    job = queue.get(unknown)
    assert job.status is JobStatus.FAILED and job.attempts == 0
    assert job.error is not None and job.error.startswith(
        "UnknownTask: no worker that knows task 'never_registered' took the job within 0.2s"
    )
    assert summary.failed == 1
    assert queue.retry(unknown) and queue.get(unknown).status is JobStatus.QUEUED


def test_a_result_that_is_not_json_fails_the_job(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    registry.register("bad_result", lambda job: {1, 2, 3})
    jid = queue.enqueue("bad_result")
    Worker(queue, concurrency=1).run(burst=True)
    job = queue.get(jid)
    assert job.status is JobStatus.FAILED
    assert "result must be JSON-serializable" in (job.error or "")


def test_progress_is_visible_while_the_handler_runs(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    reported, release = threading.Event(), threading.Event()

    @registry.task("long")
    def long(job: Job) -> str:
        job.set_progress(0.3, "fetched prices")
        reported.set()
        assert release.wait(30)
        return "done"

    jid = queue.enqueue("long")
    worker = Worker(queue, concurrency=1)
    thread = run_in_background(worker)
    assert reported.wait(30)
    running = queue.get(jid)
    assert running.status is JobStatus.PROCESSING
    assert (running.progress, running.progress_message) == (0.3, "fetched prices")
    release.set()
    wait_until(lambda: queue.get(jid).status is JobStatus.COMPLETED, what="completion")
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_a_running_handler_sees_its_cancellation(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    started = threading.Event()
    stopped_early: list[bool] = []

    @registry.task("cancellable")
    def cancellable(job: Job) -> str:
        started.set()
        deadline = time.monotonic() + 30
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        stopped_early.append(job.cancelled)
        return "stopped"

    jid = queue.enqueue("cancellable")
    worker = Worker(queue, concurrency=1)
    thread = run_in_background(worker)
    assert started.wait(30)
    assert queue.cancel(jid) is True
    wait_until(lambda: queue.get(jid).status is JobStatus.CANCELLED, what="cancelled")
    assert stopped_early == [True]
    worker.stop()
    thread.join(30)


def test_burst_rescues_a_dead_workers_job_before_returning(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    registry.register("t", lambda job: job.attempts)
    jid = queue.enqueue("t")
    queue.claim("dead-worker", lease=0.2)  # a worker that will never report back
    time.sleep(0.3)
    summary = Worker(queue, concurrency=1).run(burst=True)
    job = queue.get(jid)
    assert job.status is JobStatus.COMPLETED and job.result == 2
    assert summary.completed == 1


def test_burst_leaves_a_job_held_by_a_live_lease_alone(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    registry.register("t", lambda job: None)
    jid = queue.enqueue("t")
    [held] = queue.claim("other-worker", lease=60)
    summary = Worker(queue, concurrency=1).run(burst=True)
    assert summary.processed == 0
    assert queue.get(jid).status is JobStatus.PROCESSING
    assert queue.complete(held) is True


def test_a_long_job_keeps_its_lease_through_heartbeats(
    app: tuple[Queue, Registry], target: str
) -> None:
    queue, registry = app

    @registry.task("slow", lease=0.4)
    def slow(job: Job) -> int:
        time.sleep(1.5)  # well past the lease: only heartbeats keep it
        return job.attempts

    jid = queue.enqueue("slow")
    watcher = Queue(target)
    rescued: list[int] = []
    done = threading.Event()

    def try_to_rescue() -> None:
        while not done.is_set():
            rescued.extend(watcher.rescue_expired())
            time.sleep(0.05)

    rescuer = threading.Thread(target=try_to_rescue)
    rescuer.start()
    Worker(queue, concurrency=1, lease=0.4).run(burst=True)
    done.set()
    rescuer.join(10)
    assert rescued == []
    job = queue.get(jid)
    assert job.status is JobStatus.COMPLETED and job.result == 1
    watcher.close()


def test_handlers_run_in_parallel_threads(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    barrier = threading.Barrier(4, timeout=20)

    @registry.task("meet")
    def meet(job: Job) -> str:
        barrier.wait()  # only passes if four handlers run at once
        return threading.current_thread().name

    ids = queue.enqueue_many("meet", [1, 2, 3, 4])
    Worker(queue, concurrency=4).run(burst=True)
    names = {queue.get(i).result for i in ids}
    assert len(names) == 4
    assert all(queue.get(i).status is JobStatus.COMPLETED for i in ids)


def test_a_worker_claims_only_its_queues(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    registry.register("t", lambda job: job.queue)
    mine = queue.enqueue("t", queue="reports")
    other = queue.enqueue("t", queue="emails")
    Worker(queue, queues=["reports"]).run(burst=True)
    assert queue.get(mine).status is JobStatus.COMPLETED
    assert queue.get(other).status is JobStatus.QUEUED


def test_an_idle_worker_picks_up_new_and_delayed_jobs(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    registry.register("t", lambda job: time.time())
    worker = Worker(queue, concurrency=2)
    thread = run_in_background(worker)
    wait_until(lambda: queue.workers(alive_only=True), what="worker registration")
    now_id = queue.enqueue("t")
    later_id = queue.enqueue("t", delay=0.5)
    wait_until(lambda: queue.get(later_id).status is JobStatus.COMPLETED, what="delayed job")
    assert queue.get(now_id).status is JobStatus.COMPLETED
    later = queue.get(later_id)
    assert later.started_at is not None and later.started_at >= later.run_at
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_stop_lets_running_jobs_finish_and_returns_unstarted_ones(
    app: tuple[Queue, Registry],
) -> None:
    queue, registry = app
    started = threading.Event()

    @registry.task("work")
    def work(job: Job) -> int:
        started.set()
        time.sleep(0.3)
        return job.id

    ids = queue.enqueue_many("work", list(range(20)))
    worker = Worker(queue, concurrency=2, prefetch=4, grace=10)
    thread = run_in_background(worker)
    assert started.wait(30)
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    jobs = [queue.get(i) for i in ids]
    assert not [j for j in jobs if j.status is JobStatus.PROCESSING]
    completed = [j for j in jobs if j.status is JobStatus.COMPLETED]
    queued = [j for j in jobs if j.status is JobStatus.QUEUED]
    assert len(completed) >= 1 and len(completed) + len(queued) == 20
    assert all(j.attempts == 0 for j in queued)  # never started: attempt not counted


def test_a_handler_past_the_grace_period_is_abandoned_not_left_processing(
    app: tuple[Queue, Registry],
) -> None:
    queue, registry = app
    started, release = threading.Event(), threading.Event()

    @registry.task("stuck", max_attempts=3)
    def stuck(job: Job) -> None:
        started.set()
        release.wait(30)

    jid = queue.enqueue("stuck")
    worker = Worker(queue, concurrency=1, grace=0.2)
    thread = run_in_background(worker)
    assert started.wait(30)
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    job = queue.get(jid)
    assert job.status is JobStatus.QUEUED and job.attempts == 1
    assert "interrupted" in (job.error or "")
    release.set()


def test_the_worker_reports_itself_in_the_database(app: tuple[Queue, Registry]) -> None:
    queue, registry = app
    registry.register("t", lambda job: None)
    queue.enqueue_many("t", [1, 2, 3])
    worker = Worker(queue, concurrency=2)
    thread = run_in_background(worker)
    wait_until(lambda: queue.stats().by_status["completed"] == 3, what="jobs")
    [info] = queue.workers(alive_only=True)
    assert info.id == worker.id and info.concurrency == 2
    assert queue.stats().active_workers == 1
    worker.stop()
    thread.join(30)
    [info] = queue.workers()
    assert info.stopped_at is not None and info.jobs_completed == 3
    assert queue.workers(alive_only=True) == []


def test_bad_worker_settings_are_refused(app: tuple[Queue, Registry]) -> None:
    queue, _ = app
    with pytest.raises(InvalidArgument, match="concurrency must be >= 1"):
        Worker(queue, concurrency=0)
    with pytest.raises(InvalidArgument, match="lease must be > 0"):
        Worker(queue, lease=0)
    with pytest.raises(TypeError, match=r"queue must be a sqlitejobq\.Queue"):
        Worker("jobs.db")  # type: ignore[arg-type]


def test_permanent_failure_skips_the_remaining_attempts(app: tuple[Queue, Registry]) -> None:
    queue, registry = app

    @registry.task("lookup", max_attempts=5)
    def lookup(job: Job) -> None:
        raise PermanentFailure("no such symbol 'XYZ.NS'")

    jid = queue.enqueue("lookup")
    Worker(queue, concurrency=1).run(burst=True)
    job = queue.get(jid)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert job.error == "PermanentFailure: no such symbol 'XYZ.NS'"


def test_on_complete_writes_commit_with_the_completion(
    app: tuple[Queue, Registry], database: Database
) -> None:
    queue, registry = app
    database.execute("CREATE TABLE results (job_id INTEGER PRIMARY KEY, value INTEGER)")

    def store(conn: TransactionConnection, job: Job, result: int) -> None:
        # the engine's own placeholders: psycopg's %s on PostgreSQL
        mark = "%s" if conn.dialect == "postgres" else "?"
        conn.execute(f"INSERT INTO results (job_id, value) VALUES ({mark}, {mark})",
                     (job.id, result))  # fmt: skip

    @registry.task("square", on_complete=store)
    def square(job: Job) -> int:
        return int(job.payload) ** 2

    ids = queue.enqueue_many("square", [2, 3, 4])
    Worker(queue, concurrency=2).run(burst=True)
    rows = dict(database.rows("SELECT job_id, value FROM results"))
    assert rows == {ids[0]: 4, ids[1]: 9, ids[2]: 16}
    assert all(queue.get(i).status is JobStatus.COMPLETED for i in ids)


def test_on_complete_does_not_run_for_a_claim_that_lost_its_job(
    app: tuple[Queue, Registry],
) -> None:
    queue, registry = app
    calls: list[int] = []
    registry.register(
        "t", lambda job: None,
        TaskOptions.checked(on_complete=lambda conn, job, result: calls.append(job.id)),
    )  # fmt: skip
    jid = queue.enqueue("t")
    [stale] = queue.claim("w1", lease=0.05)
    time.sleep(0.1)
    assert queue.rescue_expired() == [jid]
    [fresh] = queue.claim("w2")
    assert queue.complete(stale, None) is False
    assert calls == []
    assert queue.complete(fresh, None) is True
    assert calls == [jid]


def test_a_failing_on_complete_rolls_back_its_writes_and_fails_the_attempt(
    app: tuple[Queue, Registry], database: Database
) -> None:
    queue, registry = app
    database.execute("CREATE TABLE results (job_id INTEGER PRIMARY KEY)")

    def store(conn: TransactionConnection, job: Job, result: object) -> None:
        conn.execute(database.sql("INSERT INTO results (job_id) VALUES (?)"), (job.id,))
        if job.attempts < 2:
            raise RuntimeError("disk quota")

    registry.register("t", lambda job: "ok", TaskOptions.checked(on_complete=store))
    registry.register("plain", lambda job: "fine")
    other = queue.enqueue("plain")
    jid = queue.enqueue("t", max_attempts=3)
    Worker(queue, concurrency=2).run(burst=True)
    job = queue.get(jid)
    assert job.status is JobStatus.COMPLETED and job.attempts == 2
    assert database.rows("SELECT job_id FROM results") == [(jid,)]
    assert queue.get(other).status is JobStatus.COMPLETED


def test_on_complete_cannot_commit_the_transaction(app: tuple[Queue, Registry]) -> None:
    queue, registry = app

    def sneaky(conn: TransactionConnection, job: Job, result: object) -> None:
        conn.commit()

    registry.register("t", lambda job: 1, TaskOptions.checked(on_complete=sneaky))
    jid = queue.enqueue("t", max_attempts=1)
    Worker(queue, concurrency=1).run(burst=True)
    job = queue.get(jid)
    assert job.status is JobStatus.FAILED
    assert "must not commit" in (job.error or "")
