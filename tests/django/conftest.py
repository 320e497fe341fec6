"""Django configured once for this directory's tests, with DATABASES and TASKS swapped per
test: a SQLite file, or a PostgreSQL database with the jobs in a schema of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("django")

import django
from django.conf import settings

from sqlitejobq import Queue
from tests.conftest import ROOT, PgServer, with_schema

QUEUES = ["default", "other"]

if not settings.configured:
    _BOOT = Path(tempfile.mkdtemp(prefix="sqjq-django-")) / "boot.db"
    settings.configure(
        SECRET_KEY="sqlitejobq-tests",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "sqlitejobq.django",
            "tests.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_BOOT)}},
        TASKS={"default": {"BACKEND": "sqlitejobq.django.TasksBackend", "QUEUES": QUEUES}},
    )
    django.setup()

WORKER_TIMEOUT = 60


@dataclass
class DjangoSetup:
    """One test's Django databases and tasks, and where its jobs are."""

    engine: str
    databases: dict[str, Any]
    tasks: dict[str, Any]
    target: str  # the jobs' database, as sqlitejobq names it

    def queue(self) -> Queue:
        """The jobs' queue, opened apart from Django (to look at what is stored)."""
        return Queue(self.target)

    def run_worker(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """``manage.py sqlitejobq_worker`` in a process of its own, with these settings."""
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.django.settings",
            "SQLITEJOBQ_DJANGO_TEST": json.dumps(
                {"DATABASES": self.databases, "TASKS": self.tasks}
            ),
            "PYTHONPATH": str(ROOT),
        }
        return subprocess.run(
            [sys.executable, "-m", "django", "sqlitejobq_worker", *arguments],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT, check=True,
        )  # fmt: skip


def _reset_connections() -> None:
    """Make Django's database connections follow the DATABASES setting in force."""
    from asgiref.local import Local
    from django.db import connections

    connections.close_all()
    connections._settings = None
    connections.__dict__.pop("settings", None)
    connections._connections = Local(connections.thread_critical)


def _postgres_database(dsn: str) -> dict[str, Any]:
    url = urlsplit(dsn)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname or "",
        "PORT": str(url.port or ""),
    }


@pytest.fixture
def django_setup(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[DjangoSetup]:
    """Django's settings for this test: jobs in its "default" database (a SQLite file in
    WAL mode with IMMEDIATE transactions; or a PostgreSQL database, the jobs in a schema of
    their own through the backend's ``schema`` option, since DATABASES cannot name one)."""
    from django.test.utils import override_settings

    from sqlitejobq.django.backend import close_queues

    options: dict[str, Any] = {"database": "default", "retry_backoff": 0, "max_attempts": 3}
    server: PgServer | None = None
    schema = ""
    if engine == "sqlite":
        path = str(tmp_path / "app.db")
        database = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
        target = path
    else:
        server = request.getfixturevalue("pg_server")
        schema = server.new_schema()
        database = _postgres_database(server.dsn)
        options["schema"] = schema
        target = with_schema(server.dsn, schema)
    databases = {"default": database}
    tasks = {
        "default": {
            "BACKEND": "sqlitejobq.django.TasksBackend",
            "QUEUES": QUEUES,
            "OPTIONS": options,
        }
    }
    overridden = override_settings(DATABASES=databases, TASKS=tasks)
    with warnings.catch_warnings():  # Django warns that connections do not follow: reset here
        warnings.filterwarnings("ignore", message="Overriding setting DATABASES")
        overridden.enable()
    _reset_connections()
    try:
        yield DjangoSetup(engine, databases, tasks, target)
    finally:
        close_queues()
        _reset_connections()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Overriding setting DATABASES")
            overridden.disable()
        _reset_connections()
        if server is not None:
            server.drop(schema)
