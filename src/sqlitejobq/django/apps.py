"""The Django app: ``INSTALLED_APPS += ["sqlitejobq.django"]`` adds the worker command."""

from __future__ import annotations

from django.apps import AppConfig


class SqliteJobQConfig(AppConfig):
    """sqlitejobq in a Django project: the ``sqlitejobq_worker`` management command."""

    name = "sqlitejobq.django"
    label = "sqlitejobq"
    verbose_name = "sqlitejobq"
