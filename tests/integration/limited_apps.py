"""Handlers with limits, for worker processes started by the scheduling tests (``--app``
target): kept apart from ``apps`` so that the workers of the other tests and benchmarks do
not declare limits.

Each run appends ``job_id attempt pid`` to $SQLITEJOBQ_TEST_LOG (as ``apps`` does) and
``job_id pid start end`` to $SQLITEJOBQ_TEST_SPANS.
"""

from __future__ import annotations

import os
import time

from sqlitejobq import Job, Registry

from .apps import _record

registry = Registry()


def _span(job: Job, started: float) -> None:
    """Append ``job_id pid start end`` to $SQLITEJOBQ_TEST_SPANS: when a handler ran."""
    path = os.environ.get("SQLITEJOBQ_TEST_SPANS")
    if path:
        line = f"{job.id} {os.getpid()} {started:.6f} {time.time():.6f}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


@registry.task("limited", limit=3, max_attempts=5, backoff=0.0)
def limited(job: Job) -> None:
    """At most 3 of these run at once, across every worker; each sleeps a little."""
    started = time.time()
    _record(job)
    time.sleep(float(job.payload.get("seconds", 0.02)))
    _span(job, started)


@registry.task("rated", rate="20/s", max_attempts=5, backoff=0.0)
def rated(job: Job) -> None:
    """At most 20 starts in any second, across every worker."""
    started = time.time()
    _record(job)
    _span(job, started)
