"""Handlers the benchmark worker processes run (``--app benchmarks.app:registry``)."""

from __future__ import annotations

import os
import time

from sqlitejobq import Job, Registry

registry = Registry()


def _record(job: Job) -> None:
    path = os.environ.get("SQLITEJOBQ_BENCH_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{job.id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@registry.task("noop", max_attempts=3)
def noop(job: Job) -> None:
    """Does nothing: what is measured is the queue."""
    _record(job)


@registry.task("sleep", max_attempts=3, lease=60.0)
def sleep(job: Job) -> None:
    """Holds a worker thread for payload['seconds'], like a job waiting on the network."""
    _record(job)
    time.sleep(float(job.payload["seconds"]))
