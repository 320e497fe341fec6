"""The dashboard inside a Django site (``include("sqlitejobq.django.urls")``), on both
engines: who sees it, who may act, its own CSRF check under Django's, its mount point."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import include, path

from sqlitejobq import JobStatus
from tests.django import tasks
from tests.django.conftest import DjangoSetup, _reset_connections

pytestmark = pytest.mark.timeout(90)

urlpatterns = [
    path("jobs/", include("sqlitejobq.django.urls")),
    path("ops/", include("sqlitejobq.django.urls"), {"act_permission": "auth.change_user"}),
]


@pytest.fixture
def site(django_setup: DjangoSetup) -> Iterator[DjangoSetup]:
    """Django's auth, contenttypes and sessions tables in the test's database (on
    PostgreSQL in the jobs' schema, so that they go with it), and these URLs."""
    from django.test.utils import override_settings

    databases = django_setup.databases
    options = django_setup.tasks["default"]["OPTIONS"]
    if "schema" in options:
        database = dict(databases["default"])
        database["OPTIONS"] = {"options": f"-c search_path={options['schema']}"}
        databases = {"default": database}
    overridden = override_settings(
        DATABASES=databases,
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver", "jobs.example.com"],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overriding setting DATABASES")
        overridden.enable()
    _reset_connections()
    try:
        if "schema" in options:
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{options["schema"]}"')
        call_command("migrate", verbosity=0, interactive=False)
        yield django_setup
    finally:
        _reset_connections()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Overriding setting DATABASES")
            overridden.disable()
        _reset_connections()


def client_of(**flags: Any) -> Client:
    """A client logged in as a new user with these flags (``is_staff`` ...), Django's CSRF
    checks on."""
    from django.contrib.auth.models import User

    user = User.objects.create_user(f"user{User.objects.count()}", password="unused-secret")
    for name, value in flags.items():
        setattr(user, name, value)
    user.save()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def post(client: Client, url: str, form: dict[str, str], **extra: Any) -> Any:
    """A form posted as a browser posts it (urlencoded)."""
    body = urlencode(form)
    return client.post(url, body, content_type="application/x-www-form-urlencoded", **extra)


def failed_job(site: DjangoSetup) -> int:
    """A Django task's job that failed all its attempts."""
    result = tasks.explode.enqueue("down")
    call_command("sqlitejobq_worker", "--burst", "--concurrency", "1")
    job_id = int(result.id)
    assert site.queue().get(job_id).status is JobStatus.FAILED
    return job_id


def form_token(page: str, action: str) -> str:
    """The CSRF token of the form that posts to ``action``."""
    form = re.search(rf'<form[^>]*action="{re.escape(action)}"[^>]*>(.*?)</form>', page, flags=re.S)
    assert form is not None, f"no form to {action}"
    token = re.search(r'name="csrf" value="([^"]+)"', form[1])
    assert token is not None
    return token[1]


def test_an_anonymous_visitor_is_sent_to_the_login_page(site: DjangoSetup) -> None:
    answer = Client().get("/jobs/jobs?status=failed")
    assert answer.status_code == 302
    assert answer["Location"] == "/accounts/login/?next=/jobs/jobs%3Fstatus%3Dfailed"


def test_a_user_who_is_not_staff_is_refused(site: DjangoSetup) -> None:
    assert client_of().get("/jobs/").status_code == 403
    assert client_of(is_staff=True, is_active=False).get("/jobs/").status_code == 302


def test_staff_see_the_counts_and_a_django_task_s_job(site: DjangoSetup) -> None:
    result = tasks.add.enqueue(2, 3)
    client = client_of(is_staff=True)
    page = client.get("/jobs/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Jobs by queue and status" in text
    queued = '<a href="/jobs/jobs?queue=default&amp;status=queued">1</a>'  # under the mount
    assert queued in text, "one job queued on the default queue"
    assert "Content-Security-Policy" in page.headers
    job = client.get(f"/jobs/jobs/{result.id}")
    assert job.status_code == 200
    assert "tests.django.tasks.add" in job.content.decode()
    assert client.get("/jobs/static/dashboard.css").status_code == 200


def test_staff_who_may_not_act_see_it_read_only(site: DjangoSetup) -> None:
    job_id = failed_job(site)
    client = client_of(is_staff=True)
    page = client.get(f"/jobs/jobs/{job_id}").content.decode()
    assert "/retry" not in page and "/cancel" not in page and 'name="csrf"' not in page
    token = client.cookies["sqlitejobq_csrf"].value
    refused = post(client, f"/jobs/jobs/{job_id}/retry", {"csrf": token, "confirm": "yes"})
    assert refused.status_code == 403
    assert "read-only" in refused.content.decode()
    assert site.queue().get(job_id).status is JobStatus.FAILED


def test_a_superuser_retries_a_failed_job_with_the_dashboard_s_csrf_token(
    site: DjangoSetup,
) -> None:
    job_id = failed_job(site)
    client = client_of(is_staff=True, is_superuser=True)
    action = f"/jobs/jobs/{job_id}/retry"
    token = form_token(client.get(f"/jobs/jobs/{job_id}").content.decode(), action)
    assert post(client, action, {"confirm": "yes"}).status_code == 403  # no token
    form = {"csrf": token, "confirm": "yes"}
    assert post(client, action, form, HTTP_ORIGIN="https://evil.example").status_code == 403
    assert site.queue().get(job_id).status is JobStatus.FAILED

    done = post(client, action, form, HTTP_ORIGIN="http://testserver")
    assert done.status_code == 303
    assert done["Location"] == f"/jobs/jobs/{job_id}"
    assert site.queue().get(job_id).status is JobStatus.QUEUED
    assert "Retried." in client.get(done["Location"]).content.decode()


def test_a_user_with_the_act_permission_named_in_the_urls_may_act(site: DjangoSetup) -> None:
    from django.contrib.auth.models import Permission, User

    job_id = failed_job(site)
    client = client_of(is_staff=True)
    user = User.objects.get(username="user0")
    user.user_permissions.add(Permission.objects.get(codename="change_user"))
    assert "/retry" not in client.get(f"/jobs/jobs/{job_id}").content.decode()
    action = f"/ops/jobs/{job_id}/retry"
    token = form_token(client.get(f"/ops/jobs/{job_id}").content.decode(), action)
    done = post(client, action, {"csrf": token, "confirm": "yes"})
    assert done.status_code == 303 and done["Location"] == f"/ops/jobs/{job_id}"
    assert site.queue().get(job_id).status is JobStatus.QUEUED


def test_the_mount_point_and_the_host_are_django_s(site: DjangoSetup) -> None:
    client = client_of(is_staff=True)
    below = client.get("/jobs/", SCRIPT_NAME="/site")
    assert below.status_code == 200
    assert '<a href="/site/jobs/jobs">Jobs</a>' in below.content.decode()
    assert "Path=/site/jobs" in str(below.cookies["sqlitejobq_csrf"])
    assert client.get("/jobs/", HTTP_HOST="jobs.example.com").status_code == 200
    assert client.get("/jobs/", HTTP_HOST="evil.example").status_code == 400
