"""Django's Tasks framework: ``django.tasks`` (Django 6) when it exists, else the
``django-tasks`` backport, under one set of names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_tasks import task_backends
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import get_exception_traceback, get_module_path, normalize_json
else:
    try:
        from django.tasks import exceptions as _exceptions
        from django.tasks import task_backends
        from django.tasks import utils as _utils
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django.tasks.signals import task_enqueued, task_finished, task_started

        # names that moved while django.tasks took shape: the released ones first
        InvalidTaskError = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
        TaskResultDoesNotExist = _exceptions.TaskResultDoesNotExist
        normalize_json = getattr(_utils, "normalize_json", None) or _utils.json_normalize
        get_exception_traceback = _utils.get_exception_traceback
        get_module_path = _utils.get_module_path
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
        from django_tasks.utils import get_exception_traceback, get_module_path, normalize_json

__all__ = [
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
