"""``TasksBackend``: Django's Tasks framework on a sqlitejobq queue, in a Django database
(enqueued in its transaction) or in a database of its own."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from ..errors import InvalidArgument, JobNotFound
from ..queue import Queue
from .compat import (
    BaseTaskBackend,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
)
from .options import Task as OptionsTask
from .results import django_task, task_result
from .worker import DjangoRegistry

#: OPTIONS that choose where the jobs are kept (one of them, not both).
WHERE_OPTIONS = frozenset({"database", "target"})
#: OPTIONS passed to the sqlitejobq Queue as they are.
QUEUE_OPTIONS = frozenset(
    {"schema", "max_attempts", "retry_backoff", "retry_backoff_max", "job_timeout", "max_snoozes"}
)
_queues: dict[tuple[Any, ...], tuple[int, Queue]] = {}
_queues_lock = threading.Lock()


class TasksBackend(BaseTaskBackend):
    """Django tasks as sqlitejobq jobs: task name the task's module path, payload its
    ``args`` and ``kwargs``, queue and priority the task's. The result id is the job id."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True
    #: Django's ``@task`` builds this class, passing it sqlitejobq's options (Django 6.1,
    #: the backport 0.12).
    task_class = OptionsTask

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = dict(self.options)
        unknown = sorted(set(options) - WHERE_OPTIONS - QUEUE_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {unknown}; "
                f"sqlitejobq takes {sorted(WHERE_OPTIONS | QUEUE_OPTIONS)}"
            )
        if "database" in options and "target" in options:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] names both a database "
                f"({options['database']!r}) and a target ({options['target']!r}): give one"
            )
        #: The Django database alias the jobs are kept in (None: a target of their own).
        self.database: str | None = None
        self._target: str | None = None
        if "target" in options:
            target = options["target"]
            if not isinstance(target, str | os.PathLike) or not os.fspath(target):
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['OPTIONS']['target'] must be a path or a "
                    f"postgresql:// URL, got {target!r}"
                )
            self._target = os.fspath(target)
        else:
            self.database = options.get("database", "default")
            database_target(self.database)  # refused now if it cannot hold jobs
        self.queue_options = {key: options[key] for key in QUEUE_OPTIONS if key in options}

    @property
    def target(self) -> str:
        """Where the jobs are: the ``target`` option, else the Django database's file or URL
        as it is now (Django's test runner points a database at its test copy)."""
        if self._target is not None:
            return self._target
        assert self.database is not None
        return database_target(self.database)

    @property
    def queue(self) -> Queue:
        """This process's sqlitejobq queue for the backend, opened on first use (again in a
        forked child: connections do not cross a fork)."""
        target = self.target
        key = (target, tuple(sorted(self.queue_options.items())))
        pid = os.getpid()
        with _queues_lock:
            found = _queues.get(key)
            if found is not None and found[0] == pid:
                return found[1]
            queue = Queue(
                target, registry=DjangoRegistry(), strict_tasks=False, **self.queue_options
            )
            _queues[key] = (pid, queue)
            return queue

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any]:
        """Check the task and its arguments, then add the job: in the Django database's
        transaction when the jobs live there and an atomic block is open."""
        self.validate_task(task)
        payload = {"args": normalize_json(list(args)), "kwargs": normalize_json(dict(kwargs))}
        delay = 0.0
        if task.run_after is not None:
            delay = max(0.0, task.run_after.timestamp() - time.time())
        connection = None
        if self.database is not None:
            django_connection = connections[self.database]
            if django_connection.in_atomic_block:
                django_connection.ensure_connection()
                connection = django_connection.connection
        unique_key = max_attempts = None
        if isinstance(task, OptionsTask):
            unique_key, max_attempts = task.unique_key, task.max_attempts
        queue = self.queue
        job_id = queue.enqueue(
            task.module_path,
            payload,
            queue=task.queue_name,
            priority=task.priority,
            delay=delay,
            max_attempts=max_attempts,
            unique_key=unique_key,
            connection=connection,
        )
        if unique_key is not None and connection is None:
            # the job may be one enqueued before, holding the key: its result as it stands
            existing = self.get_result(str(job_id))
            task_enqueued.send(type(self), task_result=existing)
            return existing
        now = datetime.now(UTC)
        result: TaskResult[Any] = TaskResult(
            task=task,
            id=str(job_id),
            status=TaskResultStatus("READY"),
            enqueued_at=now,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=payload["args"],
            kwargs=payload["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The task result of job ``result_id``; TaskResultDoesNotExist if there is no such
        job, or it is not a Django task's."""
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"no task result with id {result_id!r}") from None
        queue = self.queue
        try:
            job = queue.get(job_id)
            events = queue.timeline(job_id)
        except (JobNotFound, InvalidArgument):
            raise TaskResultDoesNotExist(f"no task result with id {result_id!r}") from None
        task = django_task(job.task)
        if task is None:
            raise TaskResultDoesNotExist(
                f"job {result_id} is of task {job.task!r}, not a Django task"
            )
        return task_result(self.alias, task, job, events)


def tasks_backend(alias: str) -> TasksBackend:
    """The ``TasksBackend`` at TASKS alias ``alias``; ImproperlyConfigured naming what is
    there instead."""
    from .compat import task_backends

    try:
        backend = task_backends[alias]
    except Exception as exc:
        raise ImproperlyConfigured(f"no TASKS alias {alias!r}: {exc}") from exc
    if not isinstance(backend, TasksBackend):
        raise ImproperlyConfigured(
            f"TASKS[{alias!r}] is a {type(backend).__name__}, not sqlitejobq.django.TasksBackend"
        )
    return backend


def database_target(alias: str) -> str:
    """The sqlitejobq target of Django database ``alias``: its SQLite file, or a
    ``postgresql://`` URL of its database."""
    from django.conf import settings

    databases: Mapping[str, Mapping[str, Any]] = settings.DATABASES
    if alias not in databases:
        raise ImproperlyConfigured(
            f"TASKS OPTIONS name database {alias!r}, which is not in DATABASES "
            f"({', '.join(sorted(databases)) or 'none'})"
        )
    config = databases[alias]
    engine = str(config.get("ENGINE", ""))
    name = config.get("NAME")
    if engine.endswith("sqlite3"):
        path = os.fspath(name) if name else ""
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}] NAME {name!r} is not a SQLite file: jobs need one "
                "that workers can open too (under Django's test runner, give the test "
                "database a file: DATABASES[...]['TEST'] = {'NAME': 'test.sqlite3'})"
            )
        return path
    if "postgresql" in engine:
        return _postgres_url(config)
    raise ImproperlyConfigured(
        f"DATABASES[{alias!r}] ENGINE {engine!r}: sqlitejobq keeps jobs in SQLite or "
        "PostgreSQL; use OPTIONS {'target': ...} for a database of their own"
    )


