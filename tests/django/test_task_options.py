"""sqlitejobq's options on Django tasks, on both engines: retries and backoff, timeouts,
limits, unique keys and schedules declared on ``@task``; what is refused at declaration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.core.management import call_command
from django.db import transaction

from sqlitejobq.django import Task, task
from sqlitejobq.django.backend import tasks_backend
from sqlitejobq.django.compat import TASK_CLASS_OPTIONS
from sqlitejobq.django.worker import DjangoRegistry
from tests.conftest import ROOT
from tests.django import tasks
from tests.django.conftest import WORKER_TIMEOUT, DjangoSetup

try:
    from django.tasks import TaskResultStatus
    from django.tasks import task as django_task
    from django.tasks.exceptions import InvalidTask as InvalidTaskError

    DJANGO_TASKS = "django.tasks"
except ImportError:
    from django_tasks import TaskResultStatus
    from django_tasks import task as django_task
    from django_tasks.exceptions import InvalidTaskError

    DJANGO_TASKS = "django_tasks"

pytestmark = pytest.mark.timeout(90)


def work(*arguments: str) -> None:
    """A burst of ``manage.py sqlitejobq_worker`` in this process."""
    call_command("sqlitejobq_worker", "--burst", "--concurrency", "1", *arguments)


def unplanned() -> None:
    """A module-level function for declarations that are refused."""


def test_max_attempts_and_backoff_of_the_task_override_the_backend(
    django_setup: DjangoSetup,
) -> None:
    tasks.CALLS.clear()
    result = tasks.stubborn.enqueue(3)  # the backend allows 3 attempts; the task 5
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 4
    assert len(result.errors) == 3 and len(result.worker_ids) == 4
    assert django_setup.queue().get(int(result.id)).max_attempts == 5


def test_max_attempts_of_one_enqueue_through_using(django_setup: DjangoSetup) -> None:
    tasks.CALLS.clear()
    result = tasks.stubborn.using(max_attempts=2).enqueue(5)
    work()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert len(result.worker_ids) == 2 and tasks.CALLS == ["stubborn", "stubborn"]


def test_a_task_past_its_timeout_fails_with_job_timeout(django_setup: DjangoSetup) -> None:
    result = tasks.overrun.enqueue()
    work()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in result.errors] == [
        "sqlitejobq.errors.JobTimeout"
    ]
    assert "timed out after 0.2s" in result.errors[0].traceback


def test_a_limit_holds_across_the_worker_threads(django_setup: DjangoSetup) -> None:
    tasks.SPANS.clear()
    results = [tasks.one_at_a_time.enqueue(f"job {n}") for n in range(6)]
    work("--concurrency", "4")
    for result in results:
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL
    running = most = 0
    for kind, _, _ in sorted(tasks.SPANS, key=lambda span: span[2]):
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most == 1 and len(tasks.SPANS) == 12


def test_the_worker_knows_the_tasks_of_installed_apps_before_its_first_claim(
    django_setup: DjangoSetup,
) -> None:
    registry = tasks_backend("default").queue.registry
    assert isinstance(registry, DjangoRegistry)
    assert registry.discover("default") > 0
    assert registry.options("tests.django.tasks.one_at_a_time").limit == 1
    assert registry.options("tests.django.tasks.stubborn").max_attempts == 5
    assert registry.discover("default") == 0  # each once


def test_a_unique_key_adds_one_job_while_one_holds_it(django_setup: DjangoSetup) -> None:
    keyed = tasks.one_at_a_time.using(unique_key="nightly")
    first = keyed.enqueue("first")
    again = keyed.enqueue("again")
    assert again.id == first.id and again.args == ["first"]
    with transaction.atomic():  # in Django's transaction too
        inside = keyed.enqueue("inside")
    assert inside.id == first.id
    work()
    assert keyed.get_result(first.id).status == TaskResultStatus.SUCCESSFUL
    later = keyed.enqueue("later")  # the first one finished: the key is free
    assert later.id != first.id and later.status == TaskResultStatus.READY
    assert len(django_setup.queue().jobs(task="tests.django.tasks.one_at_a_time")) == 2


def test_a_scheduled_task_is_enqueued_by_the_worker(django_setup: DjangoSetup) -> None:
    """The periodic app's ``tick`` (every second) run by two worker processes: jobs appear
    and complete, with no arguments."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.django.settings",
        "SQLITEJOBQ_DJANGO_TEST": json.dumps(
            {
                "DATABASES": django_setup.databases,
                "TASKS": django_setup.tasks,
                "APPS": ["tests.django.periodic"],
            }
        ),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "django", "sqlitejobq_worker", "--processes", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    queue = django_setup.queue()
    name = "tests.django.periodic.tasks.tick"
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while len(queue.jobs(task=name, status="completed")) < 2:
            assert worker.poll() is None, worker.communicate()[0]
            assert time.monotonic() < deadline, "the schedule did not fire twice"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=WORKER_TIMEOUT)
    assert worker.returncode == 0, out
    done = queue.jobs(task=name, status="completed")
    assert {job.result for job in done} == {"tick"}
    assert {json.dumps(job.payload) for job in done} == {'{"args": [], "kwargs": {}}'}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": -1}, "timeout"),
        ({"rate": "often"}, "rate"),
        ({"limit_key": "tenant"}, "limit_key"),
        ({"schedule": "not a cron"}, "cron"),
        ({"missed": "all"}, "missed"),
    ],
)
def test_bad_options_are_refused_when_the_task_is_declared(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidTaskError, match=message) as caught:
        task(**options)(unplanned)  # type: ignore[arg-type]
    assert "tests.django.test_task_options.unplanned" in str(caught.value)


def test_using_takes_the_options_of_one_enqueue_only() -> None:
    with pytest.raises(TypeError, match="did you mean 'unique_key'"):
        tasks.one_at_a_time.using(unique="x")
    with pytest.raises(TypeError, match="'limit'"):
        tasks.one_at_a_time.using(limit=2)
    with pytest.raises(InvalidTaskError, match="unique_key"):
        tasks.one_at_a_time.using(unique_key="")
    copy = tasks.one_at_a_time.using(priority=3, unique_key="k")
    assert (copy.priority, copy.unique_key, copy.limit) == (3, "k", 1)


@pytest.mark.skipif(not TASK_CLASS_OPTIONS, reason="this Django's @task passes no options")
def test_djangos_own_task_decorator_takes_the_options() -> None:
    declared = django_task(max_attempts=4, timeout=30)(unplanned)  # type: ignore[call-arg]
    assert isinstance(declared, Task)
    assert (declared.max_attempts, declared.timeout) == (4, 30)


def test_under_another_backend_the_task_runs_its_options_ignored() -> None:
    from django.test.utils import override_settings

    immediate = {"default": {"BACKEND": f"{DJANGO_TASKS}.backends.immediate.ImmediateBackend"}}
    tasks.CALLS.clear()
    with override_settings(TASKS=immediate):
        result = tasks.stubborn.using(unique_key="k").enqueue(0)
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 1
    assert tasks.CALLS == ["stubborn"]
