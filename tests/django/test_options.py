"""The backend's OPTIONS: where jobs are kept, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from sqlitejobq.django import TasksBackend

pytestmark = pytest.mark.timeout(30)


def backend(options: dict[str, object]) -> TasksBackend:
    return TasksBackend("test", {"OPTIONS": options})


def test_unknown_options_are_refused_by_name() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"\['datbase', 'workers'\]"):
        backend({"datbase": "default", "workers": 2})


def test_database_and_target_together_are_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="both"):
        backend({"database": "default", "target": "jobs.db"})


def test_an_unknown_database_alias_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="'elsewhere'"):
        backend({"database": "elsewhere"})


def test_a_target_keeps_jobs_apart(tmp_path: Path) -> None:
    assert backend({"target": str(tmp_path / "jobs.db")}).target == str(tmp_path / "jobs.db")
    assert backend({"target": tmp_path / "jobs.db"}).database is None


def test_the_default_is_the_default_database() -> None:
    from django.conf import settings

    found = backend({})
    assert found.database == "default"
    assert found.target == settings.DATABASES["default"]["NAME"]


def test_a_postgresql_database_becomes_a_url() -> None:
    from django.test.utils import override_settings

    from sqlitejobq.django.backend import database_target

    config = {
        "pg": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "app",
            "USER": "me",
            "PASSWORD": "p@ss/word",
            "HOST": "db.example",
            "PORT": 5433,
        }
    }
    with pytest.warns(UserWarning, match="DATABASES"), override_settings(DATABASES=config):
        assert database_target("pg") == "postgresql://me:p%40ss%2Fword@db.example:5433/app"


def test_a_socket_directory_and_libpq_options_go_in_the_query() -> None:
    from django.test.utils import override_settings

    from sqlitejobq.django.backend import database_target

    config = {
        "pg": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "app",
            "USER": "me",
            "HOST": "/var/run/postgresql",
            "OPTIONS": {"sslmode": "require", "pool": True, "options": "-c work_mem=8MB"},
        }
    }
    with pytest.warns(UserWarning, match="DATABASES"), override_settings(DATABASES=config):
        assert database_target("pg") == (
            "postgresql://me@/app?host=%2Fvar%2Frun%2Fpostgresql&sslmode=require"
            "&options=-c%20work_mem%3D8MB"  # libpq reads %20 as a space, not +
        )


def test_the_target_follows_the_database_as_it_is_now(tmp_path: Path) -> None:
    """Django's test runner points a database at its test copy after the backend exists:
    the jobs go to the copy."""
    from django.conf import settings

    found = backend({})
    before = found.target
    copy = str(tmp_path / "test_copy.sqlite3")
    settings.DATABASES["default"]["NAME"] = copy
    try:
        assert found.target == copy != before
    finally:
        settings.DATABASES["default"]["NAME"] = before


def test_an_in_memory_sqlite_database_is_refused() -> None:
    from django.test.utils import override_settings

    from sqlitejobq.django.backend import database_target

    config = {"mem": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    with (
        pytest.warns(UserWarning, match="DATABASES"),
        override_settings(DATABASES=config),
        pytest.raises(ImproperlyConfigured, match="':memory:'"),
    ):
        database_target("mem")
