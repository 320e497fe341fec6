"""Handlers for worker processes started by the integration tests (``--app`` targets).

Each run of a handler appends one line ``job_id attempt pid`` to the file named by
$SQLITEJOBQ_TEST_LOG, so a test can count how often each job really ran.
"""

from __future__ import annotations

import os
import time

from sqlitejobq import Job, Registry, Snooze

registry = Registry()


def _record(job: Job) -> None:
    path = os.environ.get("SQLITEJOBQ_TEST_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{job.id} {job.attempts} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@registry.task("sleep", max_attempts=5, backoff=0.0)
def sleep(job: Job) -> dict[str, float]:
    """Sleep for payload['seconds'] in small steps, reporting progress."""
    _record(job)
    seconds = float(job.payload.get("seconds", 0.0))
    steps = max(1, int(seconds / 0.05))
    for step in range(steps):
        time.sleep(seconds / steps)
        job.set_progress((step + 1) / steps)
    return {"pid": os.getpid(), "attempt": job.attempts}


@registry.task("noop", max_attempts=5, backoff=0.0)
def noop(job: Job) -> int:
    _record(job)
    return int(job.id)


@registry.task("flaky", max_attempts=2, backoff=0.0)
def flaky(job: Job) -> dict[str, int]:
    """Fails its first attempt when the payload says ``fail_first``, every one when it says
    ``doomed``; else returns the attempt that completed it."""
    _record(job)
    if job.payload.get("doomed") or (job.payload.get("fail_first") and job.attempts == 1):
        raise RuntimeError(f"job {job.id} fails attempt {job.attempts} on purpose")
    return {"attempt": job.attempts}


@registry.task("snoozy", max_attempts=1)
def snoozy(job: Job) -> int:
    """Puts itself off (``Snooze(0)``) until it has run ``payload['runs']`` times, counted
    as bytes appended to the file ``payload['marker']``; then returns the count."""
    _record(job)
    fd = os.open(job.payload["marker"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    runs = os.path.getsize(job.payload["marker"])
    if runs < job.payload["runs"]:
        raise Snooze(0)
    return runs


@registry.task("db_seen")
def db_seen(job: Job) -> str | None:
    """The database the worker command handed its handlers ($SQLITEJOBQ_DB)."""
    return os.environ.get("SQLITEJOBQ_DB")
