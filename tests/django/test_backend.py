"""sqlitejobq as Django's task backend, through Django's public API only, on both engines:
enqueue, results, the worker command, retries, transactions, what is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction

from tests.django import tasks
from tests.django.conftest import DjangoSetup

try:
    from django.tasks import TaskResultStatus, default_task_backend
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:
    from django_tasks import TaskResultStatus, default_task_backend
    from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
else:
    from django.tasks.exceptions import InvalidTask as InvalidTaskError

pytestmark = pytest.mark.timeout(90)


def work(*arguments: str) -> None:
    """A burst of ``manage.py sqlitejobq_worker`` in this process (one thread: in order)."""
    call_command("sqlitejobq_worker", "--burst", "--concurrency", "1", *arguments)


def test_a_task_enqueued_is_run_by_the_worker_command(django_setup: DjangoSetup) -> None:
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.args == [2, 3] and result.kwargs == {}
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY and fetched.enqueued_at is not None

    done = django_setup.run_worker("--burst")
    assert "1 completed" in done.stdout

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.errors == []
    assert len(result.worker_ids) == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert result.started_at.tzinfo is not None
    assert tasks.add.get_result(result.id).return_value == 5


def test_a_failing_task_is_retried_then_failed_with_one_error_per_attempt(
    django_setup: DjangoSetup,
) -> None:
    result = tasks.explode.enqueue("no luck")
    work()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert len(result.errors) == 3
    assert len(result.worker_ids) == 3
    for error in result.errors:
        assert error.exception_class_path == "tests.django.tasks.Boom"
        assert error.exception_class is tasks.Boom
        assert "no luck" in error.traceback and "Traceback" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        result.return_value  # noqa: B018


def test_a_builtin_exception_is_named_by_its_builtins_path(django_setup: DjangoSetup) -> None:
    result = tasks.add.enqueue(1, "a")
    work()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert {error.exception_class_path for error in result.errors} == {"builtins.TypeError"}


def test_takes_context_sees_the_attempt_number(django_setup: DjangoSetup) -> None:
    result = tasks.flaky.enqueue(succeed_on=3)
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"attempt": 3, "workers": 3}
    assert len(result.errors) == 2
    assert result.attempts == 3


def test_an_async_task_runs(django_setup: DjangoSetup) -> None:
    result = tasks.async_add.enqueue(20, 22)
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


def test_migrate_makes_the_job_tables_so_a_first_enqueue_in_a_transaction_is_quick(
    django_setup: DjangoSetup,
) -> None:
    """Left to the first enqueue, the tables would be made inside the view's transaction:
    on SQLite that waits for the write lock the transaction itself holds, then fails."""
    from django.contrib.auth.models import Group
    from django.db import connection

    from sqlitejobq.django.backend import close_queues

    call_command("migrate", verbosity=0)
    close_queues()  # as in a new web process: the queue is opened by the enqueue below
    with connection.cursor() as cursor:
        if django_setup.engine == "sqlite":
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlitejobq_jobs'")
        else:
            schema = django_setup.tasks["default"]["OPTIONS"]["schema"]
            cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [schema])
        assert cursor.fetchone()[0] >= 1
    name = f"writers-{uuid.uuid4().hex}"  # Django's tables on PostgreSQL outlive the test
    with transaction.atomic():
        Group.objects.create(name=name)
        result = tasks.add.enqueue(5, 6)
    work()
    assert tasks.add.get_result(result.id).return_value == 11
    assert Group.objects.filter(name=name).exists()


@pytest.mark.parametrize("name", ["report_progress", "async_report_progress"])
def test_a_task_reports_progress_on_its_job(django_setup: DjangoSetup, name: str) -> None:
    from sqlitejobq.django import current_job

    task = getattr(tasks, name)
    result = task.enqueue(4)
    assert current_job() is None  # outside a run
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value is True
    job = django_setup.queue().get(int(result.id))
    assert (job.progress, job.progress_message) == (1.0, "step 4 of 4")
    assert current_job() is None  # the worker's run left nothing behind


def test_a_snoozed_run_is_not_an_attempt(django_setup: DjangoSetup) -> None:
    tasks.CALLS.clear()
    result = tasks.snooze_once.enqueue()
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert len(result.worker_ids) == 1 and result.errors == []


def test_higher_priority_runs_first(django_setup: DjangoSetup) -> None:
    tasks.CALLS.clear()
    tasks.record.using(priority=-10).enqueue("low")
    tasks.record.using(priority=100).enqueue("high")
    tasks.record.enqueue("middle")
    work()
    assert tasks.CALLS == ["high", "middle", "low"]


def test_queue_and_priority_of_the_task_are_kept(django_setup: DjangoSetup) -> None:
    result = tasks.on_other.enqueue({"x": [1, 2]})
    work("--queue", "default")
    assert tasks.on_other.get_result(result.id).status == TaskResultStatus.READY
    work("--queue", "other")
    fetched = tasks.on_other.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == {"x": [1, 2]}
    assert fetched.task.queue_name == "other" and fetched.task.priority == 5


def test_run_after_in_the_future_is_not_run_by_a_burst(django_setup: DjangoSetup) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    result = tasks.add.using(run_after=later).enqueue(1, 1)
    work()
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert fetched.task.run_after is not None
    assert abs((fetched.task.run_after - later).total_seconds()) < 5


def test_enqueue_in_a_rolled_back_transaction_leaves_no_job(django_setup: DjangoSetup) -> None:
    committed_before = tasks.add.enqueue(0, 0)  # outside: its own transaction
    with transaction.atomic():
        committed = tasks.add.enqueue(1, 2)
    assert default_task_backend.get_result(committed.id).status == TaskResultStatus.READY

    with transaction.atomic():
        rolled_back = tasks.add.enqueue(3, 4)
        transaction.set_rollback(True)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(rolled_back.id)

    work()
    assert tasks.add.get_result(committed.id).return_value == 3
    assert tasks.add.get_result(committed_before.id).return_value == 0
    with django_setup.queue() as queue:
        assert sorted(job.id for job in queue.jobs()) == sorted(
            [int(committed_before.id), int(committed.id)]
        )


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: tasks.add.using(queue_name="nowhere").enqueue(1, 2), InvalidTaskError),
        (lambda: tasks.add.using(priority=101).enqueue(1, 2), InvalidTaskError),
        (lambda: tasks.add.using(priority=-101).enqueue(1, 2), InvalidTaskError),
        (lambda: tasks.add.using(run_after=datetime(2030, 1, 1)).enqueue(1, 2), InvalidTaskError),
        (lambda: tasks.add.enqueue(object(), 2), TypeError),
        (lambda: tasks.add.enqueue(1, b=b"\xff"), ValueError),
    ],
    ids=["unknown queue", "priority too high", "priority too low", "naive run_after",
         "unserializable argument", "undecodable bytes"],
)  # fmt: skip
def test_bad_input_is_refused_at_enqueue_and_nothing_stored(
    django_setup: DjangoSetup, make: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        make()
    tasks.add.enqueue(0, 0)  # the queue is open, and holds only this one
    with django_setup.queue() as queue:
        assert len(queue.jobs()) == 1


@pytest.mark.parametrize("result_id", ["999999", "not-a-number", "", "-1"])
def test_an_unknown_result_id_does_not_exist(django_setup: DjangoSetup, result_id: str) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result_id)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result_id)


def test_signals_are_sent_at_enqueue_start_and_finish(django_setup: DjangoSetup) -> None:
    seen: list[tuple[str, str, str]] = []

    def receiver(name: str) -> Any:
        def receive(sender: type, task_result: Any, **kwargs: Any) -> None:
            seen.append((name, task_result.id, str(task_result.status)))

        return receive

    receivers = {
        signal: receiver(name)
        for signal, name in ((task_enqueued, "enqueued"), (task_started, "started"),
                             (task_finished, "finished"))
    }  # fmt: skip
    for signal, receive in receivers.items():
        signal.connect(receive)
    try:
        good = tasks.add.enqueue(1, 1)
        bad = tasks.explode.enqueue("x")
        work()
    finally:
        for signal, receive in receivers.items():
            signal.disconnect(receive)
    assert [event for event in seen if event[1] == good.id] == [
        ("enqueued", good.id, "READY"),
        ("started", good.id, "RUNNING"),
        ("finished", good.id, "SUCCESSFUL"),
    ]
    # each attempt starts; only the last one, failed for good, finishes
    assert [event for event in seen if event[1] == bad.id] == [
        ("enqueued", bad.id, "READY"),
        ("started", bad.id, "RUNNING"),
        ("started", bad.id, "RUNNING"),
        ("started", bad.id, "RUNNING"),
        ("finished", bad.id, "FAILED"),
    ]


async def _aget(result_id: str) -> Any:
    return await tasks.add.aget_result(result_id)


def test_aget_result_and_arefresh(django_setup: DjangoSetup) -> None:
    import asyncio

    result = tasks.add.enqueue(4, 5)
    work()
    fetched = asyncio.run(_aget(result.id))
    assert fetched.return_value == 9
    asyncio.run(result.arefresh())
    assert result.return_value == 9
