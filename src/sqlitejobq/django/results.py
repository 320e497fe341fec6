"""Jobs as Django's task results, and Django tasks found by their module path."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from django.utils.module_loading import import_string

from ..errors import LeaseExpired
from ..job import Job, JobEvent, JobStatus
from .compat import Task, TaskError, TaskResult, TaskResultStatus, get_module_path

#: A dotted path of identifiers: what an exception class path looks like.
_CLASS_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
#: Job statuses as Django names them.
STATUSES: dict[JobStatus, TaskResultStatus] = {
    JobStatus.QUEUED: TaskResultStatus("READY"),
    JobStatus.WAITING: TaskResultStatus("READY"),
    JobStatus.PROCESSING: TaskResultStatus("RUNNING"),
    JobStatus.COMPLETED: TaskResultStatus("SUCCESSFUL"),
    JobStatus.FAILED: TaskResultStatus("FAILED"),
    JobStatus.CANCELLED: TaskResultStatus("FAILED"),
}
#: Timeline events that end an attempt with an error.
_ATTEMPT_ERRORS = frozenset({"attempt failed", "lease expired", "abandoned", "failed"})
#: The events of runs that ended without an outcome (no exception was raised), and the
#: class path their errors are given.
_LOST_RUNS = frozenset({"lease expired", "abandoned"})
LOST_RUN = get_module_path(LeaseExpired)


def django_task(name: str) -> Task[Any, Any] | None:
    """The Django task at dotted path ``name``, or None if it names none."""
    try:
        found = import_string(name)
    except ImportError:
        return None
    return found if isinstance(found, Task) else None


def task_result(
    alias: str, task: Task[Any, Any], job: Job, events: Sequence[JobEvent]
) -> TaskResult[Any]:
    """A job as Django's TaskResult: each attempt's worker, each failed attempt's error."""
    starts: list[JobEvent] = []
    for event in events:
        if event.event == "started":
            starts.append(event)
        elif event.event == "snoozed" and starts:
            starts.pop()  # a run put off (raise Snooze) is not an attempt
    errors = [
        TaskError(
            exception_class_path=LOST_RUN
            if event.event in _LOST_RUNS
            else exception_path(event.error or "", event.traceback),
            traceback=event.traceback or event.error or "",
        )
        for event in events
        if event.event in _ATTEMPT_ERRORS and event.error is not None
    ]
    payload = job.payload if isinstance(job.payload, dict) else {}
    changes: dict[str, Any] = {}
    if job.priority != task.priority:
        changes["priority"] = job.priority
    if job.queue != task.queue_name:
        changes["queue_name"] = job.queue
    if job.run_at > job.created_at + 0.001:
        changes["run_after"] = aware(job.run_at)
    if changes:
        # the task as declared when the job's own options are refused (a queue since removed)
        with contextlib.suppress(Exception):
            task = replace(task, **changes)
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=str(job.id),
        status=STATUSES[job.status],
        enqueued_at=aware(job.created_at),
        started_at=aware(starts[0].at) if starts else None,
        last_attempted_at=aware(starts[-1].at) if starts else None,
        finished_at=aware(job.finished_at),
        args=list(payload.get("args", [])),
        kwargs=dict(payload.get("kwargs", {})),
        backend=alias,
        errors=errors,
        worker_ids=[event.worker or "" for event in starts],
    )
    if job.status is JobStatus.COMPLETED:
        object.__setattr__(result, "_return_value", job.result)
    return result


def aware(seconds: float | None) -> datetime | None:
    """Epoch seconds as an aware datetime in UTC."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def exception_path(error: str, trace: str | None) -> str:
    """The dotted path of the exception class an attempt failed with: from the last line of
    its traceback that names it (``module.Class: message``), else the error's class name."""
    name = error.split(":", 1)[0].strip()
    if not _CLASS_PATH.fullmatch(name):
        return "builtins.Exception"  # an error text that names no class
    for line in reversed((trace or "").splitlines()):
        head = line.split(":", 1)[0].strip()
        if not line.startswith(" ") and (head == name or head.endswith("." + name)):
            return head if "." in head else "builtins." + head
    return name if "." in name else "builtins." + name
