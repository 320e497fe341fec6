"""The tests' Django tasks as an installed app, so the worker finds them in ``tasks``."""

from django.apps import AppConfig


class TestTasksConfig(AppConfig):
    name = "tests.django"
    label = "sqlitejobq_tests"
