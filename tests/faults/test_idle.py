"""An idle worker sleeps: it wakes for an enqueue in its process, for a commit by another
process through a file watcher, or for its timers, and otherwise costs nothing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import sqlitejobq.backends.sqlite.wakeup as sqlite_wakeup
from sqlitejobq import JobStatus, Queue, Registry, Worker

from .conftest import ROOT, Engine, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.engines("sqlite")]


class CountingQueue:
    """Counts the worker's looks for other processes' commits (``data_version`` reads)."""

    def __init__(self, queue: Queue) -> None:
        self.looks = 0
        waker = queue.backend.waker
        read = waker.look

        def counted() -> int:
            self.looks += 1
            return read()

        waker.look = counted  # type: ignore[method-assign]


@contextmanager
def idle_worker(queue: Queue) -> Iterator[Worker]:
    queue.registry.register("noop", lambda job: "done")
    worker = Worker(queue, concurrency=2)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    wait_until(lambda: bool(queue.workers(alive_only=True)), 30, "the worker")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)


def enqueue_from_another_process(engine: Engine) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "sqlitejobq", "enqueue", "noop", "--db", engine.target],
        cwd=ROOT, env=engine.env(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return int(done.stdout)


def test_an_idle_worker_sleeps_instead_of_polling(engine: Engine) -> None:
    queue = engine.open(registry=Registry())
    counter = CountingQueue(queue)
    with idle_worker(queue):
        time.sleep(0.5)  # let it settle
        before = counter.looks
        time.sleep(3.0)
        looks = counter.looks - before
    # about one look a second (its rescue timer); polling every 2 ms made 1,500
    assert looks <= 10, looks


def test_a_commit_by_another_process_wakes_an_idle_worker_through_its_file_watcher(
    engine: Engine,
) -> None:
    queue = engine.open(registry=Registry())
    waker = queue.backend.waker
    with idle_worker(queue):
        assert waker.watching
        time.sleep(1.5)  # idle long enough for the looks to be a second apart
        changes = waker.signals
        job_id = enqueue_from_another_process(engine)
        wait_until(lambda: queue.get(job_id).status is JobStatus.COMPLETED, 30, "the job")
        assert waker.signals > changes
    assert not waker.watching  # the watcher stops with the last worker listening


def test_without_a_file_watcher_the_worker_still_finds_work_from_other_processes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_wakeup, "_libc", None)  # as on a system without inotify
    queue = engine.open(registry=Registry())
    with idle_worker(queue):
        assert not queue.backend.waker.watching
        time.sleep(0.5)
        job_id = enqueue_from_another_process(engine)
        wait_until(lambda: queue.get(job_id).status is JobStatus.COMPLETED, 30, "the job")
