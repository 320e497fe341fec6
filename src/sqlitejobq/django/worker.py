"""Running Django tasks in sqlitejobq workers: a registry that finds a job's Django task by
its module path on first sight, and the handler that runs it as Django's workers do."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.db import close_old_connections

from ..errors import Snooze
from ..job import Job, JobEvent
from ..registry import Handler, Registry, TaskOptions
from ..registry import Task as RegisteredTask
from .compat import (
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    get_exception_traceback,
    get_module_path,
    normalize_json,
    task_finished,
    task_started,
)
from .options import app_tasks, register_task
from .results import django_task, task_result

log = logging.getLogger("sqlitejobq.django")

#: The sqlitejobq job of the Django task running in this thread or asyncio task.
_current: ContextVar[Job | None] = ContextVar("sqlitejobq_django_job", default=None)


def current_job() -> Job | None:
    """The sqlitejobq job the running Django task is, for progress, heartbeats and
    cancellation (``job.set_progress(0.5, "half")``; an ``async def`` task gets an
    ``AsyncJob``: ``await job.set_progress(...)``). None outside a sqlitejobq worker's run,
    so a task that reports progress still runs under another backend."""
    return _current.get()


class DjangoRegistry(Registry):
    """A registry that also knows every Django task using a ``TasksBackend``: a task name it
    has no handler for is imported as a dotted path, and registered if it is such a task."""

    def __init__(self) -> None:
        super().__init__()
        self._not_django: set[str] = set()
        self._resolving = threading.Lock()

    def _resolve(self, name: str) -> bool:
        """True if ``name`` has a handler here, registering a Django task's on first sight."""
        if super().__contains__(name):
            return True
        with self._resolving:
            if super().__contains__(name):
                return True
            if name in self._not_django:
                return False
            task = _backend_task(name)
            if task is None:
                self._not_django.add(name)
                return False
            register_task(self, task, handler_for(task))
            return True

    def discover(self, alias: str) -> int:
        """Register the tasks of TASKS alias ``alias`` found in installed apps' ``tasks``
        modules, with their options and schedules (a worker knows its limits and schedules
        before its first claim); returns how many."""
        found = 0
        for task in app_tasks(alias):
            if not super().__contains__(task.module_path) and _backend_task(task.module_path):
                register_task(self, task, handler_for(task))
                found += 1
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name)

    def get(self, name: str) -> RegisteredTask:
        """The handler of ``name``, a Django task's found on first use; else UnknownTask."""
        self._resolve(name)
        return super().get(name)

    def options(self, name: str) -> TaskOptions:
        """The options of ``name`` (a Django task's are those its ``@task`` gave)."""
        self._resolve(name)
        return super().options(name)


def _backend_task(name: str) -> Task[Any, Any] | None:
    """The Django task at ``name`` if its backend is a ``TasksBackend``."""
    from .backend import TasksBackend

    task = django_task(name)
    if task is None:
        return None
    try:
        backend = task.get_backend()
    except Exception as exc:  # a backend alias no longer configured: not this worker's
        log.warning("Django task %s: its backend %r cannot be loaded: %s", name, task.backend, exc)
        return None
    return task if isinstance(backend, TasksBackend) else None


def handler_for(task: Task[Any, Any]) -> Handler:
    """The sqlitejobq handler that runs ``task`` (an ``async def`` one for a coroutine
    function), sending Django's ``task_started`` and ``task_finished`` signals."""
    if inspect.iscoroutinefunction(task.func):

        async def run_async(job: Job) -> Any:
            with _run(task, job) as (result, args, kwargs):
                value = normalize_json(await task.func(*args, **kwargs))
                return _succeeded(task, result, value)

        return run_async

    def run(job: Job) -> Any:
        close_old_connections()
        try:
            with _run(task, job) as (result, args, kwargs):
                value = normalize_json(task.func(*args, **kwargs))
                return _succeeded(task, result, value)
        finally:
            close_old_connections()

    return run


@contextmanager
def _run(
    task: Task[Any, Any], job: Job
) -> Iterator[tuple[TaskResult[Any], list[Any], dict[str, Any]]]:
    """One run of ``task`` as ``job``: ``current_job()`` is the job, ``task_started`` sent;
    an exception in the block is recorded as Django records a failure, and raised."""
    running = _current.set(job)
    try:
        result = _started(task, job)
        args, kwargs = _arguments(task, result)
        try:
            yield result, args, kwargs
        except Snooze:  # not an attempt: the job comes back later, nothing is finished
            raise
        except BaseException as exc:
            _failed(task, job, result, exc)
            raise
    finally:
        _current.reset(running)


def _started(task: Task[Any, Any], job: Job) -> Any:
    """The job as a RUNNING TaskResult (one worker id per attempt), once sent as started."""
    from .backend import TasksBackend

    backend = task.get_backend()
    assert isinstance(backend, TasksBackend)  # the registry takes no other task
    if job.attempts > 1:
        events = backend.queue.timeline(job.id)
    else:
        events = [JobEvent(job.created_at, "enqueued")]
        if job.started_at is not None:
            events.append(JobEvent(job.started_at, "started", job.attempts, job.worker))
    result = task_result(backend.alias, task, job, events)
    task_started.send(type(backend), task_result=result)
    return result


def _arguments(task: Task[Any, Any], result: TaskResult[Any]) -> tuple[list[Any], dict[str, Any]]:
    """The task function's arguments: a TaskContext first when the task takes one."""
    args = list(result.args)
    if task.takes_context:
        args.insert(0, TaskContext(task_result=result))
    return args, dict(result.kwargs)


def _succeeded(task: Task[Any, Any], result: TaskResult[Any], value: Any) -> Any:
    """Record success on ``result``, send ``task_finished``; the value the job keeps."""
    _set(result, status=TaskResultStatus.SUCCESSFUL, finished_at=datetime.now(UTC))
    _set(result, _return_value=value)
    task_finished.send(type(task.get_backend()), task_result=result)
    return value


def _failed(task: Task[Any, Any], job: Job, result: TaskResult[Any], exc: BaseException) -> None:
    """On the last attempt, record the failure on ``result`` and send ``task_finished``; an
    attempt that will be retried sends nothing (the next one sends ``task_started``)."""
    if job.attempts < job.max_attempts:
        return
    result.errors.append(
        TaskError(
            exception_class_path=get_module_path(type(exc)),
            traceback=get_exception_traceback(exc),
        )
    )
    _set(result, status=TaskResultStatus.FAILED, finished_at=datetime.now(UTC))
    task_finished.send(type(task.get_backend()), task_result=result)


def _set(result: TaskResult[Any], **values: Any) -> None:
    """Set fields of a (frozen) TaskResult, as Django's own backends do."""
    for name, value in values.items():
        object.__setattr__(result, name, value)


__all__ = ["DjangoRegistry", "current_job", "handler_for"]
