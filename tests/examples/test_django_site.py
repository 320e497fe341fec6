"""The Django example site (examples/django_site) as its README runs it, on SQLite and on
PostgreSQL: ``manage.py migrate`` on a fresh database, a report posted to its view (the row
and its task in one transaction), ``manage.py sqlitejobq_worker --burst`` running the task,
the report and its task result read back, the job dashboard behind Django's login.

Every step is a process of the real project. The views are driven by Django's test
``Client`` in ``manage.py shell -c`` scripts, so that each process reads the site's own
settings (a SQLite file in the test's folder, or a PostgreSQL database of the test's own,
created for it and dropped after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from sqlitejobq import JobStatus, Queue

from ..conftest import ROOT, PgServer

pytest.importorskip("django")

MANAGE_PY = ROOT / "examples" / "django_site" / "manage.py"
#: How long one command of the site may take.
COMMAND_TIMEOUT = 60
pytestmark = pytest.mark.timeout(120)

#: What every ``shell -c`` script starts with: the test Client, its host allowed.
PRELUDE = """\
import json

from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()
"""


@dataclass
class Site:
    """The example site on one test's database."""

    env: dict[str, str]
    target: str  # the database, as sqlitejobq names it

    def manage(self, *arguments: str) -> str:
        """``python examples/django_site/manage.py ...`` from the repository root; its
        stdout (AssertionError with both outputs if it fails)."""
        done = subprocess.run(
            [sys.executable, str(MANAGE_PY), *arguments],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, f"manage.py {arguments[0]}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def script(self, code: str) -> Any:
        """Run ``code`` (after PRELUDE) in ``manage.py shell``: the JSON it printed last."""
        out = self.manage("shell", "--verbosity", "0", "-c", PRELUDE + textwrap.dedent(code))
        return json.loads(out.splitlines()[-1])

    def queue(self) -> Queue:
        """The site's job queue, opened apart from Django."""
        return Queue(self.target)


@pytest.fixture
def site(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    """The site on a fresh database, not migrated: a SQLite file, or a PostgreSQL database
    of its own (Django keeps its tables in the ``public`` schema, as do the jobs)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env["PYTHONPATH"] = str(ROOT / "src")  # this checkout's sqlitejobq
    if engine == "sqlite":
        path = str(tmp_path / "site.db")
        yield Site({**env, "DJANGO_SITE_SQLITE_PATH": path}, path)
        return
    import psycopg
    from psycopg import sql

    server: PgServer = request.getfixturevalue("pg_server")
    name = f"site_{uuid.uuid4().hex}"
    url = urlunsplit(urlsplit(server.dsn)._replace(path=f"/{name}", query=""))
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield Site({**env, "DJANGO_SITE_DATABASE_URL": url}, url)
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def migrated(site: Site) -> Site:
    site.manage("migrate", "--verbosity", "0")
    return site


def test_migrate_creates_the_tables_of_the_site_and_of_its_jobs(site: Site) -> None:
    out = site.manage("migrate")
    assert "Applying reports.0001_initial... OK" in out
    tables = site.script("""
        from django.db import connection

        print(json.dumps(connection.introspection.table_names()))
    """)
    assert {"reports_report", "auth_user", "django_session"} <= set(tables)
    # by sqlitejobq.django after Django's migrations: not left to the first enqueue
    assert "sqlitejobq_jobs" in tables
    assert "No migrations to apply." in site.manage("migrate")
    assert "No changes detected" in site.manage("makemigrations", "--check", "--dry-run")


def test_a_posted_report_is_counted_by_a_worker_and_shows_its_task_result(
    migrated: Site,
) -> None:
    posted = migrated.script("""
        client = Client()
        refused = client.post("/reports/", {"name": "too big", "limit": 10**9})
        response = client.post("/reports/", {"name": "first ten thousand", "limit": 10_000})
        created = response.json()
        before = client.get(created["url"]).json()
        print(json.dumps({
            "refused": [refused.status_code, list(refused.json()["errors"])],
            "status": response.status_code,
            "created": created,
            "before": before,
        }))
    """)
    assert posted["refused"] == [400, ["limit"]]
    assert posted["status"] == 202
    created = posted["created"]
    assert created["url"] == f"/reports/{created['report']}/"
    before = posted["before"]
    assert (before["status"], before["prime_count"]) == ("pending", None)
    assert before["task"]["id"] == created["task"]
    assert (before["task"]["status"], before["task"]["progress"]) == ("READY", 0.0)
    assert [job.id for job in migrated.queue().jobs()] == [int(created["task"])]

    out = migrated.manage("sqlitejobq_worker", "--burst")
    assert "worker finished: 1 completed, 0 failed" in out

    after = migrated.script(f"""
        print(json.dumps(Client().get("{created["url"]}").json()))
    """)
    assert after["status"] == "done"
    assert (after["prime_count"], after["largest_prime"]) == (1229, 9973)
    assert after["summary"] == "1,229 primes below 10,000, the largest 9,973"
    assert after["finished_at"] is not None
    task = after["task"]
    assert task["status"] == "SUCCESSFUL"
    assert task["return_value"] == {"report": created["report"], "primes": 1229, "largest": 9973}
    assert (task["progress"], task["progress_message"]) == (1.0, "1,229 primes below 10,000")
    assert (task["attempts"], task["errors"]) == (1, [])
    # and as sqlitejobq stores it
    job = migrated.queue().get(int(created["task"]))
    assert job.task == "reports.tasks.build_report"
    assert job.status is JobStatus.COMPLETED and job.result == task["return_value"]
    assert (job.progress, job.progress_message) == (1.0, "1,229 primes below 10,000")


def test_a_failure_after_the_enqueue_rolls_back_both_the_report_and_its_job(
    migrated: Site,
) -> None:
    outcome = migrated.script("""
        from unittest import mock

        from reports.models import Report

        save = Report.save
        enqueued = []

        def fail_to_note_the_task(report, *args, **kwargs):
            if kwargs.get("update_fields") == ["task_id"]:  # the view's write after enqueue
                enqueued.append(report.task_id)
                raise RuntimeError("the disk is full")
            return save(report, *args, **kwargs)

        with mock.patch.object(Report, "save", fail_to_note_the_task):
            try:
                Client().post("/reports/", {"name": "lost", "limit": 100})
                error = None
            except RuntimeError as exc:
                error = str(exc)
        print(json.dumps({
            "error": error, "enqueued": enqueued, "reports": Report.objects.count()
        }))
    """)
    assert outcome["error"] == "the disk is full"
    [task_id] = outcome["enqueued"]  # the job was added, in the transaction rolled back
    assert task_id.isdigit() and outcome["reports"] == 0
    assert migrated.queue().jobs() == []


def test_the_job_dashboard_is_for_staff_who_log_in(migrated: Site) -> None:
    seen = migrated.script("""
        from django.contrib.auth.models import User

        User.objects.create_user("ada", password="analytical engine", is_staff=True)
        User.objects.create_user("bob", password="not staff at all")
        anonymous = Client().get("/jobs/")
        bob = Client()
        bob.login(username="bob", password="not staff at all")
        staff = Client()
        login = staff.post(
            "/accounts/login/",
            {"username": "ada", "password": "analytical engine", "next": "/jobs/"},
        )
        dashboard = staff.get("/jobs/")
        print(json.dumps({
            "anonymous": [anonymous.status_code, anonymous["Location"]],
            "not staff": bob.get("/jobs/").status_code,
            "login": [login.status_code, login["Location"]],
            "staff": [dashboard.status_code, dashboard["Content-Type"]],
            "page": dashboard.content.decode(),
        }))
    """)
    assert seen["anonymous"] == [302, "/accounts/login/?next=/jobs/"]
    assert seen["not staff"] == 403
    assert seen["login"] == [302, "/jobs/"]
    assert seen["staff"][0] == 200 and seen["staff"][1].startswith("text/html")
    assert "sqlitejobq" in seen["page"]
