"""Django tasks with sqlitejobq's options: retries, backoff, timeouts, limits, schedules and
unique keys, declared on ``@task`` and found by the worker in every installed app."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime
from importlib import import_module
from typing import Any, TypedDict, Unpack

from ..errors import InvalidArgument
from ..options import TaskOptions, unexpected
from ..registry import Registry, Schedule, check_missed
from ..triggers import parse_trigger
from ..validation import optional_text
from .compat import InvalidTaskError
from .compat import Task as DjangoTask

#: The fields of ``Task`` that are sqlitejobq task options, as ``TaskOptions`` names them.
TASK_OPTIONS = (
    "max_attempts",
    "timeout",
    "lease",
    "backoff",
    "backoff_max",
    "limit",
    "rate",
    "limit_key",
)
#: What ``Task.using`` takes besides Django's own: options of one enqueue.
ENQUEUE_OPTIONS = ("max_attempts", "unique_key")
#: The module of an installed app that the worker imports to find its tasks.
TASKS_MODULE = "tasks"


class TaskOptionsKwargs(TypedDict, total=False):
    """sqlitejobq's options of a Django task, as ``@task`` takes them."""

    max_attempts: int | None
    timeout: float | None
    lease: float | None
    backoff: float | list[float] | tuple[float, ...] | None
    backoff_max: float | None
    limit: int | None
    rate: str | None
    limit_key: str | None
    schedule: str | float | None
    timezone: str
    missed: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Task(DjangoTask):  # type: ignore[type-arg]
    """A Django task that also carries sqlitejobq's options (None: the backend's default).

    Django's ``@task`` builds one for a ``TasksBackend`` and passes it the keywords it does
    not know itself (Django 6.1, the backport 0.12); ``sqlitejobq.django.task`` does so on
    every version. A
    backend other than ``TasksBackend`` runs it as a plain Django task, ignoring them.
    """

    #: Attempts before the task fails (a lost run counts as one).
    max_attempts: int | None = None
    #: Seconds one run may take; past it the run fails (``JobTimeout``).
    timeout: float | None = None
    #: Seconds a claim holds the job between heartbeats.
    lease: float | None = None
    #: Seconds before the first retry, doubled for each later one up to ``backoff_max``; or
    #: a list of waits, one per retry, the last one repeated.
    backoff: float | list[float] | tuple[float, ...] | None = None
    backoff_max: float | None = None
    #: At most this many of the task's jobs running at once, across every worker.
    limit: int | None = None
    #: At most so many starts in a period, e.g. ``"10/m"``, across every worker.
    rate: str | None = None
    #: With ``limit`` or ``rate``: a keyword argument of the task; the limits hold per value.
    limit_key: str | None = None
    #: A cron expression (in ``timezone``) or an interval in seconds: the worker enqueues
    #: the task, without arguments, at each slot (one job per slot however many workers).
    schedule: str | float | None = None
    timezone: str = "UTC"
    #: Slots missed while no worker ran: "latest" (one job for them) or "skip".
    missed: str = "latest"
    #: While an unfinished job of the task holds this key, an enqueue adds nothing and
    #: returns that job's result (set per enqueue: ``task.using(unique_key=...)``).
    unique_key: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.backoff, list):  # kept as a tuple: the task stays hashable
            object.__setattr__(self, "backoff", tuple(self.backoff))
        try:
            self.task_options()
            check_missed(self.missed)
            self.schedule_of()
            optional_text(self.unique_key, "unique_key", max_length=1000)
        except (InvalidArgument, TypeError, ValueError) as exc:
            raise InvalidTaskError(f"task {self.module_path}: {exc}") from exc
        DjangoTask.__post_init__(self)  # no bare super(): the class has slots

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> Task:
        """A copy with other defaults: Django's (``priority``, ``queue_name``, ``run_after``,
        ``backend``) and the options of one enqueue (``unique_key``, ``max_attempts``)."""
        for name in options:
            if name not in ENQUEUE_OPTIONS:
                raise unexpected("using()", name, ENQUEUE_OPTIONS)
        task = DjangoTask.using(
            self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
        return dataclasses.replace(task, **options) if options else task

    def task_options(self) -> TaskOptions:
        """The sqlitejobq options of the task's jobs, checked."""
        values = {name: getattr(self, name) for name in TASK_OPTIONS}
        return TaskOptions.of({name: value for name, value in values.items() if value is not None})  # type: ignore[arg-type]

    def schedule_of(self) -> Schedule | None:
        """The task's schedule (its jobs called without arguments), or None."""
        if self.schedule is None:
            return None
        return Schedule(
            name=self.module_path,
            task=self.module_path,
            trigger=parse_trigger(self.schedule, self.timezone),
            payload={"args": [], "kwargs": {}},
            missed=check_missed(self.missed),
            queue=self.queue_name,
            priority=self.priority,
            max_attempts=self.max_attempts,
        )


def task(
    function: Callable[..., Any] | None = None,
    *,
    priority: int = 0,
    queue_name: str = "default",
    backend: str = "default",
    takes_context: bool = False,
    **options: Unpack[TaskOptionsKwargs],
) -> Any:
    """Django's ``@task`` with sqlitejobq's options, on every Django version:
    ``@task(max_attempts=5, backoff=10, timeout=60)``, ``@task(schedule="0 6 * * *")``."""

    def wrapper(func: Callable[..., Any]) -> Task:
        return Task(
            func=func,
            priority=priority,
            queue_name=queue_name,
            backend=backend,
            takes_context=takes_context,
            **options,
        )

    return wrapper(function) if function is not None else wrapper


def task_options(task: DjangoTask) -> TaskOptions:  # type: ignore[type-arg]
    """The sqlitejobq options of a Django task (none for a plain one)."""
    return task.task_options() if isinstance(task, Task) else TaskOptions()


def app_tasks(alias: str) -> Iterator[DjangoTask]:  # type: ignore[type-arg]
    """The Django tasks of TASKS alias ``alias`` in the ``tasks`` module of every installed
    app (each module imported: an error in one is raised, as Django raises it)."""
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    for config in apps.get_app_configs():
        if not module_has_submodule(config.module, TASKS_MODULE):
            continue
        module = import_module(f"{config.name}.{TASKS_MODULE}")
        for value in vars(module).values():
            if isinstance(value, DjangoTask) and value.backend == alias:
                yield value


def register_task(registry: Registry, task: DjangoTask, handler: Any) -> None:  # type: ignore[type-arg]
    """Register a Django task's handler with its options, and its schedule if it has one."""
    registry.register(task.module_path, handler, task_options(task))
    schedule = task.schedule_of() if isinstance(task, Task) else None
    if schedule is not None:
        registry.add_schedule(schedule)


__all__ = ["Task", "app_tasks", "register_task", "task", "task_options"]
