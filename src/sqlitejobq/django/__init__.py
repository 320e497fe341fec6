"""sqlitejobq as a backend of Django's Tasks framework (``django.tasks`` or the
``django-tasks`` backport): ``"BACKEND": "sqlitejobq.django.TasksBackend"`` in ``TASKS``."""

from __future__ import annotations

from typing import Any

__all__ = ["Task", "TasksBackend", "current_job", "task"]


def __getattr__(name: str) -> Any:
    # imported on first use: Django loads this package as an app before settings are read
    if name == "TasksBackend":
        from .backend import TasksBackend

        return TasksBackend
    if name in ("Task", "task"):
        from . import options

        return getattr(options, name)
    if name == "current_job":
        from .worker import current_job

        return current_job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
