"""The Queue API on every engine: every method, every documented error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sqlitejobq import (
    DuplicateJob,
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobNotFound,
    JobStatus,
    PayloadError,
    Queue,
    QueueClosed,
    Registry,
    SqliteJobQError,
    UnknownTask,
)

from .conftest import Clock, Database


def job_count(database: Database) -> int:
    return int(database.value("SELECT count(*) FROM sqlitejobq_jobs"))


# --- enqueue and get ---------------------------------------------------------------------


def test_enqueue_stores_a_queued_job_with_defaults(queue: Queue) -> None:
    jid = queue.enqueue("analyze_stock", {"symbol": "TCS.NS"})
    job = queue.get(jid)
    assert job.id == jid
    assert job.task == "analyze_stock"
    assert job.payload == {"symbol": "TCS.NS"}
    assert job.status is JobStatus.QUEUED
    assert (job.queue, job.priority, job.attempts, job.max_attempts) == ("default", 0, 0, 3)
    assert job.progress == 0.0 and job.result is None and job.error is None
    assert job.started_at is None and job.finished_at is None
    assert job.created_at == pytest.approx(job.run_at, abs=1e-6)


def test_ids_increase_and_are_never_reused_after_purge(clocked_queue: Queue, clock: Clock) -> None:
    first = clocked_queue.enqueue("t")
    [job] = clocked_queue.claim("w")
    clocked_queue.complete(job)
    clock.advance(10)
    assert clocked_queue.purge(older_than=1) == 1
    assert clocked_queue.enqueue("t") > first


@pytest.mark.parametrize(
    "payload", [None, 0, 1.5, "text", [1, "two", None], {"nested": {"list": [1, 2]}}, "ünïcödé ✓"]
)
def test_any_json_payload_round_trips(queue: Queue, payload: object) -> None:
    assert queue.get(queue.enqueue("t", payload)).payload == payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({1, 2}, "JSON-serializable"),
        (b"bytes", "JSON-serializable"),
        (object(), "JSON-serializable"),
        (math.nan, "JSON-serializable"),
        ({"x": math.inf}, "JSON-serializable"),
    ],
)
def test_a_payload_that_is_not_json_is_refused_and_nothing_is_stored(
    queue: Queue, database: Database, payload: object, reason: str
) -> None:
    with pytest.raises(PayloadError, match=reason):
        queue.enqueue("t", payload)
    assert job_count(database) == 0


def test_payload_error_is_a_value_error(queue: Queue) -> None:
    with pytest.raises(ValueError, match="JSON"):
        queue.enqueue("t", {1, 2})


def test_payload_over_the_size_bound_is_refused(target: str, database: Database) -> None:
    with Queue(target, max_payload_bytes=100) as q:
        q.enqueue("t", "x" * 90)
        with pytest.raises(PayloadError, match="over the limit of 100"):
            q.enqueue("t", "x" * 200)
        with pytest.raises(PayloadError, match="over the limit"):
            q.enqueue("t", "é" * 60)  # 60 characters, 120 bytes as UTF-8
        assert job_count(database) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"task": ""}, InvalidArgument, "task must be 1-200 characters"),
        ({"task": 5}, InvalidArgumentType, "task must be a str, got int"),
        ({"task": "has space"}, InvalidArgument, "task must be"),
        ({"queue": ""}, InvalidArgument, "queue must be"),
        ({"queue": ["a"]}, InvalidArgumentType, "queue must be a str"),
        ({"priority": 1.5}, InvalidArgumentType, "priority must be an int, got float"),
        ({"priority": True}, InvalidArgumentType, "priority must be an int, got bool"),
        ({"delay": -5}, InvalidArgument, "delay must be >= 0, got -5"),
        ({"delay": math.inf}, InvalidArgument, "delay must be finite"),
        ({"delay": "5"}, InvalidArgumentType, "delay must be a number of seconds"),
        ({"max_attempts": 0}, InvalidArgument, "max_attempts must be >= 1, got 0"),
        ({"unique_key": ""}, InvalidArgument, "unique_key must be 1-1000 characters"),
        ({"unique_key": 7}, InvalidArgumentType, "unique_key must be a str or None"),
        ({"connection": "conn"}, InvalidArgumentType, "connection must be a {driver}"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message_and_nothing_stored(
    queue: Queue,
    database: Database,
    engine: str,
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    args = {"task": "t", **kwargs}
    task = args.pop("task")
    driver = {"sqlite": r"sqlite3\.Connection", "postgres": "psycopg connection"}[engine]
    with pytest.raises(error, match=message.format(driver=driver)):
        queue.enqueue(task, {"a": 1}, **args)  # type: ignore[arg-type]
    assert job_count(database) == 0


def test_an_unknown_option_is_a_type_error(queue: Queue) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'retries'"):
        queue.enqueue("t", {}, retries=3)  # type: ignore[call-arg]


def test_validation_errors_derive_from_the_library_base(queue: Queue) -> None:
    with pytest.raises(SqliteJobQError):
        queue.enqueue("t", {}, delay=-1)
    with pytest.raises(SqliteJobQError):
        queue.enqueue("t", {1})


def test_enqueue_many_is_one_transaction_and_returns_ids_in_order(queue: Queue) -> None:
    ids = queue.enqueue_many("t", [{"i": i} for i in range(50)], queue="bulk", priority=3)
    assert ids == sorted(ids) and len(set(ids)) == 50
    jobs = [queue.get(i) for i in ids]
    assert [j.payload for j in jobs] == [{"i": i} for i in range(50)]
    assert {(j.queue, j.priority) for j in jobs} == {("bulk", 3)}


def test_enqueue_many_refuses_all_when_one_payload_is_bad(queue: Queue, database: Database) -> None:
    with pytest.raises(PayloadError, match="payload #2"):
        queue.enqueue_many("t", [{"ok": 1}, {"ok": 2}, {"bad": {1}}])
    assert job_count(database) == 0


@pytest.mark.parametrize("payloads", [{"a": 1}, "abc", 5, None])
def test_enqueue_many_needs_a_list(queue: Queue, payloads: object) -> None:
    with pytest.raises(InvalidArgumentType, match="payloads must be a list"):
        queue.enqueue_many("t", payloads)  # type: ignore[arg-type]


def test_enqueue_many_of_nothing_returns_nothing(queue: Queue, database: Database) -> None:
    assert queue.enqueue_many("t", []) == []
    assert job_count(database) == 0


def test_get_of_a_missing_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound, match="no job with id 999"):
        queue.get(999)
    with pytest.raises(LookupError):
        queue.get(999)


# --- unknown task names --------------------------------------------------------------------


def test_a_task_name_the_registry_does_not_know_is_refused_naming_the_closest(
    queue: Queue, registry: Registry, database: Database
) -> None:
    registry.register("square", lambda job: None)
    registry.register("cube", lambda job: None)
    message = (
        r"unknown task 'sqaure': did you mean 'square'\? \(registered: cube, square\)\. "
        r"Nothing was enqueued; .* strict_tasks=False"
    )
    with pytest.raises(UnknownTask, match=message):
        queue.enqueue("sqaure", 3)
    with pytest.raises(UnknownTask, match="unknown task 'sqaure'"):
        queue.enqueue_many("sqaure", [1, 2])
    with pytest.raises(UnknownTask, match="unknown task 'sqaure'"):
        queue.enqueue_batch("sqaure", [1, 2])
    with pytest.raises(UnknownTask, match="unknown task 'sumary'"):
        queue.enqueue_batch("square", [1], then="sumary")
    with pytest.raises(UnknownTask, match=r"unknown task 'zzz' \(registered: cube, square\)"):
        queue.enqueue("zzz")
    assert job_count(database) == 0
    assert queue.get(queue.enqueue("square", 3)).task == "square"


def test_a_registry_without_handlers_checks_no_task_name(queue: Queue, registry: Registry) -> None:
    registry.schedule("nightly", 3600)  # schedules and limits are not handlers
    registry.limit_queue("slow", limit=1)
    assert queue.get(queue.enqueue("anything_at_all")).task == "anything_at_all"


def test_strict_tasks_false_lets_a_producer_enqueue_tasks_others_handle(target: str) -> None:
    registry = Registry()
    registry.register("local", lambda job: None)
    with Queue(target, registry=registry, strict_tasks=False) as producer:
        job = producer.get(producer.enqueue("handled_elsewhere", {"n": 1}))
        assert job.task == "handled_elsewhere" and not producer.strict_tasks
        assert producer.enqueue_batch("handled_elsewhere", [1], then="also_elsewhere").then_id


def test_strict_tasks_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentType, match="strict_tasks must be a bool, got str: 'no'"):
        Queue(tmp_path / "jobs.db", strict_tasks="no")  # type: ignore[arg-type]


# --- claim ---------------------------------------------------------------------------------


def test_claim_takes_the_highest_priority_then_the_oldest(
    clocked_queue: Queue, clock: Clock
) -> None:
    low = clocked_queue.enqueue("t", "low", priority=0)
    clock.advance(1)
    high_late = clocked_queue.enqueue("t", "high-late", priority=5)
    clock.advance(1)
    high_later = clocked_queue.enqueue("t", "high-later", priority=5)
    jobs = clocked_queue.claim("w", limit=3)
    assert [j.id for j in jobs] == [high_late, high_later, low]
    assert all(j.status is JobStatus.PROCESSING and j.attempts == 1 for j in jobs)
    assert all(j.worker == "w" and j.lease_until == clock() + 30.0 for j in jobs)


def test_claim_respects_limit_and_returns_empty_when_nothing_is_due(queue: Queue) -> None:
    queue.enqueue_many("t", list(range(5)))
    assert len(queue.claim("w", limit=2)) == 2
    assert len(queue.claim("w", limit=10)) == 3
    assert queue.claim("w", limit=10) == []


def test_a_delayed_job_is_not_claimed_before_its_time(clocked_queue: Queue, clock: Clock) -> None:
    jid = clocked_queue.enqueue("t", delay=60)
    assert clocked_queue.get(jid).run_at == clock() + 60
    assert clocked_queue.claim("w") == []
    assert clocked_queue.next_run_at() == clock() + 60
    clock.advance(59.9)
    assert clocked_queue.claim("w") == []
    clock.advance(0.1)
    assert [j.id for j in clocked_queue.claim("w")] == [jid]


def test_claim_reads_only_the_named_queues(queue: Queue) -> None:
    a = queue.enqueue("t", queue="a")
    b = queue.enqueue("t", queue="b", priority=9)
    c = queue.enqueue("t", queue="c")
    assert [j.id for j in queue.claim("w", queues=["a"], limit=5)] == [a]
    assert [j.id for j in queue.claim("w", queues=["a", "c", "b"], limit=5)] == [b, c]


def test_claim_from_every_queue_merges_by_priority(queue: Queue) -> None:
    ids = {name: queue.enqueue("t", queue=name, priority=p) for name, p in
           [("x", 1), ("y", 3), ("z", 2)]}  # fmt: skip
    claimed = queue.claim("w", limit=3)
    assert [j.id for j in claimed] == [ids["y"], ids["z"], ids["x"]]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"worker_id": ""}, InvalidArgument, "worker_id"),
        ({"limit": 0}, InvalidArgument, "limit must be >= 1"),
        ({"limit": 10_001}, InvalidArgument, "limit must be <= 10000"),
        ({"lease": 0}, InvalidArgument, "lease must be > 0"),
        ({"queues": []}, InvalidArgument, "queues must not be empty"),
        ({"queues": 5}, InvalidArgumentType, "queues must be a list"),
    ],
)
def test_claim_refuses_bad_arguments(
    queue: Queue, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    args = {"worker_id": "w", **kwargs}
    with pytest.raises(error, match=message):
        queue.claim(**args)  # type: ignore[arg-type]


# --- complete and fail ---------------------------------------------------------------------


def test_complete_stores_the_result_once(queue: Queue) -> None:
    jid = queue.enqueue("t")
    [job] = queue.claim("w")
    assert queue.complete(job, {"rsi": 55.1}) is True
    done = queue.get(jid)
    assert done.status is JobStatus.COMPLETED
    assert done.result == {"rsi": 55.1} and done.progress == 1.0
    assert done.finished_at is not None and done.lease_until is None
    assert queue.complete(job, {"rsi": 0}) is False
    assert queue.get(jid).result == {"rsi": 55.1}


def test_a_result_that_is_not_json_is_refused_and_the_job_stays_processing(queue: Queue) -> None:
    jid = queue.enqueue("t")
    [job] = queue.claim("w")
    with pytest.raises(PayloadError, match="result must be JSON-serializable"):
        queue.complete(job, object())
    assert queue.get(jid).status is JobStatus.PROCESSING


def test_complete_needs_a_claimed_job(queue: Queue) -> None:
    jid = queue.enqueue("t")
    with pytest.raises(InvalidArgument, match="was not claimed by this process"):
        queue.complete(queue.get(jid))
    with pytest.raises(InvalidArgumentType, match="expected a claimed Job"):
        queue.complete(jid)  # type: ignore[arg-type]


def test_fail_retries_with_backoff_while_attempts_remain(
    clocked_queue: Queue, clock: Clock
) -> None:
    jid = clocked_queue.enqueue("t", max_attempts=3)
    [job] = clocked_queue.claim("w")
    assert clocked_queue.fail(job, "boom 1") is True
    waiting = clocked_queue.get(jid)
    assert waiting.status is JobStatus.QUEUED and waiting.attempts == 1
    assert waiting.error == "boom 1"
    # backoff 1 s x 2**0 with jitter over the upper half
    assert clock() + 0.5 <= waiting.run_at <= clock() + 1.0
    assert clocked_queue.claim("w") == []
    clock.advance(1.0)
    [job] = clocked_queue.claim("w")
    assert job.attempts == 2
    clocked_queue.fail(job, "boom 2")
    assert clock() + 1.0 <= clocked_queue.get(jid).run_at <= clock() + 2.0
    clock.advance(2.0)
    [job] = clocked_queue.claim("w")
    assert job.attempts == 3
    clocked_queue.fail(job, "boom 3", traceback="Traceback: line 1")
    failed = clocked_queue.get(jid)
    assert failed.status is JobStatus.FAILED and failed.attempts == 3
    assert failed.error == "boom 3" and failed.traceback == "Traceback: line 1"
    assert failed.finished_at == clock()


def test_fail_with_an_exception_keeps_its_type_and_traceback(queue: Queue) -> None:
    jid = queue.enqueue("t", max_attempts=1)
    [job] = queue.claim("w")
    try:
        raise KeyError("close")
    except KeyError as exc:
        queue.fail(job, exc)
    failed = queue.get(jid)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "KeyError: 'close'"
    assert failed.traceback is not None and "raise KeyError" in failed.traceback


def test_fail_without_retry_is_final(queue: Queue) -> None:
    jid = queue.enqueue("t", max_attempts=5)
    [job] = queue.claim("w")
    queue.fail(job, "permanent", retry=False)
    assert queue.get(jid).status is JobStatus.FAILED


def test_fail_with_retry_in_sets_the_next_run(clocked_queue: Queue, clock: Clock) -> None:
    jid = clocked_queue.enqueue("t")
    [job] = clocked_queue.claim("w")
    clocked_queue.fail(job, "rate limited", retry_in=42)
    assert clocked_queue.get(jid).run_at == clock() + 42


def test_backoff_grows_exponentially_and_is_capped(target: str) -> None:
    registry = Registry()
    registry.register("capped", lambda job: None)
    with Queue(target, registry=registry, retry_backoff=2.0, retry_backoff_max=10.0) as q:
        for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (50, 10.0)]:
            for _ in range(20):
                assert ceiling / 2 <= q.backoff("capped", attempt) <= ceiling


def test_task_options_override_the_queue_defaults(target: str) -> None:
    registry = Registry()

    @registry.task("report", max_attempts=7, queue="reports", priority=4, backoff=0.5)
    def report(job: Job) -> None:
        return None

    with Queue(target, registry=registry, retry_backoff=100.0) as q:
        job = q.get(q.enqueue("report", {}))
        assert (job.max_attempts, job.queue, job.priority) == (7, "reports", 4)
        assert q.backoff("report", 1) <= 0.5
        explicit = q.get(q.enqueue("report", {}, max_attempts=2, queue="other", priority=0))
        assert (explicit.max_attempts, explicit.queue, explicit.priority) == (2, "other", 0)


def test_complete_many_records_each_and_reports_lost_claims(
    clocked_queue: Queue, clock: Clock
) -> None:
    clocked_queue.enqueue_many("t", [1, 2, 3])
    jobs = clocked_queue.claim("w", limit=3, lease=5)
    clock.advance(6)
    # job 1's lease expired and another worker took it over
    assert clocked_queue.rescue_expired() == [j.id for j in jobs]
    clock.advance(1)  # the retry backoff after a lost run (1 s at most for a first attempt)
    [taken] = clocked_queue.claim("other", limit=1)
    assert clocked_queue.complete_many([(j, j.payload) for j in jobs]) == [False, False, False]
    assert clocked_queue.get(taken.id).status is JobStatus.PROCESSING
    assert clocked_queue.complete(taken, "mine") is True
    assert clocked_queue.get(taken.id).result == "mine"


# --- leases, heartbeats, progress ------------------------------------------------------------


def test_an_expired_lease_is_rescued_and_the_old_claim_is_fenced(
    clocked_queue: Queue, clock: Clock
) -> None:
    jid = clocked_queue.enqueue("t", max_attempts=3)
    [first] = clocked_queue.claim("w1", lease=10)
    clock.advance(9)
    assert clocked_queue.rescue_expired() == []
    clock.advance(2)
    assert clocked_queue.rescue_expired() == [jid]
    rescued = clocked_queue.get(jid)
    assert rescued.status is JobStatus.QUEUED and rescued.attempts == 1
    assert rescued.error is not None and "lease expired" in rescued.error
    assert clock() < rescued.run_at <= clock() + 1  # after the backoff, not at once
    assert clocked_queue.claim("w2", lease=10) == []
    clock.advance(1)
    [second] = clocked_queue.claim("w2", lease=10)
    assert second.attempts == 2
    # the first worker wakes up: nothing it does changes the job
    assert clocked_queue.heartbeat(first) is False
    assert first.set_progress(0.5) is False
    assert clocked_queue.complete(first, "stale") is False
    assert clocked_queue.fail(first, "stale") is False
    assert clocked_queue.complete(second, "fresh") is True
    assert clocked_queue.get(jid).result == "fresh"


def test_a_lease_expiring_on_the_last_attempt_fails_the_job(
    clocked_queue: Queue, clock: Clock
) -> None:
    jid = clocked_queue.enqueue("t", max_attempts=1)
    clocked_queue.claim("w", lease=1)
    clock.advance(2)
    assert clocked_queue.rescue_expired() == [jid]
    job = clocked_queue.get(jid)
    assert job.status is JobStatus.FAILED and "lease expired" in (job.error or "")


def test_a_late_completion_before_rescue_still_counts(clocked_queue: Queue, clock: Clock) -> None:
    jid = clocked_queue.enqueue("t")
    [job] = clocked_queue.claim("w", lease=1)
    clock.advance(5)
    assert clocked_queue.complete(job, 1) is True
    assert clocked_queue.rescue_expired() == []
    assert clocked_queue.get(jid).status is JobStatus.COMPLETED


def test_heartbeat_extends_the_lease(clocked_queue: Queue, clock: Clock) -> None:
    jid = clocked_queue.enqueue("t")
    [job] = clocked_queue.claim("w", lease=10)
    clock.advance(8)
    assert job.heartbeat() is True
    assert clocked_queue.get(jid).lease_until == clock() + 10
    clock.advance(8)
    assert clocked_queue.rescue_expired() == []
    assert clocked_queue.heartbeat(job, lease=100) is True
    assert clocked_queue.get(jid).lease_until == clock() + 100


def test_set_progress_is_stored_rate_limited_and_extends_the_lease(
    clocked_queue: Queue, clock: Clock
) -> None:
    jid = clocked_queue.enqueue("t")
    [job] = clocked_queue.claim("w", lease=10)
    clock.advance(5)
    assert job.set_progress(0.25, "fetched prices") is True
    stored = clocked_queue.get(jid)
    assert (stored.progress, stored.progress_message) == (0.25, "fetched prices")
    assert stored.lease_until == clock() + 10
    # within the rate limit: held back, then written by the next heartbeat
    assert job.set_progress(0.5, "indicators") is True
    assert clocked_queue.get(jid).progress == 0.25
    assert job.heartbeat() is True
    stored = clocked_queue.get(jid)
    assert (stored.progress, stored.progress_message) == (0.5, "indicators")


def test_a_held_back_progress_message_is_written_with_the_completion(queue: Queue) -> None:
    jid = queue.enqueue("t")
    [job] = queue.claim("w")
    job.set_progress(0.1, "first")
    job.set_progress(0.9, "almost done")
    queue.complete(job, None)
    done = queue.get(jid)
    assert (done.progress, done.progress_message) == (1.0, "almost done")


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan])
def test_progress_outside_zero_to_one_is_refused(queue: Queue, value: float) -> None:
    queue.enqueue("t")
    [job] = queue.claim("w")
    with pytest.raises(InvalidArgument, match=r"progress must be between 0\.0 and 1\.0"):
        job.set_progress(value)


def test_progress_of_an_unclaimed_job_is_refused(queue: Queue) -> None:
    job = queue.get(queue.enqueue("t"))
    with pytest.raises(RuntimeError, match="not claimed"):
        job.set_progress(0.5)


def test_heartbeat_many_renews_every_running_job(clocked_queue: Queue, clock: Clock) -> None:
    clocked_queue.enqueue_many("t", [1, 2])
    jobs = clocked_queue.claim("w", limit=2, lease=10)
    clock.advance(9)
    assert clocked_queue.heartbeat_many(jobs) == [True, True]
    clock.advance(9)
    assert clocked_queue.rescue_expired() == []


def test_release_returns_unstarted_jobs_without_counting_the_attempt(queue: Queue) -> None:
    jid = queue.enqueue("t")
    jobs = queue.claim("w")
    assert queue.release(jobs) == 1
    job = queue.get(jid)
    assert job.status is JobStatus.QUEUED and job.attempts == 0
    assert queue.release(jobs) == 0


def test_abandon_counts_the_attempt(queue: Queue) -> None:
    first, last = queue.enqueue("t", max_attempts=2), queue.enqueue("t", max_attempts=1)
    jobs = queue.claim("w", limit=2)
    assert queue.abandon(jobs, "worker stopped") == [True, True]
    assert queue.get(first).status is JobStatus.QUEUED
    assert queue.get(last).status is JobStatus.FAILED
    assert queue.get(last).error == "worker stopped"


# --- cancel and retry --------------------------------------------------------------------


def test_cancel_a_queued_job(queue: Queue) -> None:
    jid = queue.enqueue("t")
    assert queue.cancel(jid) is True
    job = queue.get(jid)
    assert job.status is JobStatus.CANCELLED and job.finished_at is not None
    assert queue.claim("w") == []
    assert queue.cancel(jid) is False


def test_cancel_a_processing_job_is_seen_by_its_handler_and_ends_cancelled(queue: Queue) -> None:
    jid = queue.enqueue("t")
    [job] = queue.claim("w")
    assert job.cancelled is False
    assert queue.cancel(jid) is True
    assert queue.get(jid).status is JobStatus.PROCESSING
    assert queue.get(jid).cancel_requested is True
    assert job.heartbeat() is True
    assert job.cancelled is True
    assert queue.complete(job, "partial") is True
    assert queue.get(jid).status is JobStatus.CANCELLED


def test_a_cancelled_processing_job_that_fails_is_cancelled_not_retried(queue: Queue) -> None:
    jid = queue.enqueue("t", max_attempts=5)
    [job] = queue.claim("w")
    queue.cancel(jid)
    queue.fail(job, "stopped on request")
    assert queue.get(jid).status is JobStatus.CANCELLED


def test_cancel_of_a_finished_job_returns_false_and_of_a_missing_one_raises(queue: Queue) -> None:
    jid = queue.enqueue("t")
    [job] = queue.claim("w")
    queue.complete(job)
    assert queue.cancel(jid) is False
    assert queue.get(jid).status is JobStatus.COMPLETED
    with pytest.raises(JobNotFound):
        queue.cancel(12345)


def test_retry_requeues_a_failed_job_with_fresh_attempts_and_keeps_the_error(queue: Queue) -> None:
    jid = queue.enqueue("t", max_attempts=1)
    [job] = queue.claim("w")
    queue.fail(job, "broken")
    assert queue.retry(jid) is True
    again = queue.get(jid)
    assert again.status is JobStatus.QUEUED and again.attempts == 0
    assert again.error == "broken" and again.finished_at is None
    [job] = queue.claim("w")
    queue.complete(job, "ok")
    assert queue.get(jid).error is None


def test_retry_requeues_a_cancelled_job(queue: Queue) -> None:
    jid = queue.enqueue("t")
    queue.cancel(jid)
    assert queue.retry(jid) is True
    assert queue.get(jid).status is JobStatus.QUEUED


def test_retry_of_a_queued_or_completed_job_returns_false(queue: Queue) -> None:
    jid = queue.enqueue("t")
    assert queue.retry(jid) is False
    [job] = queue.claim("w")
    queue.complete(job)
    assert queue.retry(jid) is False
    with pytest.raises(JobNotFound):
        queue.retry(999)


def test_retry_failed_requeues_every_failed_job(queue: Queue) -> None:
    queue.enqueue_many("t", [1, 2, 3], max_attempts=1)
    jobs = queue.claim("w", limit=3)
    queue.fail(jobs[0], "x")
    queue.fail(jobs[1], "y")
    queue.complete(jobs[2])
    assert sorted(queue.retry_failed()) == sorted([jobs[0].id, jobs[1].id])
    assert queue.stats().total("queued") == 2


# --- unique keys ---------------------------------------------------------------------------


def test_a_unique_key_held_by_an_active_job_returns_the_existing_id(queue: Queue) -> None:
    first = queue.enqueue("t", {"v": 1}, unique_key="report:2026-11")
    assert queue.enqueue("t", {"v": 2}, unique_key="report:2026-11") == first
    assert queue.get(first).payload == {"v": 1}
    [job] = queue.claim("w")
    assert queue.enqueue("t", {"v": 3}, unique_key="report:2026-11") == first
    queue.complete(job)
    second = queue.enqueue("t", {"v": 4}, unique_key="report:2026-11")
    assert second != first


def test_enqueue_many_with_a_unique_key_stores_one_job(queue: Queue, database: Database) -> None:
    ids = queue.enqueue_many("t", [1, 2, 3], unique_key="k")
    assert len(set(ids)) == 1 and job_count(database) == 1


def test_retry_refuses_when_the_unique_key_is_taken_again(queue: Queue) -> None:
    old = queue.enqueue("t", unique_key="k", max_attempts=1)
    [job] = queue.claim("w")
    queue.fail(job, "x")
    newer = queue.enqueue("t", unique_key="k")
    assert newer != old
    with pytest.raises(DuplicateJob, match=f"job {old} cannot be retried"):
        queue.retry(old)
    assert queue.get(old).status is JobStatus.FAILED


# --- batches -------------------------------------------------------------------------------


def test_batch_progress_counts_every_state_and_the_percentage(queue: Queue) -> None:
    batch = queue.enqueue_batch("t", [{"i": i} for i in range(40)], name="all stocks")
    assert len(batch.job_ids) == 40
    progress = queue.batch_progress(batch.id)
    assert (progress.total, progress.queued, progress.percent) == (40, 40, 0.0)
    assert progress.name == "all stocks"
    jobs = queue.claim("w", limit=14)
    queue.complete_many([(j, None) for j in jobs[:10]])
    queue.fail(jobs[10], "x", retry=False)
    queue.cancel(jobs[11].id)
    queue.cancel(queue.batch_jobs(batch.id)[-1].id)
    progress = queue.batch_progress(batch.id)
    assert progress.completed == 10 and progress.failed == 1 and progress.cancelled == 1
    assert progress.processing == 3  # jobs 12, 13, 14; job 12 is only marked for cancel
    assert progress.queued == 25
    assert progress.finished == 12 and progress.percent == 30.0
    assert str(progress) == "12/40, 30%"
    assert not progress.done


def test_batch_counts_match_the_jobs_through_retries_and_rescue(
    clocked_queue: Queue, clock: Clock
) -> None:
    batch = clocked_queue.enqueue_batch("t", list(range(6)), max_attempts=2)
    jobs = clocked_queue.claim("w", limit=6, lease=5)
    clocked_queue.fail(jobs[0], "x")
    clocked_queue.release(jobs[1:2])
    clock.advance(10)
    clocked_queue.rescue_expired()
    progress = clocked_queue.batch_progress(batch.id)
    statuses = [j.status.value for j in clocked_queue.batch_jobs(batch.id)]
    for status in JobStatus:
        assert getattr(progress, status.value) == statuses.count(status.value)


def test_batch_jobs_latest_batch_and_unknown_batch(queue: Queue) -> None:
    assert queue.latest_batch_id() is None
    first = queue.enqueue_batch("t", [1])
    second = queue.enqueue_batch("t", [2, 3])
    assert queue.latest_batch_id() == second.id
    assert [j.id for j in queue.batch_jobs(first.id)] == first.job_ids
    with pytest.raises(JobNotFound, match="no batch with id 999"):
        queue.batch_progress(999)


def test_an_empty_batch_is_complete(queue: Queue) -> None:
    batch = queue.enqueue_batch("t", [])
    progress = queue.batch_progress(batch.id)
    assert progress.total == 0 and progress.percent == 100.0 and progress.done


# --- stats, listing, purge ---------------------------------------------------------------


def test_stats_counts_by_queue_and_status_and_the_backlog_age(
    clocked_queue: Queue, clock: Clock
) -> None:
    clocked_queue.enqueue_many("t", [1, 2, 3], queue="a")
    clocked_queue.enqueue("t", queue="b", delay=100)
    clock.advance(30)
    [job] = clocked_queue.claim("w", queues=["a"])
    clocked_queue.complete(job)
    stats = clocked_queue.stats()
    assert stats.counts["a"] == {"queued": 2, "processing": 0, "completed": 1, "failed": 0,
                                 "cancelled": 0, "waiting": 0}  # fmt: skip
    assert stats.counts["b"]["queued"] == 1
    assert stats.by_status["queued"] == 3 and stats.total() == 4
    assert stats.oldest_queued_age == pytest.approx(30.0)
    assert stats.next_run_at == pytest.approx(clock() - 30.0)
    assert stats.lock.writes > 0 and stats.lock.busy_errors == 0


def test_jobs_lists_with_filters(queue: Queue) -> None:
    a = queue.enqueue_many("t1", [1, 2], queue="a")
    b = queue.enqueue("t2", queue="b")
    batch = queue.enqueue_batch("t1", [3])
    assert [j.id for j in queue.jobs()] == [*batch.job_ids, b, *reversed(a)]
    assert [j.id for j in queue.jobs(queue="a", oldest_first=True)] == a
    assert [j.id for j in queue.jobs(task="t2")] == [b]
    assert [j.id for j in queue.jobs(batch_id=batch.id)] == batch.job_ids
    assert len(queue.jobs(limit=2)) == 2
    assert queue.jobs(status="failed") == []
    with pytest.raises(InvalidArgument, match="status must be one of"):
        queue.jobs(status="stuck")


def test_purge_deletes_only_old_finished_jobs(clocked_queue: Queue, clock: Clock) -> None:
    done, _failed, waiting = (clocked_queue.enqueue("t", max_attempts=1) for _ in range(3))
    jobs = clocked_queue.claim("w", limit=2)
    clocked_queue.complete(jobs[0])
    clocked_queue.fail(jobs[1], "x")
    clock.advance(100)
    recent = clocked_queue.enqueue("t")
    [job] = clocked_queue.claim("w", limit=1)
    assert job.id == waiting
    clocked_queue.complete(job)  # finished just now: kept
    assert clocked_queue.purge(older_than=50) == 2
    assert {j.id for j in clocked_queue.jobs()} == {waiting, recent}
    with pytest.raises(JobNotFound):
        clocked_queue.get(done)
    with pytest.raises(InvalidArgument):
        clocked_queue.purge(older_than=-1)


# --- transactional enqueue -----------------------------------------------------------------


def test_enqueue_with_a_connection_commits_with_the_callers_transaction(
    queue: Queue, database: Database
) -> None:
    database.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    conn = database.connect()
    conn.execute(database.begin)
    conn.execute("INSERT INTO orders (id, item) VALUES (1, 'book')")
    jid = queue.enqueue("send_receipt", {"order": 1}, connection=conn)
    with pytest.raises(JobNotFound):  # not visible to others before the caller commits
        queue.get(jid)
    assert queue.stats().total() == 0
    conn.execute("COMMIT")
    assert [j.id for j in queue.claim("w")] == [jid]
    assert database.rows("SELECT item FROM orders") == [("book",)]
    conn.close()


def test_enqueue_with_a_connection_rolls_back_with_the_caller(
    queue: Queue, database: Database
) -> None:
    database.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
    conn = database.connect(autocommit=False)  # the driver's implicit transactions
    conn.execute("INSERT INTO orders (id) VALUES (1)")
    queue.enqueue_batch("t", [1, 2], connection=conn)
    conn.rollback()
    assert job_count(database) == 0
    assert database.rows("SELECT count(*) FROM orders") == [(0,)]
    assert database.rows("SELECT count(*) FROM sqlitejobq_batches") == [(0,)]
    assert queue.stats().total() == 0
    conn.close()


def test_enqueue_with_a_connection_refuses_autocommit_and_other_databases(
    queue: Queue, database: Database, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    auto = database.connect()
    with pytest.raises(SqliteJobQError, match="autocommit mode with no open transaction"):
        queue.enqueue("t", connection=auto)
    if database.engine == "sqlite":
        other = Database("sqlite", str(tmp_path / "other.db")).connect(autocommit=False)
    else:
        import psycopg

        server = request.getfixturevalue("pg_server")
        other = psycopg.connect(server.dsn.rsplit("/", 1)[0] + "/postgres")
    with pytest.raises(SqliteJobQError, match="not on the queue's database"):
        queue.enqueue("t", connection=other)
    assert job_count(database) == 0
    auto.close()
    other.close()


# --- lifecycle -------------------------------------------------------------------------------


def test_a_closed_queue_refuses_work_and_close_is_idempotent(target: str) -> None:
    q = Queue(target)
    q.enqueue("t")
    q.close()
    q.close()
    with pytest.raises(QueueClosed):
        q.enqueue("t")
    with Queue(target) as again:
        assert again.stats().total() == 1


def test_reopening_keeps_every_job(target: str) -> None:
    with Queue(target) as q:
        ids = q.enqueue_many("t", list(range(10)))
    with Queue(target) as q:
        assert [q.get(i).payload for i in ids] == list(range(10))


def test_bad_queue_settings_are_refused(target: str) -> None:
    with pytest.raises(InvalidArgument, match="retry_timeout must be > 0"):
        Queue(target, retry_timeout=0)
    with pytest.raises(InvalidArgument, match="max_attempts must be >= 1"):
        Queue(target, max_attempts=0)
    with pytest.raises(InvalidArgument, match=r"unknown option\(s\) for the .* engine: colour"):
        Queue(target, colour="blue")
    with pytest.raises(
        InvalidArgumentType, match="target must be a SQLite file path or a postgresql"
    ):
        Queue(42)  # type: ignore[arg-type]


def test_the_stored_payload_is_plain_json_text(queue: Queue, database: Database) -> None:
    jid = queue.enqueue("t", {"symbol": "INFY.NS", "n": 3})
    [(text,)] = database.rows("SELECT payload FROM sqlitejobq_jobs WHERE id = ?", (jid,))
    assert json.loads(str(text)) == {"symbol": "INFY.NS", "n": 3}


def test_queue_task_registers_on_its_registry(target: str) -> None:
    with Queue(target) as q:

        @q.task("hello", max_attempts=2)
        def hello(job: Job) -> str:
            return "hi"

        assert "hello" in q.registry
        assert q.registry.get("hello").options.max_attempts == 2
        assert q.get(q.enqueue("hello")).max_attempts == 2


def test_queue_task_works_bare_too(target: str) -> None:
    with Queue(target) as q:

        @q.task
        def tidy_up(job: Job) -> None:
            return None

        assert "tidy_up" in q.registry and q.registry.get("tidy_up").handler is tidy_up.func


def test_an_id_beyond_64_bits_is_refused_naming_the_upper_bound(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match=r"job_id must be <= 9223372036854775807"):
        queue.get(2**63)
    with pytest.raises(InvalidArgument, match=r"<= 9223372036854775807"):
        queue.cancel(2**63)
