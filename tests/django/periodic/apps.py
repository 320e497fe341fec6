"""An app with a scheduled task, installed only in the worker processes that test it."""

from django.apps import AppConfig


class PeriodicConfig(AppConfig):
    name = "tests.django.periodic"
    label = "sqlitejobq_periodic"
