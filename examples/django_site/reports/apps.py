from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ReportsConfig(AppConfig):
    name = "reports"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(create_job_tables, sender=self)


def create_job_tables(using: str = "default", **kwargs: Any) -> None:
    """After ``manage.py migrate``, create sqlitejobq's tables too, as opening the tasks
    backend's queue does. Left to the first enqueue, that would happen inside the view's
    transaction, and on SQLite wait for the write lock that very transaction holds."""
    try:
        from django.tasks import task_backends
    except ImportError:
        from django_tasks import task_backends

    backend = task_backends["default"]
    if backend.database == using:
        backend.queue  # noqa: B018 (opened for its side effect: the tables)
