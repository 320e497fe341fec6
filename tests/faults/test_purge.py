"""purge never deletes what is alive: running workers' rows, unfinished batches, batches with
unfinished jobs; and a worker whose row went missing writes it back."""

from __future__ import annotations

import json
import signal
import threading

import pytest

from sqlitejobq import JobNotFound, JobStatus, Registry, Worker

from .conftest import Engine, finish, wait_until

pytestmark = pytest.mark.timeout(120)


def test_purge_older_than_zero_keeps_live_workers_and_unfinished_batches(engine: Engine) -> None:
    queue = engine.open()
    done = queue.enqueue_batch("sleep", [{"seconds": 0}] * 3, name="finished")
    worker = engine.worker("--concurrency", "2")
    wait_until(lambda: queue.batch_progress(done.id).done, 60, "the first batch")
    # a batch with one finished job and two that wait (delayed by an hour)
    waiting = queue.enqueue_batch("sleep", [{"seconds": 0}], name="unfinished")
    wait_until(lambda: queue.batch_progress(waiting.id).done, 60, "its first job")
    later = queue.enqueue_many("sleep", [{"seconds": 0}] * 2, delay=3600)
    assert queue.batch_progress(waiting.id).done  # the delayed jobs are in no batch
    held = queue.enqueue_batch("sleep", [{"seconds": 0}] * 2, name="held", delay=3600)

    purged = engine.cli("purge", "--older-than", "0", "--json")
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) == {"purged": 4}  # the four finished jobs
    status = json.loads(engine.cli("status", "--json").stdout)
    assert status["active_workers"] == 1
    assert [w["pid"] for w in status["workers"]] == [worker.pid]
    with pytest.raises(JobNotFound):
        queue.batch_progress(done.id)  # finished, and none of its jobs left
    with pytest.raises(JobNotFound):
        queue.batch_progress(waiting.id)
    progress = queue.batch_progress(held.id)  # queued jobs: kept
    assert (progress.total, progress.queued) == (2, 2)
    assert all(queue.get(i).status is JobStatus.QUEUED for i in [*later, *held.job_ids])
    worker.send_signal(signal.SIGTERM)
    finish(worker)


def test_a_worker_whose_row_went_missing_writes_it_back(engine: Engine) -> None:
    registry = Registry()
    registry.register("noop", lambda job: None)
    queue = engine.open(registry=registry)
    worker = Worker(queue, concurrency=1, report_interval=0.1)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    wait_until(lambda: bool(queue.workers(alive_only=True)), 30, "the worker's row")
    engine.execute("DELETE FROM sqlitejobq_workers")  # what an older purge did
    assert queue.workers() == []
    queue.enqueue("noop")  # a completed job changes the worker's figures: it reports
    wait_until(lambda: bool(queue.workers(alive_only=True)), 30, "the row to come back")
    [row] = queue.workers(alive_only=True)
    assert row.id == worker.id and row.jobs_completed == 1 and row.started_at > 0
    worker.stop()
    thread.join(30)
