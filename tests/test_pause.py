"""Pausing and resuming a named queue, on both engines: claims leave a paused queue out, it
still takes enqueues, running jobs finish, the state is in the database (every Queue, every
process sees it), bad names are refused; idle workers in this process and in worker
processes see a pause and a resume through their wake-up path; the CLI and AsyncQueue."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import pytest

from sqlitejobq import (
    AsyncQueue,
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobStatus,
    Queue,
    Registry,
    Worker,
)
from sqlitejobq.cli import main

from .conftest import Database
from .integration.test_worker_processes import (
    assert_no_lock_errors,
    finish,
    runs,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def statuses(queue: Queue, ids: list[int]) -> list[str]:
    return [queue.get(job_id).status.value for job_id in ids]


# --- the API ------------------------------------------------------------------------------


def test_no_claim_takes_a_paused_queue_s_jobs_until_it_is_resumed(queue: Queue) -> None:
    assert queue.pause("emails") is True
    mail = queue.enqueue("send", {}, queue="emails", priority=10)
    other = queue.enqueue("other", {})
    assert [job.id for job in queue.claim("w", limit=10)] == [other]
    assert queue.claim("w", queues=["emails"], limit=10) == []
    assert queue.claim("w", queues=["emails", "default"], limit=10) == []
    assert queue.resume("emails") is True
    assert [job.id for job in queue.claim("w", queues=["emails"], limit=10)] == [mail]


def test_a_paused_queue_still_takes_enqueues(queue: Queue) -> None:
    queue.pause("emails")
    one = queue.enqueue("send", {"n": 1}, queue="emails")
    many = queue.enqueue_many("send", [{"n": 2}, {"n": 3}], queue="emails")
    batch = queue.enqueue_batch("send", [{"n": 4}], queue="emails")
    ids = [one, *many, *batch.job_ids]
    assert statuses(queue, ids) == ["queued"] * 4
    assert queue.stats().counts["emails"]["queued"] == 4
    assert queue.batch_progress(batch.id).queued == 1


def test_a_job_running_when_its_queue_is_paused_finishes(queue: Queue) -> None:
    first = queue.enqueue("send", {}, queue="emails")
    second = queue.enqueue("send", {}, queue="emails")
    [running] = queue.claim("w", queues=["emails"])
    queue.pause("emails")
    assert running.id == first
    assert queue.heartbeat(running) is True
    assert queue.complete(running, {"sent": True}) is True
    assert queue.get(first).status is JobStatus.COMPLETED
    assert queue.get(second).status is JobStatus.QUEUED
    assert queue.claim("w", queues=["emails"]) == []


def test_a_worker_runs_a_job_to_its_end_after_a_pause(target: str) -> None:
    registry = Registry()
    started, go_on = threading.Event(), threading.Event()

    @registry.task("slow")
    def slow(job: Job) -> str:
        started.set()
        assert go_on.wait(30)
        return "done"

    with Queue(target, registry=registry) as queue:
        first = queue.enqueue("slow", {})
        worker = Worker(queue, concurrency=2)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            assert started.wait(30)
            queue.pause("default")
            second = queue.enqueue("slow", {})
            go_on.set()
            assert queue.wait(first, timeout=30).result == "done"
            time.sleep(0.5)
            assert queue.get(second).status is JobStatus.QUEUED
        finally:
            worker.stop()
            thread.join(30)
        assert not thread.is_alive()


def test_the_pause_is_in_the_database_for_every_queue_object(target: str) -> None:
    with Queue(target) as first, Queue(target) as second:
        first.pause("emails")
        second.enqueue("send", {}, queue="emails")
        assert second.paused() == ["emails"]
        assert second.claim("w", queues=["emails"]) == []
        assert second.resume("emails") is True
        assert first.paused() == []
    with Queue(target) as reopened:
        reopened.pause("b")
        reopened.pause("a")
    with Queue(target) as again:
        assert again.paused() == ["a", "b"]


def test_pause_and_resume_say_whether_they_changed_anything(queue: Queue) -> None:
    assert queue.resume("emails") is False  # never paused
    assert queue.pause("emails") is True
    assert queue.pause("emails") is False
    assert queue.paused() == ["emails"]
    assert queue.resume("emails") is True
    assert queue.resume("emails") is False
    assert queue.paused() == []
    assert queue.pause("emails") is True  # again, after a resume
    assert queue.paused() == ["emails"]


def test_a_queue_no_job_uses_yet_may_be_paused(queue: Queue) -> None:
    assert queue.pause("later") is True
    assert queue.paused() == ["later"]
    stats = queue.stats()
    assert "later" in stats.paused and "later" not in stats.counts
    job_id = queue.enqueue("send", {}, queue="later")
    assert queue.claim("w") == []
    queue.resume("later")
    assert [job.id for job in queue.claim("w")] == [job_id]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", InvalidArgument),
        ("bad name", InvalidArgument),
        ("-leading-symbol", InvalidArgument),
        ("x" * 201, InvalidArgument),
        ("bell\a", InvalidArgument),
        (None, InvalidArgumentType),
        (42, InvalidArgumentType),
        (["emails"], InvalidArgumentType),
    ],
)
def test_a_name_that_is_not_a_queue_name_is_refused_and_nothing_is_stored(
    queue: Queue, database: Database, name: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="queue must be"):
        queue.pause(name)  # type: ignore[arg-type]
    with pytest.raises(error, match="queue must be"):
        queue.resume(name)  # type: ignore[arg-type]
    assert queue.paused() == []
    assert database.value("SELECT count(*) FROM sqlitejobq_queues") == 0
    assert issubclass(error, ValueError | TypeError)


def test_a_paused_queue_s_jobs_are_not_due(queue: Queue) -> None:
    queue.pause("emails")
    queue.enqueue("send", {}, queue="emails")
    assert queue.next_run_at() is None
    assert queue.next_run_at(["emails"]) is None
    stats = queue.stats()
    assert stats.oldest_queued_age is None and stats.next_run_at is None
    assert list(stats.paused) == ["emails"]
    assert abs(stats.paused["emails"] - queue.clock()) < 60
    assert stats.as_dict()["paused"] == stats.paused
    queue.enqueue("other", {}, delay=60)
    assert queue.next_run_at() == queue.next_run_at(["default", "emails"]) is not None
    queue.resume("emails")
    due = queue.next_run_at(["emails"])
    assert due is not None and due <= queue.clock()
    assert queue.stats().paused == {}


def test_a_burst_worker_leaves_a_paused_backlog_and_returns(queue: Queue) -> None:
    queue.registry.task("send")(lambda job: "sent")
    queue.registry.task("other")(lambda job: "done")
    queue.pause("emails")
    held = queue.enqueue_many("send", [{}] * 50, queue="emails")
    other = queue.enqueue("other", {})
    started = time.monotonic()
    summary = Worker(queue, concurrency=2).run(burst=True)
    assert time.monotonic() - started < 20
    assert summary.completed == 1 and queue.get(other).status is JobStatus.COMPLETED
    assert set(statuses(queue, held)) == {"queued"}
    queue.resume("emails")
    assert Worker(queue, concurrency=2).run(burst=True).completed == 50


def test_limited_jobs_of_a_paused_queue_wait_too(target: str) -> None:
    registry = Registry()
    registry.task("limited", limit=1)(lambda job: "ok")
    registry.task("plain")(lambda job: "ok")
    registry.limit_queue("held", limit=2)
    with Queue(target, registry=registry) as queue:
        queue.pause("emails")
        queue.pause("held")
        by_task = queue.enqueue_many("limited", [{}] * 3, queue="emails")
        by_queue = queue.enqueue_many("plain", [{}] * 3, queue="held")
        free = queue.enqueue("limited", {}, queue="default")
        assert Worker(queue).run(burst=True).completed == 1
        assert queue.get(free).status is JobStatus.COMPLETED
        assert set(statuses(queue, by_task + by_queue)) == {"queued"}
        queue.resume("emails")
        queue.resume("held")
        assert Worker(queue).run(burst=True).completed == 6


def test_an_idle_worker_sees_a_pause_and_a_resume_at_once(target: str) -> None:
    registry = Registry()
    registry.task("send")(lambda job: "sent")
    with Queue(target, registry=registry) as queue:
        worker = Worker(queue, concurrency=2)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            warm = queue.enqueue("send", {})
            queue.wait(warm, timeout=30)
            queue.pause("default")
            held = queue.enqueue_many("send", [{}] * 5)
            time.sleep(1.0)
            assert set(statuses(queue, held)) == {"queued"}
            resumed = time.monotonic()
            queue.resume("default")
            for job_id in held:
                queue.wait(job_id, timeout=30)
            assert time.monotonic() - resumed < 10
        finally:
            worker.stop()
            thread.join(30)


def test_async_queue_pauses_and_resumes(target: str) -> None:
    async def scenario() -> None:
        async with AsyncQueue(target) as queue:
            assert await queue.pause("emails") is True
            assert await queue.paused() == ["emails"]
            job_id = await queue.enqueue("send", {}, queue="emails")
            assert queue.queue.claim("w", queues=["emails"]) == []
            assert await queue.resume("emails") is True
            assert await queue.resume("emails") is False
            assert await queue.paused() == []
            assert [job.id for job in queue.queue.claim("w")] == [job_id]

    asyncio.run(scenario())


# --- worker processes ---------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_worker_processes_see_a_pause_and_a_resume_from_another_process(
    target: str, tmp_path: Path
) -> None:
    run_log = tmp_path / "runs.log"
    with Queue(target) as queue:
        worker = start_worker(target, run_log, "--concurrency", "2")
        try:
            warm = queue.enqueue("noop", {})
            queue.wait(warm, timeout=60)  # the worker runs, and is idle now
            slow = queue.enqueue("sleep", {"seconds": 1.5})
            wait_until(lambda: queue.get(slow).status is JobStatus.PROCESSING, 30, "the run")
            queue.pause("default")
            held = queue.enqueue_many("noop", [{}] * 10)
            assert queue.wait(slow, timeout=30).status is JobStatus.COMPLETED  # ran on
            time.sleep(1.5)
            assert set(statuses(queue, held)) == {"queued"}
            assert not set(held) & set(runs(run_log))
            resumed = time.monotonic()
            queue.resume("default")
            for job_id in held:
                assert queue.wait(job_id, timeout=30).status is JobStatus.COMPLETED
            took = time.monotonic() - resumed
            assert took < 15, f"the resumed backlog took {took:.1f}s"
            assert all(runs(run_log)[job_id] == 1 for job_id in held)
        finally:
            worker.send_signal(signal.SIGTERM)
            output = finish(worker)
        assert worker.returncode == 0, output[-3000:]
        assert_no_lock_errors(output)


# --- the command line -----------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_pauses_resumes_and_shows_paused_queues(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    with Queue(target) as queue:
        queue.enqueue("send", {}, queue="emails")
        queue.enqueue("send", {})
    code, out, _ = cli(capsys, "pause", "emails", "--db", target)
    assert code == 0 and out.startswith("queue emails paused")
    code, out, _ = cli(capsys, "pause", "emails", "--db", target)
    assert code == 0 and out.strip() == "queue emails was paused already"
    code, out, _ = cli(capsys, "pause", "idle", "--db", target, "--json")
    assert code == 0 and json.loads(out) == {"queue": "idle", "paused": True, "changed": True}
    code, out, _ = cli(capsys, "status", "--db", target)
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert "emails (paused)" in rows and "idle (paused)" in rows and "default" in rows
    assert rows["emails (paused)"].split()[2] == "1"  # its backlog: one queued
    assert "paused queues" in out and "emails (since" in out
    code, out, _ = cli(capsys, "status", "--db", target, "--json")
    status = json.loads(out)
    assert sorted(status["paused"]) == ["emails", "idle"]
    assert status["counts"]["emails"]["queued"] == 1
    code, out, _ = cli(capsys, "resume", "emails", "--db", target)
    assert code == 0 and out.strip() == "queue emails resumed"
    code, out, _ = cli(capsys, "resume", "emails", "--db", target, "--json")
    assert code == 0 and json.loads(out) == {"queue": "emails", "paused": False, "changed": False}
    with Queue(target) as queue:
        assert queue.paused() == ["idle"]


def test_the_cli_refuses_a_bad_queue_name_as_bad_usage(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    Queue(target).close()
    for command in ("pause", "resume"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "not a name", "--db", target])
        assert exit_.value.code == 2
        assert "queue must be 1-200 characters" in capsys.readouterr().err
    with Queue(target) as queue:
        assert queue.paused() == []
