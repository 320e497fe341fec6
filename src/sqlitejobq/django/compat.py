"""Django's Tasks framework: ``django.tasks`` (Django 6) when it exists, else the
``django-tasks`` backport, under one set of names."""

from __future__ import annotations

from traceback import format_exception
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_tasks import task_backends
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json
else:
    try:
        from django.tasks import exceptions as _exceptions
        from django.tasks import task_backends
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django.tasks.signals import task_enqueued, task_finished, task_started

        # names that moved while django.tasks took shape: the released ones first
        InvalidTaskError = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
        TaskResultDoesNotExist = _exceptions.TaskResultDoesNotExist
        try:
            from django.utils.json import normalize_json
        except ImportError:
            from django.tasks.utils import normalize_json
    except ImportError:
        from django_tasks import task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import (
            Task,
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
        )
        from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json

#: Whether Django's ``@task`` passes keywords it does not know to the backend's
#: ``task_class`` (Django 6.1, the django-tasks backport 0.12).
TASK_CLASS_OPTIONS = hasattr(BaseTaskBackend, "task_class")


def get_module_path(value: Any) -> str:
    """The dotted path of a class or function, as Django names an exception's class."""
    return f"{value.__module__}.{value.__qualname__}"


def get_exception_traceback(exc: BaseException) -> str:
    """The exception's traceback as text, as Django's backends keep it."""
    return "".join(format_exception(exc))


__all__ = [
    "TASK_CLASS_OPTIONS",
    "BaseTaskBackend",
    "InvalidTaskError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "get_exception_traceback",
    "get_module_path",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
