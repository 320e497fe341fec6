"""Handlers and queues for the worker processes of the fault suite (``--app`` targets).

Each handler run appends ``job_id attempt pid`` to $SQLITEJOBQ_TEST_LOG, so a test counts
how often each job really ran. Queues built here read their database from $SQLITEJOBQ_DB.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

from sqlitejobq import Job, Queue, Registry

registry = Registry()


def record(job: Job) -> None:
    path = os.environ.get("SQLITEJOBQ_TEST_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{job.id} {job.attempts} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@registry.task("sleep", max_attempts=5, backoff=0.0)
def sleep(job: Job) -> dict[str, Any]:
    """Sleep for payload['seconds']."""
    record(job)
    time.sleep(float(job.payload.get("seconds", 0.0)))
    return {"attempt": job.attempts}


@registry.task("wait_for_file", max_attempts=5, backoff=0.0)
def wait_for_file(job: Job) -> dict[str, Any]:
    """Block until the file payload['path'] exists (at most payload['limit'] seconds)."""
    record(job)
    path = Path(job.payload["path"])
    deadline = time.monotonic() + float(job.payload.get("limit", 60))
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"attempt": job.attempts}


@registry.task("echo", max_attempts=3, backoff=0.0)
def echo(job: Job) -> Any:
    """Return payload['value'] after payload['seconds'] (a result that may not be storable)."""
    record(job)
    time.sleep(float(job.payload.get("seconds", 0.0)))
    value = job.payload["value"]
    return "\ud800" if value == "lone surrogate" else value


@registry.task("stuck", max_attempts=2, backoff=0.0, timeout=0.5)
def stuck(job: Job) -> None:
    """Ignore the timeout: sleep in a call that cannot be interrupted."""
    record(job)
    time.sleep(float(job.payload.get("seconds", 3600)))


@registry.task("hold_the_interpreter", max_attempts=1, timeout=0.5)
def hold_the_interpreter(job: Job) -> None:
    """Hang in C code that never releases the interpreter lock (catastrophic backtracking)."""
    record(job)
    re.match(r"(a+)+$", "a" * 64 + "b")


class _JumpingClock:
    """Wall-clock time plus an offset read from the file $SQLITEJOBQ_CLOCK_OFFSET (seconds),
    so a test can jump a worker process's clock while it runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0.0
        self.checked = 0.0

    def __call__(self) -> float:
        now = time.time()
        if now - self.checked > 0.05:
            self.checked = now
            with contextlib.suppress(OSError, ValueError):
                self.offset = float(Path(self.path).read_text() or 0)
        return now + self.offset


def __getattr__(name: str) -> Queue:
    """Queues for worker processes, opened on $SQLITEJOBQ_DB when first asked for."""
    if name not in ("jumping_clock_queue", "short_retry_queue"):
        raise AttributeError(name)
    db = os.environ["SQLITEJOBQ_DB"]
    if name == "jumping_clock_queue":
        clock = _JumpingClock(os.environ["SQLITEJOBQ_CLOCK_OFFSET"])
        queue = Queue(db, registry=registry, clock=clock)
    elif name == "short_retry_queue":
        # the engine's own wait for a lock cut short too, so that the bound is what gives up
        short = {"lock_timeout": 0.1} if db.startswith("postgres") else {"busy_timeout": 0.1}
        queue = Queue(db, registry=registry, retry_timeout=0.5, **short)
    else:
        raise AttributeError(name)
    globals()[name] = queue
    return queue


@registry.task("report_v2", max_attempts=1)
def report_v2(job: Job) -> dict[str, int]:
    """A task that only the newer deployment knows."""
    record(job)
    return {"pid": os.getpid()}


#: What a worker deployed before ``report_v2`` existed knows.
old_registry = Registry()
old_registry.register("sleep", sleep, registry.get("sleep").options)


def produce(db: str, log: str, batches: int, size: int) -> None:
    """A producer process: enqueue batches of ``size`` jobs, logging each batch's ids once
    its enqueue has returned."""
    queue = Queue(db, registry=registry)
    with open(log, "a", buffering=1) as out:
        for n in range(batches):
            batch = queue.enqueue_batch("sleep", [{"seconds": 0.01}] * size, name=f"b{n}")
            out.write(" ".join(map(str, batch.job_ids)) + "\n")
