"""A job's history and timeline, throughput per minute, cursor pages, batches, dependencies
and filtered retries, on every engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sqlitejobq import (
    AsyncQueue,
    DatabaseBusy,
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobEvent,
    JobNotFound,
    JobStatus,
    Queue,
    Registry,
    ThroughputPoint,
    Worker,
)
from sqlitejobq import queue as queue_module
from sqlitejobq.backends.base import THROUGHPUT_KEPT, WorkerRecord
from sqlitejobq.migrations import applied_migrations, migrate

from .conftest import Clock, Database

pytestmark = pytest.mark.timeout(120)


def steps(events: list[JobEvent]) -> list[tuple[str, int | None, str | None]]:
    return [(e.event, e.attempt, e.worker) for e in events]


# --- the timeline ----------------------------------------------------------------------------


def test_a_job_that_fails_twice_then_succeeds_tells_every_attempt_in_order(target: str) -> None:
    registry = Registry()

    @registry.task("flaky", max_attempts=3)
    def flaky(job: Job) -> str:
        if job.attempts < 3:
            raise RuntimeError(f"refused on attempt {job.attempts}")
        return "ok"

    with Queue(target, registry=registry, retry_backoff=0.0) as queue:
        jid = queue.enqueue("flaky", {"n": 1})
        summary = Worker(queue, concurrency=1, worker_id="w-one").run(burst=True)
        assert (summary.completed, summary.retried) == (1, 2)
        job = queue.get(jid)
        events = queue.timeline(jid)

    assert steps(events) == [
        ("enqueued", None, None),
        ("started", 1, "w-one"),
        ("attempt failed", 1, "w-one"),
        ("started", 2, "w-one"),
        ("attempt failed", 2, "w-one"),
        ("started", 3, "w-one"),
        ("completed", 3, "w-one"),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)
    first, second = events[2], events[4]
    assert first.error == "RuntimeError: refused on attempt 1"
    assert second.error == "RuntimeError: refused on attempt 2"
    assert first.traceback is not None and "refused on attempt 1" in first.traceback
    assert "in flaky" in first.traceback
    assert (first.outcome, second.outcome, events[-1].outcome) == ("queued", "queued", "completed")
    assert events[0].at == job.created_at
    assert events[-1].at == job.finished_at and events[-2].at == job.started_at
    assert events[-1].error is None and job.error is None  # the success cleared the columns
    assert all(isinstance(e.as_dict()["at"], float) for e in events)
    assert json.dumps([e.as_dict() for e in events])


def test_the_hot_path_writes_no_history(queue: Queue, database: Database) -> None:
    jid = queue.enqueue("t", {"n": 1})
    [job] = queue.claim("w")
    queue.heartbeat(job)
    queue.set_progress(job, 0.5, "half")
    queue.complete(job, {"done": True})
    assert database.value("SELECT history FROM sqlitejobq_jobs WHERE id = ?", (jid,)) is None
    assert steps(queue.timeline(jid)) == [("enqueued", None, None), ("started", 1, "w"),
                                          ("completed", 1, "w")]  # fmt: skip


def test_an_expired_lease_is_told_with_the_worker_that_lost_it(
    clocked_queue: Queue, clock: Clock
) -> None:
    queue = clocked_queue
    jid = queue.enqueue("t", max_attempts=2)
    clock.advance(1)
    queue.claim("w-dead", lease=10.0)
    clock.advance(30)
    assert queue.rescue_expired() == [jid]
    clock.advance(1)
    [job] = queue.claim("w-alive")
    clock.advance(1)
    queue.complete(job)
    events = queue.timeline(jid)
    assert steps(events) == [
        ("enqueued", None, None),
        ("started", 1, "w-dead"),
        ("lease expired", 1, "w-dead"),
        ("started", 2, "w-alive"),
        ("completed", 2, "w-alive"),
    ]
    expired = events[2]
    assert expired.at == clock.now - 2 and expired.outcome == "queued"
    assert expired.error is not None and expired.error.startswith("lease expired")
    assert events[1].at == clock.now - 32  # the lost attempt's own start


def test_a_lease_that_expires_on_the_last_attempt_ends_the_job_once(
    clocked_queue: Queue, clock: Clock
) -> None:
    jid = clocked_queue.enqueue("t", max_attempts=1)
    clocked_queue.claim("w", lease=5.0)
    clock.advance(10)
    clocked_queue.rescue_expired()
    assert clocked_queue.get(jid).status is JobStatus.FAILED
    events = clocked_queue.timeline(jid)
    assert steps(events)[-1] == ("lease expired", 1, "w")
    assert events[-1].outcome == "failed"
    assert "failed" not in [e.event for e in events]  # the end is told once


def test_an_abandoned_run_keeps_the_reason(clocked_queue: Queue, clock: Clock) -> None:
    jid = clocked_queue.enqueue("t")
    [job] = clocked_queue.claim("w")
    clock.advance(3)
    clocked_queue.abandon([job], "interrupted: the worker stopped at once")
    [*_, abandoned] = clocked_queue.timeline(jid)
    assert (abandoned.event, abandoned.attempt, abandoned.worker) == ("abandoned", 1, "w")
    assert abandoned.error == "interrupted: the worker stopped at once"
    assert abandoned.outcome == "queued"


def test_cancel_requests_and_operator_retries_are_told(clocked_queue: Queue, clock: Clock) -> None:
    queue = clocked_queue
    jid = queue.enqueue("t", max_attempts=2)
    clock.advance(1)
    assert queue.cancel(jid) is True
    clock.advance(1)
    assert queue.retry(jid) is True
    clock.advance(1)
    [job] = queue.claim("w")
    clock.advance(1)
    queue.fail(job, "ValueError: bad input", traceback="Traceback ...", retry=False)
    clock.advance(1)
    assert queue.retry(jid) is True
    clock.advance(1)
    [job] = queue.claim("w2")
    clock.advance(1)
    assert queue.cancel(jid) is True
    assert queue.cancel(jid) is True  # asked again: told once
    clock.advance(1)
    queue.complete(job)
    events = queue.timeline(jid)
    assert [(e.event, e.attempt, e.worker, e.outcome) for e in events] == [
        ("enqueued", None, None, None),
        ("cancel requested", None, None, "cancelled"),
        ("retried", 0, None, "queued"),
        ("started", 1, "w", None),
        ("attempt failed", 1, "w", "failed"),
        ("retried", 1, None, "queued"),
        ("started", 1, "w2", None),
        ("cancel requested", 1, "w2", "processing"),
        ("cancelled", 1, "w2", "cancelled"),
    ]
    failed = events[4]
    assert (failed.error, failed.traceback) == ("ValueError: bad input", "Traceback ...")
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_a_job_failed_for_good_ends_with_its_failure_not_twice(queue: Queue) -> None:
    jid = queue.enqueue("t", max_attempts=1)
    [job] = queue.claim("w")
    queue.fail(job, RuntimeError("no luck"))
    events = queue.timeline(jid)
    assert steps(events) == [("enqueued", None, None), ("started", 1, "w"),
                             ("attempt failed", 1, "w")]  # fmt: skip
    assert events[-1].outcome == "failed" and events[-1].error == "RuntimeError: no luck"
    assert queue.get(jid).error == "RuntimeError: no luck"  # the columns keep it too


def test_a_job_cancelled_by_its_dependency_ends_with_the_reason(queue: Queue) -> None:
    first = queue.enqueue("t", max_attempts=1)
    then = queue.enqueue("t", depends_on=[first])
    [job] = queue.claim("w")
    queue.fail(job, "broken")
    [*_, end] = queue.timeline(then)
    assert (end.event, end.outcome) == ("cancelled", "cancelled")
    assert end.error is not None and f"dependency {first}" in end.error


def test_a_task_no_worker_knows_is_told_when_first_handed_back_and_when_it_gives_up(
    clocked_queue: Queue, clock: Clock
) -> None:
    queue = clocked_queue
    jid = queue.enqueue("t")
    for _ in range(3):  # handed back three times: the rechecks are not told
        [job] = queue.claim("old-worker")
        queue.lifecycle.finish([(job, queue.lifecycle.defer_step(job, "old-worker", 60.0))])
        clock.advance(20)
    [job] = queue.claim("old-worker")  # 60 seconds since the first: it gives up
    queue.lifecycle.finish([(job, queue.lifecycle.defer_step(job, "old-worker", 60.0))])
    assert queue.get(jid).status is JobStatus.FAILED
    events = queue.timeline(jid)
    assert [(e.event, e.outcome) for e in events] == [
        ("enqueued", None), ("deferred", "queued"), ("deferred", "failed"),
    ]  # fmt: skip
    assert events[1].worker == "old-worker" and "waiting up to 60s" in (events[1].error or "")
    assert "no worker that knows" in (events[2].error or "")


def test_a_running_job_shows_its_current_attempt(queue: Queue) -> None:
    jid = queue.enqueue("t")
    [job] = queue.claim("w")
    assert steps(queue.timeline(jid)) == [("enqueued", None, None), ("started", 1, "w")]
    queue.release([job])
    assert steps(queue.timeline(jid)) == [("enqueued", None, None)]


def test_timeline_of_an_unknown_job_or_a_bad_id_is_refused(queue: Queue) -> None:
    with pytest.raises(JobNotFound, match="no job with id 999"):
        queue.timeline(999)
    with pytest.raises(InvalidArgumentType, match="job_id must be an int"):
        queue.timeline("1")  # type: ignore[arg-type]


# --- migrating a database of the previous version ------------------------------------------

_OLD_JOBS = [
    # status, attempts, started, finished, error, worker, lease_until
    ("queued", 0, None, None, None, None, None),
    ("queued", 1, 10.0, None, "RuntimeError: first try", "w", None),
    ("processing", 1, 10.0, None, None, "w", 1e12),
    ("completed", 1, 10.0, 11.0, None, "w", None),
    ("failed", 3, 10.0, 11.0, "RuntimeError: gave up", "w", None),
    ("cancelled", 0, None, 11.0, None, None, None),
    ("waiting", 0, None, None, None, None, None),
]


def test_a_database_of_the_previous_version_upgrades_in_place(
    engine: str, target: str, database: Database
) -> None:
    if engine == "sqlite":
        from sqlitejobq.backends.sqlite import schema
    else:
        from sqlitejobq.backends.postgres import schema
    # the schema before job history (and everything added since) came
    old = schema.MIGRATIONS[
        : next(i for i, m in enumerate(schema.MIGRATIONS) if "history" in m.name)
    ]
    assert migrate(target, old, namespace=schema.NAMESPACE) == [m.version for m in old]
    assert "history" not in database.columns("sqlitejobq_jobs")
    for n, (status, attempts, started, finished, error, worker, lease) in enumerate(_OLD_JOBS):
        database.execute(
            "INSERT INTO sqlitejobq_jobs (task, queue, payload, status, run_at, attempts, "
            "created_at, started_at, finished_at, error, worker, lease_until) "
            "VALUES ('t', 'default', ?, ?, 0, ?, 1, ?, ?, ?, ?, ?)",
            (json.dumps({"n": n}), status, attempts, started, finished, error, worker, lease),
        )
    with Queue(target, retry_backoff=0.0) as queue:
        versions = [m.version for m in applied_migrations(target, schema.NAMESPACE)]
        assert versions == [m.version for m in schema.MIGRATIONS]
        assert "history" in database.columns("sqlitejobq_jobs")
        assert database.value("SELECT count(*) FROM sqlitejobq_jobs WHERE history IS NULL") == 7
        jobs = queue.jobs(oldest_first=True)
        assert [(j.payload["n"], j.status.value, j.attempts, j.error) for j in jobs] == [
            (n, s, a, e) for n, (s, a, _, _, e, _, _) in enumerate(_OLD_JOBS)
        ]
        ids = {j.status.value + str(j.attempts): j.id for j in jobs}
        assert steps(queue.timeline(ids["completed1"])) == [
            ("enqueued", None, None), ("started", 1, "w"), ("completed", 1, "w"),
        ]  # fmt: skip
        [*_, failed] = queue.timeline(ids["failed3"])
        assert (failed.event, failed.error) == ("failed", "RuntimeError: gave up")
        assert steps(queue.timeline(ids["queued1"])) == [("enqueued", None, None)]
        assert queue.retry_failed() == [ids["failed3"]]
        assert steps(queue.timeline(ids["failed3"]))[-1] == ("retried", 3, None)
        assert [j.id for j in queue.jobs(status="cancelled")] == [ids["cancelled0"]]


# --- throughput -----------------------------------------------------------------------------


def test_throughput_counts_what_a_worker_completed_and_failed(target: str) -> None:
    registry = Registry()

    @registry.task("ok")
    def ok(job: Job) -> None:
        return None

    @registry.task("broken", max_attempts=2)
    def broken(job: Job) -> None:
        raise RuntimeError("always")

    with Queue(target, registry=registry, retry_backoff=0.0) as queue:
        queue.enqueue_many("ok", list(range(23)))
        queue.enqueue_many("broken", list(range(6)))
        summary = Worker(queue, concurrency=3).run(burst=True)
        assert (summary.completed, summary.failed, summary.retried) == (23, 6, 6)
        points = queue.throughput(60)
        assert len(points) == 60
        assert sum(p.completed for p in points) == 23
        assert sum(p.failed for p in points) == 6
        minutes = [p.minute for p in points]
        assert minutes == [minutes[0] + 60 * n for n in range(60)]
        assert minutes[-1] == 60 * (queue.clock() // 60)
        assert all(p.completed == p.failed == 0 for p in points[:-2])  # the run took < 1 minute
        assert len(queue.throughput(1)) == 1 and len(queue.throughput(10080)) == 10080
        assert isinstance(points[0], ThroughputPoint) and points[0].as_dict()["failed"] == 0


def test_a_report_that_fails_leaves_its_counts_for_the_next_one(
    monkeypatch: pytest.MonkeyPatch, queue: Queue
) -> None:
    worker = Worker(queue, worker_id="w-report")
    worker._register()
    worker._counts.update(completed=5, failed=1)
    written = queue.lifecycle.report_worker

    def refuse(record: WorkerRecord) -> None:
        raise DatabaseBusy("the database stayed busy")

    monkeypatch.setattr(queue.lifecycle, "report_worker", refuse)
    with pytest.raises(DatabaseBusy):
        worker._report()
    monkeypatch.setattr(queue.lifecycle, "report_worker", written)
    worker._counts.update(completed=8, failed=2)
    worker._report()
    worker._report(stopped=True)  # nothing new: adds nothing
    points = queue.throughput(5)
    assert (sum(p.completed for p in points), sum(p.failed for p in points)) == (8, 2)
    [info] = queue.workers()
    assert (info.jobs_completed, info.jobs_failed) == (8, 2)


def test_throughput_keeps_a_week_and_fills_empty_minutes_with_zeros(
    clocked_queue: Queue, clock: Clock, database: Database
) -> None:
    queue = clocked_queue
    backend = queue.backend
    record = WorkerRecord("w", "host", 1, "*", 1, completed_delta=3, failed_delta=1)
    backend.report_worker(record)
    backend.report_worker(WorkerRecord("w2", "host", 2, "*", 1, completed_delta=2))
    clock.advance(180)
    backend.report_worker(WorkerRecord("w", "host", 1, "*", 1))  # no deltas: no row
    points = queue.throughput(4)
    first = 60 * (1_800_000_000 // 60)
    assert points == [
        ThroughputPoint(float(first), 5, 1),
        ThroughputPoint(float(first + 60), 0, 0),
        ThroughputPoint(float(first + 120), 0, 0),
        ThroughputPoint(float(first + 180), 0, 0),
    ]
    assert queue.throughput(3)[0].minute == first + 60
    clock.advance(THROUGHPUT_KEPT)
    backend.report_worker(record)
    assert database.value("SELECT count(*) FROM sqlitejobq_throughput") == 1
    assert sum(p.completed for p in queue.throughput(10080)) == 3


@pytest.mark.parametrize(
    ("minutes", "error", "message"),
    [
        (0, InvalidArgument, "minutes must be >= 1, got 0"),
        (10081, InvalidArgument, r"minutes must be <= 10080 \(a week is kept\), got 10081"),
        ("60", InvalidArgumentType, "minutes must be an int"),
    ],
)
def test_throughput_refuses_bad_spans(
    queue: Queue, minutes: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        queue.throughput(minutes)


# --- cursor pages ---------------------------------------------------------------------------

_ERRORS = ["Disk FULL on /var", "disk full again", "Timeout in state X", "50% done then failed",
           "quota_exceeded", "path C:\\tmp", "5x0 done"]  # fmt: skip


@pytest.fixture
def failures(queue: Queue) -> dict[int, str]:
    """300 jobs: every third failed with one of _ERRORS, the rest completed or queued."""
    ids = queue.enqueue_many("t", list(range(300)), max_attempts=1)
    errors: dict[int, str] = {}
    claimed = {job.id: job for job in queue.claim("w", limit=200)}
    for n, jid in enumerate(ids[:200]):
        if n % 3 == 0:
            errors[jid] = _ERRORS[n % len(_ERRORS)]
            queue.fail(claimed[jid], errors[jid])
        else:
            queue.complete(claimed[jid])
    return errors


def pages(queue: Queue, *, limit: int, **filters: Any) -> list[list[int]]:
    found, cursor = [], None
    while True:
        page = [j.id for j in queue.jobs(limit=limit, before=cursor, **filters)]
        if not page:
            return found
        found.append(page)
        cursor = page[-1]


def test_pages_newest_first_return_every_match_once(queue: Queue, failures: dict[int, str]) -> None:
    full = {jid for jid, text in failures.items() if "disk full" in text.lower()}
    assert len(full) > 10
    found = pages(queue, limit=7, error="DISK full")
    ids = [jid for page in found for jid in page]
    assert ids == sorted(full, reverse=True)
    assert all(len(page) == 7 for page in found[:-1])
    failed = pages(queue, limit=9, status="failed")
    assert [jid for page in failed for jid in page] == sorted(failures, reverse=True)


def test_pages_oldest_first_go_up_from_after(queue: Queue, failures: dict[int, str]) -> None:
    seen: list[int] = []
    cursor = None
    while page := queue.jobs(status="failed", error="done", after=cursor, limit=4,
                             oldest_first=True):  # fmt: skip
        seen += [j.id for j in page]
        cursor = page[-1].id
    assert seen == sorted(jid for jid, text in failures.items() if "done" in text)


def test_the_error_filter_takes_percent_underscore_and_backslash_literally(
    queue: Queue, failures: dict[int, str]
) -> None:
    def matching(text: str) -> list[int]:
        return sorted(j.id for j in queue.jobs(error=text, limit=1000))

    assert matching("50%") == sorted(j for j, e in failures.items() if "50%" in e)
    assert matching("5%0") == []
    assert matching("a_e") == sorted(j for j, e in failures.items() if "a_e" in e)
    assert matching("ota_") != [] and matching("ota%") == []
    assert matching("C:\\tmp") == sorted(j for j, e in failures.items() if "C:\\tmp" in e)
    assert matching("C:\\\\tmp") == []


def test_a_scan_window_bounds_the_ids_a_page_reads(queue: Queue, failures: dict[int, str]) -> None:
    newest = queue.max_job_id()
    assert newest is not None and newest == max(j.id for j in queue.jobs(limit=1))
    window = [j.id for j in queue.jobs(scan=50, limit=1000)]
    assert window == list(range(newest, newest - 50, -1))
    # the last 100 jobs are queued: no failure within the newest 100 ids
    assert queue.jobs(status="failed", scan=100, limit=10) == []
    # walk every window of 40 ids below the newest, newest first
    seen: list[int] = []
    cursor = newest + 1
    while cursor > 1:
        page = [j.id for j in queue.jobs(status="failed", before=cursor, scan=40, limit=5)]
        assert all(cursor - 40 <= jid < cursor for jid in page)
        seen += page
        cursor = page[-1] if len(page) == 5 else cursor - 40
    assert seen == sorted(failures, reverse=True)
    first = min(failures)
    oldest = [j.id for j in queue.jobs(oldest_first=True, scan=10, limit=100)]
    assert oldest == list(range(first, first + 10))


def test_a_batch_lists_its_jobs_newest_first_a_page_at_a_time(queue: Queue) -> None:
    queue.enqueue_many("t", [1, 2])
    batch = queue.enqueue_batch("t", list(range(25)))
    queue.enqueue_many("t", [3, 4])
    found = pages(queue, limit=10, batch_id=batch.id)
    assert [len(page) for page in found] == [10, 10, 5]
    assert [jid for page in found for jid in page] == list(reversed(batch.job_ids))
    assert [j.id for j in queue.jobs(batch_id=batch.id, after=batch.job_ids[19],
                                     oldest_first=True)] == batch.job_ids[20:]  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "error", "message"),
    [
        ({"before": 0}, InvalidArgument, "before must be >= 1, got 0"),
        ({"after": -3}, InvalidArgument, "after must be >= 1, got -3"),
        ({"scan": 0}, InvalidArgument, "scan must be >= 1, got 0"),
        ({"scan": 10**19}, InvalidArgument, "scan must be <= 9223372036854775807 .*, got 1"),
        ({"scan": 10**18 + 1}, InvalidArgument, "scan must be <= 1000000000000000000"),
        ({"before": "9"}, InvalidArgumentType, "before must be an int, got str"),
        ({"after": True}, InvalidArgumentType, "after must be an int, got bool"),
        ({"error": ""}, InvalidArgument, "error must be 1-200 characters, got 0"),
        ({"error": "x" * 201}, InvalidArgument, "error must be 1-200 characters, got 201"),
        ({"error": 5}, InvalidArgumentType, "error must be a str or None, got int"),
    ],
)
def test_jobs_refuses_bad_cursors_and_filters(
    queue: Queue, filters: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        queue.jobs(**filters)


def test_max_job_id_is_none_without_jobs(queue: Queue) -> None:
    assert queue.max_job_id() is None
    assert queue.jobs(scan=10) == []
    jid = queue.enqueue("t")
    assert queue.max_job_id() == jid


# --- batches --------------------------------------------------------------------------------


def test_batches_are_listed_newest_first_a_page_at_a_time(queue: Queue) -> None:
    made = [queue.enqueue_batch("t", [n] * (n + 1), name=f"b{n}") for n in range(7)]
    [job] = queue.claim("w", limit=1)
    queue.complete(job)
    first = queue.batches(limit=3)
    assert [b.batch_id for b in first] == [made[6].id, made[5].id, made[4].id]
    second = queue.batches(limit=3, before=first[-1].batch_id)
    assert [b.name for b in second] == ["b3", "b2", "b1"]
    last = queue.batches(limit=3, before=second[-1].batch_id)
    assert [(b.name, b.total, b.completed, b.queued) for b in last] == [("b0", 1, 1, 0)]
    assert queue.batches(before=made[0].id) == []
    assert [b.batch_id for b in queue.batches()] == [b.id for b in reversed(made)]
    assert queue.batches()[0] == queue.batch_progress(made[6].id)


def test_batches_refuses_bad_arguments(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match="limit must be >= 1, got 0"):
        queue.batches(limit=0)
    with pytest.raises(InvalidArgument, match="before must be >= 1, got 0"):
        queue.batches(before=0)


# --- dependencies ---------------------------------------------------------------------------


def test_dependencies_name_what_a_job_waits_for_and_what_waits_for_it(queue: Queue) -> None:
    a, b = queue.enqueue("t"), queue.enqueue("t")
    c = queue.enqueue("t", depends_on=[b, a])
    d = queue.enqueue("t", depends_on=[c])
    assert queue.dependencies(c) == ([a, b], [d])
    assert queue.dependencies(a) == ([], [c])
    assert queue.dependencies(d) == ([c], [])
    [job] = queue.claim("w")
    assert job.id == a
    queue.complete(job)
    assert queue.dependencies(c) == ([b], [d])
    assert queue.dependencies(a) == ([], [])
    queue.cancel(c)  # cancels d too: nothing waits any more
    assert queue.dependencies(c) == ([], [])
    assert queue.dependencies(b) == ([], [])
    assert queue.get(d).status is JobStatus.CANCELLED
    with pytest.raises(JobNotFound, match="no job with id 999"):
        queue.dependencies(999)


# --- filtered retries -----------------------------------------------------------------------


@pytest.fixture
def failed(queue: Queue) -> dict[str, list[int]]:
    """Failed jobs in queues a and b, of tasks t1 and t2, in a batch or not, two errors;
    one cancelled and one completed job beside them."""
    ids = queue.enqueue_many("t1", list(range(6)), queue="a", max_attempts=1)
    ids += queue.enqueue_many("t2", list(range(4)), queue="b", max_attempts=1)
    batch = queue.enqueue_batch("t2", list(range(5)), queue="a", max_attempts=1)
    ids += batch.job_ids
    others = queue.enqueue_many("t1", [0, 1], queue="a", max_attempts=1)
    claimed = {job.id: job for job in queue.claim("w", limit=100)}
    for n, jid in enumerate(ids):
        queue.fail(claimed[jid], "ConnectionError: reset" if n % 2 else "KeyError: 'price'")
    queue.complete(claimed[others[0]])
    queue.cancel(others[1])
    queue.complete(claimed[others[1]])  # cancel requested: ends cancelled
    return {"all": ids, "batch": batch.job_ids, "a": ids[:6] + batch.job_ids,
            "t2": ids[6:], "reset": ids[1::2]}  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "key"),
    [
        ({"queue": "a"}, "a"),
        ({"task": "t2"}, "t2"),
        ({"batch_id": "batch"}, "batch"),
        ({"error": "connectionerror"}, "reset"),
        ({}, "all"),
    ],
)
def test_retry_failed_retries_exactly_the_matching_failed_jobs(
    queue: Queue, failed: dict[str, list[int]], filters: dict[str, Any], key: str
) -> None:
    if filters.get("batch_id") == "batch":
        filters = {"batch_id": queue.get(failed["batch"][0]).batch_id}
    assert queue.retry_failed(**filters) == failed[key]
    assert sorted(j.id for j in queue.jobs(status="queued", limit=100)) == failed[key]
    left = sorted(set(failed["all"]) - set(failed[key]))
    assert sorted(j.id for j in queue.jobs(status="failed", limit=100)) == left
    assert len(queue.jobs(status="cancelled")) == 1
    assert queue.retry_failed(**filters) == []
    assert steps(queue.timeline(failed[key][0]))[-1] == ("retried", 1, None)


def test_retry_failed_combines_filters_and_pages_in_chunks(
    monkeypatch: pytest.MonkeyPatch, queue: Queue, failed: dict[str, list[int]]
) -> None:
    monkeypatch.setattr(queue_module, "RETRY_CHUNK", 3)
    both = sorted(set(failed["a"]) & set(failed["reset"]))
    assert queue.retry_failed(queue="a", error="RESET") == both
    assert queue.retry_failed() == sorted(set(failed["all"]) - set(both))


def test_retry_failed_leaves_a_job_whose_unique_key_is_held_and_retries_the_rest(
    monkeypatch: pytest.MonkeyPatch, queue: Queue
) -> None:
    monkeypatch.setattr(queue_module, "RETRY_CHUNK", 2)
    ids = [queue.enqueue("t", n, max_attempts=1, unique_key=f"k{n}") for n in range(3)]
    for job in queue.claim("w", limit=3):
        queue.fail(job, "x")
    holder = queue.enqueue("t", "again", unique_key="k0")
    assert holder not in ids
    assert queue.retry_failed() == ids[1:]
    assert queue.get(ids[0]).status is JobStatus.FAILED


def test_retry_failed_refuses_bad_filters(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match="queue must be 1-200 characters"):
        queue.retry_failed(queue="")
    with pytest.raises(InvalidArgumentType, match="batch_id must be an int"):
        queue.retry_failed(batch_id="1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="error must be 1-200 characters, got 0"):
        queue.retry_failed(error="")


# --- the same reads for asyncio -------------------------------------------------------------


def test_async_queue_offers_the_same_reads_and_retries(target: str) -> None:
    async def main() -> None:
        async with AsyncQueue(target, retry_backoff=0.0) as queue:
            first = await queue.enqueue("t", max_attempts=1)
            then = await queue.enqueue("t", depends_on=[first])
            batch = await queue.enqueue_batch("t", [1, 2])
            assert await queue.dependencies(first) == ([], [then])
            assert [b.batch_id for b in await queue.batches(limit=5)] == [batch.id]
            assert await queue.max_job_id() == batch.job_ids[-1]
            [job] = queue.queue.claim("w")
            queue.queue.fail(job, "KeyError: 'x'")
            assert [e.event for e in await queue.timeline(first)][-1] == "attempt failed"
            assert [j.id for j in await queue.jobs(error="keyerror", before=then)] == [first]
            assert len(await queue.throughput(3)) == 3
            assert await queue.retry_failed(error="KeyError") == [first]

    asyncio.run(main())
