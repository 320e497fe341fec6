"""The Django app: ``INSTALLED_APPS += ["sqlitejobq.django"]`` adds the worker command, and
``manage.py migrate`` creates (or upgrades) sqlitejobq's tables in the databases that keep
jobs."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate

log = logging.getLogger("sqlitejobq.django")


class SqliteJobQConfig(AppConfig):
    """sqlitejobq in a Django project: the ``sqlitejobq_worker`` management command, and
    its tables migrated with Django's."""

    name = "sqlitejobq.django"
    label = "sqlitejobq"
    verbose_name = "sqlitejobq"

    def ready(self) -> None:
        """Migrate sqlitejobq's tables after Django's (the signal comes once per app with
        models: the queues, opened once, make the later ones cheap)."""
        post_migrate.connect(migrate_job_tables, dispatch_uid="sqlitejobq.migrate_job_tables")


def migrate_job_tables(using: str = DEFAULT_DB_ALIAS, verbosity: int = 1, **_: Any) -> None:
    """After ``manage.py migrate`` on database ``using``, bring sqlitejobq's tables up to
    date for each ``TasksBackend`` keeping its jobs there. Left to the first enqueue, that
    could happen inside a view's transaction, and on SQLite wait for the write lock that
    very transaction holds."""
    from django.conf import settings

    from .backend import TasksBackend
    from .compat import task_backends

    for alias in getattr(settings, "TASKS", {}):
        try:
            backend = task_backends[alias]
        except Exception as exc:  # a broken alias is Django's to report, when it is used
            log.debug("sqlitejobq: TASKS[%r] left alone: %s", alias, exc)
            continue
        if not isinstance(backend, TasksBackend) or backend.database != using:
            continue
        try:
            backend.queue  # noqa: B018 (opening the queue migrates its tables)
        except ImproperlyConfigured as exc:  # e.g. an in-memory test database
            log.warning("sqlitejobq: the jobs of TASKS[%r] have no tables: %s", alias, exc)
