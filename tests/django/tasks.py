"""Django tasks the tests enqueue (module level, as Django requires)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

try:
    from django.tasks import TaskContext, task
except ImportError:
    from django_tasks import TaskContext, task

from sqlitejobq.django import task as sqlitejobq_task

#: Labels in the order ``record`` ran them (in this process).
CALLS: list[str] = []


class Boom(Exception):
    """What the failing tasks raise."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def explode(message: str) -> None:
    raise Boom(message)


@task(takes_context=True)
def flaky(context: TaskContext, succeed_on: int) -> dict[str, Any]:
    if context.attempt < succeed_on:
        raise Boom(f"attempt {context.attempt}")
    return {"attempt": context.attempt, "workers": len(context.task_result.worker_ids)}


@task
def record(label: str) -> str:
    CALLS.append(label)
    return label


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task(queue_name="other", priority=5)
def on_other(value: Any) -> Any:
    return value


@task
def report_progress(steps: int) -> bool | None:
    """Reports progress through ``current_job`` (None under another backend)."""
    from sqlitejobq.django import current_job

    job = current_job()
    if job is None:
        return None
    for step in range(1, steps + 1):
        job.set_progress(step / steps, f"step {step} of {steps}")
    return current_job() is job


@task
async def async_report_progress(steps: int) -> bool | None:
    from sqlitejobq.django import current_job

    job = current_job()
    if job is None:
        return None
    for step in range(1, steps + 1):
        await job.set_progress(step / steps, f"step {step} of {steps}")  # type: ignore[misc]
    return current_job() is job


#: Runs of ``one_at_a_time``: ("start" | "end", label, time) in the order they happened.
SPANS: list[tuple[str, str, float]] = []


@sqlitejobq_task(max_attempts=5, backoff=0)
def stubborn(fail_times: int) -> int:
    """Fails its first ``fail_times`` attempts (counted in CALLS), then returns the count."""
    CALLS.append("stubborn")
    if CALLS.count("stubborn") <= fail_times:
        raise Boom(f"attempt {CALLS.count('stubborn')}")
    return CALLS.count("stubborn")


@sqlitejobq_task(timeout=0.2, max_attempts=1)
def overrun() -> None:
    """Heartbeats past its timeout: the heartbeat raises JobTimeout."""
    from sqlitejobq.django import current_job

    job = current_job()
    assert job is not None
    for _ in range(200):
        time.sleep(0.02)
        job.heartbeat()


@sqlitejobq_task(limit=1)
def one_at_a_time(label: str) -> str:
    SPANS.append(("start", label, time.monotonic()))
    time.sleep(0.05)
    SPANS.append(("end", label, time.monotonic()))
    return label


@task
def snooze_once() -> int:
    """Puts itself off once (``Snooze(0)``), then returns how often it ran."""
    from sqlitejobq import Snooze

    CALLS.append("snooze_once")
    if CALLS.count("snooze_once") == 1:
        raise Snooze(0)
    return CALLS.count("snooze_once")