def _postgres_url(config: Mapping[str, Any]) -> str:
    """A ``postgresql://`` URL of a Django PostgreSQL database: a socket directory as HOST
    and libpq's options in ``OPTIONS`` (``sslmode``...) go in its query, as libpq reads
    them; Django's own options (``pool``, ``isolation_level``...) are not libpq's."""
    user = quote(str(config.get("USER") or ""), safe="")
    password = config.get("PASSWORD")
    if password:
        user += ":" + quote(str(password), safe="")
    host = str(config.get("HOST") or "")
    query: dict[str, str] = {}
    if host.startswith("/"):  # a Unix socket's directory
        query["host"], host = host, ""
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = config.get("PORT")
    netloc = (user + "@" if user else "") + host + (f":{port}" if port else "")
    options: Mapping[str, Any] = config.get("OPTIONS") or {}
    query.update({key: str(value) for key, value in options.items() if key in LIBPQ_OPTIONS})
    url = f"postgresql://{netloc}/{quote(str(config.get('NAME') or ''), safe='')}"
    return f"{url}?{urlencode(query, quote_via=quote)}" if query else url


#: The keywords of libpq a Django PostgreSQL database's OPTIONS may hold.
LIBPQ_OPTIONS = frozenset(
    {
        "application_name",
        "channel_binding",
        "connect_timeout",
        "gssencmode",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "options",
        "passfile",
        "service",
        "sslcert",
        "sslcrl",
        "sslkey",
        "sslmode",
        "sslpassword",
        "sslrootcert",
        "target_session_attrs",
        "tcp_user_timeout",
    }
)


def close_queues() -> None:
    """Close the queues this process opened for its backends (at shutdown, or between
    tests that change settings); the next use opens them again."""
    with _queues_lock:
        found = list(_queues.values())
        _queues.clear()
    pid = os.getpid()
    for owner, queue in found:
        if owner == pid:
            queue.close()
