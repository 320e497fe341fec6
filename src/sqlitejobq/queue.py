"""The public API: a job queue in a SQLite file or a PostgreSQL database."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, Unpack, overload

from . import validation
from .backends import open_backend
from .backends.base import (
    FINISHED_STATUSES,
    Backend,
    Capabilities,
    JobChange,
    JobRecord,
    NewJob,
)
from .errors import (
    DuplicateJob,
    InvalidArgument,
    InvalidArgumentType,
    JobFailed,
    JobNotFound,
    PayloadError,
    UnknownTask,
)
from .handles import TaskHandle, payload_schema
from .job import (
    Batch,
    BatchProgress,
    Job,
    JobEvent,
    JobStatus,
    LimitInfo,
    QueueStats,
    ScheduleInfo,
    ThroughputPoint,
    WorkerInfo,
)
from .lifecycle import STATUS, JobLifecycle, Policy
from .limits import limit_key_of, rule_for, task_of_limit_key
from .options import (
    BatchKwargs,
    EnqueueKwargs,
    EnqueueOptions,
    ScheduleKwargs,
    TaskKwargs,
    TaskOptions,
)
from .payload import encode_json
from .registry import Registry, Schedule
from .scheduler import every

log = logging.getLogger("sqlitejobq")

P = ParamSpec("P")
R = TypeVar("R")
#: A task named by its name, or by the handle its decorator returned.
TaskRef = str | TaskHandle[..., Any]

#: A worker is counted as alive while it reported within this many seconds.
WORKER_ALIVE_WINDOW = 60.0
#: ``retry_failed`` retries this many jobs per transaction.
RETRY_CHUNK = 1000
#: The longest span ``throughput`` covers: the week the workers' reports are kept.
THROUGHPUT_MINUTES = 7 * 24 * 60


class Queue:
    """A job queue, safe to share between threads: in a SQLite file, or in a PostgreSQL
    database when ``target`` is a ``postgresql://`` URL (the ``postgres`` extra).

    Opening it creates the file (or schema) if needed and applies the library's migrations;
    a database it refuses (not a database, another app's tables named like the library's, a
    newer schema) is left exactly as it was. Each thread uses its own connection (SQLite) or
    one from a pool (PostgreSQL); a forked child opens new ones.

    ``job_timeout`` is the longest a job may run when its task sets no ``timeout`` (None:
    no limit). ``clock`` stamps due times and leases (tests steer it); by default SQLite uses
    this process's clock and PostgreSQL the database server's, shared by every host.
    With ``registry`` holding handlers, a task name it does not know is refused at enqueue
    (UnknownTask, naming the closest known name); ``strict_tasks=False`` lets a process
    enqueue tasks that only other processes handle. Handles from ``@registry.task`` enqueue
    on this queue while it is the only open one with that registry.
    Engine options go to the engine: SQLite takes ``synchronous``, ``busy_timeout``,
    ``journal_size_limit`` and ``allow_network_filesystem``; PostgreSQL takes ``schema``,
    ``pool_size``, ``poll_only``, ``connect_timeout``, ``lock_timeout``, ``notify_debounce``.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        registry: Registry | None = None,
        strict_tasks: bool = True,
        retry_timeout: float = 30.0,
        max_attempts: int = 3,
        retry_backoff: float | Sequence[float] = 1.0,
        retry_backoff_max: float = 600.0,
        max_payload_bytes: int = 1024 * 1024,
        job_timeout: float | None = None,
        max_snoozes: int = 100,
        clock: Callable[[], float] | None = None,
        **engine_options: Any,
    ) -> None:
        if registry is not None and not isinstance(registry, Registry):
            raise InvalidArgumentType(f"registry must be a Registry, got {type(registry).__name__}")
        if clock is not None and not callable(clock):
            raise InvalidArgumentType("clock must be a callable returning epoch seconds")
        if not isinstance(strict_tasks, bool):
            raise InvalidArgumentType(
                f"strict_tasks must be a bool, got {type(strict_tasks).__name__}: {strict_tasks!r}"
            )
        if job_timeout is not None:
            job_timeout = validation.seconds(job_timeout, "job_timeout", positive=True)
        policy = Policy(
            max_attempts=validation.integer(max_attempts, "max_attempts", minimum=1),
            retry_backoff=validation.backoff(retry_backoff, "retry_backoff"),
            retry_backoff_max=validation.seconds(retry_backoff_max, "retry_backoff_max"),
            max_payload_bytes=validation.integer(max_payload_bytes, "max_payload_bytes", minimum=2),
            max_snoozes=validation.integer(max_snoozes, "max_snoozes", minimum=0),
            job_timeout=job_timeout,
        )
        self.registry = registry if registry is not None else Registry()
        #: Refuse task names the registry does not know (when it knows any).
        self.strict_tasks = strict_tasks
        self.backend: Backend = open_backend(
            target,
            retry_timeout=validation.seconds(retry_timeout, "retry_timeout", positive=True),
            clock=clock,
            options=engine_options,
        )
        #: The clock that stamps due times and leases (the engine's, unless one was given).
        self.clock: Callable[[], float] = clock or self.backend.now
        self.lifecycle = JobLifecycle(self.backend, self.registry, policy)
        try:
            self.backend.open()
        except BaseException:
            self.backend.close()
            raise
        self.registry._attach(self)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """The database: the SQLite file, or the PostgreSQL URL without its password."""
        return self.backend.target

    @property
    def path(self) -> str:
        """The database file (SQLite), or the URL without its password (PostgreSQL)."""
        return self.backend.target

    @property
    def capabilities(self) -> Capabilities:
        """What the engine can do (a file on this host, the database's clock, a listener)."""
        return self.backend.capabilities

    @property
    def settings(self) -> Any:
        """The engine's settings (connection, retry bound, engine options)."""
        return getattr(self.backend, "settings", None)

    @property
    def max_attempts(self) -> int:
        """Runs of a job before it ends failed, when neither its task nor its enqueue says."""
        return self.lifecycle.policy.max_attempts

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload or result, as JSON text."""
        return self.lifecycle.policy.max_payload_bytes

    @property
    def job_timeout(self) -> float | None:
        """How long a job may run when its task sets no ``timeout`` (None: no limit)."""
        return self.lifecycle.policy.job_timeout

    def close(self) -> None:
        """Close this process's connections. Safe to call twice."""
        self.backend.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Queue({self.target!r})"

    @overload
    def task(self, name: Callable[P, R], /) -> TaskHandle[P, R]: ...

    @overload
    def task(
        self, name: str | None = None, /, **options: Unpack[TaskKwargs]
    ) -> Callable[[Callable[P, R]], TaskHandle[P, R]]: ...

    def task(
        self, name: str | Callable[P, R] | None = None, /, **options: Unpack[TaskKwargs]
    ) -> TaskHandle[P, R] | Callable[[Callable[P, R]], TaskHandle[P, R]]:
        """Register a handler on this queue's registry; same arguments as Registry.task.
        The handle returned enqueues on this queue."""
        if callable(name):
            return self.registry.task(name)._bind(self)
        decorate = self.registry.task(name, **options)

        def bound(function: Callable[P, R]) -> TaskHandle[P, R]:
            return decorate(function)._bind(self)

        return bound

    def schedule(
        self, task: str, every: str | float, **options: Unpack[ScheduleKwargs]
    ) -> Schedule:
        """Declare a periodic job on this queue's registry; see ``Registry.schedule``."""
        return self.registry.schedule(task, every, **options)

    def limit_queue(
        self, queue: str, *, limit: int | None = None, rate: str | tuple[int, float] | None = None
    ) -> None:
        """Hold every job of a named queue to limits; see ``Registry.limit_queue``."""
        self.registry.limit_queue(queue, limit=limit, rate=rate)

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule declared in code here or recorded by a worker, with its last slot,
        the status of the job it last created and, for those declared here, the next slot."""
        recorded = {row[0]: row for row in self.backend.schedules()}
        declared = {schedule.name: schedule for schedule in self.registry.schedules}
        now = self.clock()
        infos = []
        for name in sorted(set(recorded) | set(declared)):
            row = recorded.get(name)
            schedule = declared.get(name)
            if schedule is not None:
                task, how_often = schedule.task, every(schedule.trigger)
                zone, upcoming = schedule.trigger.timezone, schedule.trigger.next_after(now)
            else:
                task, how_often, zone, upcoming = row[1], row[2], row[3], None  # type: ignore[index]
            infos.append(
                ScheduleInfo(
                    name=name,
                    task=task,
                    every=how_often,
                    timezone=zone,
                    last_slot=None if row is None or row[4] is None else float(row[4]),
                    last_job_id=None if row is None or row[5] is None else int(row[5]),
                    last_status=None if row is None else row[6],
                    next_slot=upcoming,
                    declared_at=None if row is None else float(row[7]),
                )
            )
        return infos

    def limits(self) -> list[LimitInfo]:
        """The limit keys with queued or processing jobs: how many of each, and the task's
        limits as declared here (for ``status``)."""
        rules = self.registry.limit_rules()
        infos = []
        for key, queued, processing, starts in self.backend.limit_usage(200):
            task = task_of_limit_key(key)
            rule = rules.get(task)
            rate = None
            if rule is not None and rule.rate is not None:
                rate = f"{rule.rate[0]}/{rule.rate[1]:g}s"
            infos.append(
                LimitInfo(
                    key=key,
                    task=task,
                    limit=None if rule is None else rule.limit,
                    rate=rate,
                    queued=queued,
                    processing=processing,
                    starts_last_hour=starts,
                )
            )
        return infos

    # --- enqueue --------------------------------------------------------------------------

    def enqueue(self, task: TaskRef, payload: Any = None, **options: Unpack[EnqueueKwargs]) -> int:
        """Add one job of ``task`` (a name, or a handle from ``@queue.task``); returns its id.

        With ``unique_key``, if a queued or processing job already holds the key, nothing
        is added and that job's id is returned. With ``depends_on`` (job ids), the job waits
        (status ``waiting``) until every one of them has finished; if one fails or is
        cancelled, the job is cancelled, or with ``on_dependency_failure="run"`` it runs
        anyway. With ``connection``, the job is written in the caller's open transaction (a
        ``sqlite3.Connection`` on the same file, or a psycopg connection to the same
        database) and exists once the caller commits.
        """
        checked = EnqueueOptions.of(options)
        job = self._job_maker(task, checked)(payload)
        _, ids = self.backend.insert_jobs(
            [job], batch_name=None, make_batch=False, connection=checked.connection
        )
        if log.isEnabledFor(logging.INFO):
            log.info("job %d %s queued in %r", ids[0], job.task, job.queue)
        return ids[0]

    def enqueue_many(
        self, task: TaskRef, payloads: Iterable[Any], **options: Unpack[EnqueueKwargs]
    ) -> list[int]:
        """Add one job per payload in one transaction; the options apply to every job."""
        return self._enqueue_all(task, payloads, EnqueueOptions.of(options))[1]

    def enqueue_batch(
        self, task: TaskRef, payloads: Iterable[Any], **options: Unpack[BatchKwargs]
    ) -> Batch:
        """Add jobs as one batch, followed with ``batch_progress``.

        With ``then`` (a task name or handle), one more job is enqueued in the same
        transaction: it runs once every job of the batch has finished, whatever their
        outcome, with ``then_payload`` (a dict, default empty) plus ``"batch_id"``; its id
        is the batch's ``then_id``.
        """
        name = options.pop("name", None)
        then = options.pop("then", None)
        then_payload = options.pop("then_payload", None)
        follow = None
        if then is not None:
            make_then = self._job_maker(then, _THEN_OPTIONS)
            extra = {} if then_payload is None else then_payload
            if not isinstance(extra, dict):
                raise InvalidArgumentType(
                    f"then_payload must be a dict (it gets the batch_id), got "
                    f"{type(extra).__name__}"
                )
            make_then({**extra, "batch_id": 0})  # refuse a bad payload before any write

            def follow(batch_id: int, ids: list[int]) -> NewJob:
                return make_then({**extra, "batch_id": batch_id})._replace(
                    depends_on=tuple(ids), dependency_policy="run"
                )

        batch_id, ids = self._enqueue_all(
            task,
            payloads,
            EnqueueOptions.of(options),
            batch_name=validation.optional_text(name, "batch name", max_length=200),
            make_batch=True,
            then=follow,
        )
        assert batch_id is not None
        then_id = ids.pop() if follow is not None else None
        return Batch(batch_id, ids, then_id)

    def new_job(self, task: TaskRef, payload: Any, options: EnqueueOptions) -> NewJob:
        """The job ``enqueue`` would insert with ``options`` (checked: ``EnqueueOptions.of``),
        not inserted: for the scheduler and AsyncQueue, which insert jobs their own way."""
        return self._job_maker(task, options)(payload)

    def _enqueue_all(
        self,
        task: TaskRef,
        payloads: Iterable[Any],
        options: EnqueueOptions,
        *,
        batch_name: str | None = None,
        make_batch: bool = False,
        then: Callable[[int, list[int]], NewJob] | None = None,
    ) -> tuple[int | None, list[int]]:
        if isinstance(payloads, str | bytes | dict) or not isinstance(payloads, Iterable):
            raise InvalidArgumentType(
                f"payloads must be a list (or other iterable) of payloads, "
                f"got {type(payloads).__name__}"
            )
        make_job = self._job_maker(task, options)
        jobs = []
        for index, payload in enumerate(payloads):
            try:
                jobs.append(make_job(payload))
            except PayloadError as exc:
                raise PayloadError(f"payload #{index}: {exc}") from None
        if not jobs and not make_batch:
            return None, []
        batch_id, ids = self.backend.insert_jobs(
            jobs,
            batch_name=batch_name,
            make_batch=make_batch,
            connection=options.connection,
            then=then,
        )
        own = ids[:-1] if then is not None else ids  # the follow-up is not one of them
        if own and log.isEnabledFor(logging.INFO):
            where = f" as batch {batch_id}" if batch_id is not None else ""
            log.info(
                "jobs %d..%d %s queued in %r%s (%d jobs)",
                min(own),
                max(own),
                jobs[0].task,
                jobs[0].queue,
                where,
                len(own),
            )
        if then is not None and log.isEnabledFor(logging.INFO):
            log.info("job %d queued to run when batch %s has finished", ids[-1], batch_id)
        return batch_id, ids

    def _job_maker(self, task: TaskRef, options: EnqueueOptions) -> Callable[[Any], NewJob]:
        """Resolve the options (checked) against the task's and the queue's once; the function
        returned encodes one payload into a job."""
        name, defaults = self._task_options(task)
        queue_name, priority, attempts = options.queue, options.priority, options.max_attempts
        if queue_name is None:
            queue_name = validation.name(defaults.queue or "default", "queue")
        if priority is None:
            priority = validation.integer(defaults.priority or 0, "priority")
        if attempts is None:
            attempts = defaults.max_attempts or self.max_attempts
            attempts = validation.integer(attempts, "max_attempts", minimum=1)
        limit = self.max_payload_bytes
        rule = rule_for(self.registry.limit_rules(), name, queue_name)
        schema = None if defaults.payload_type is None else payload_schema(defaults.payload_type)
        delay, unique_key = options.delay, options.unique_key
        depends_on, policy = options.depends_on, options.on_dependency_failure
        expires = options.expires_in()

        def make_job(payload: Any) -> NewJob:
            if schema is not None:
                payload = schema.encode(payload, name)
            limit_key = None
            if rule is not None:
                limit_key = limit_key_of(rule, payload)
                if limit_key is None:
                    raise PayloadError(
                        f"task {name!r} is limited per payload field {rule.key!r}: the payload "
                        f"must be an object whose {rule.key!r} is text or an int of 1-200 "
                        f"characters, got {str(payload)[:200]}"
                    )
            encoded = encode_json(payload, "payload", limit)
            # by position, in NewJob's field order: this runs once per job
            return NewJob(
                name,
                queue_name,
                encoded,
                priority,
                delay,
                attempts,
                unique_key,
                limit_key,
                depends_on,
                policy,
                expires,
            )

        return make_job

    def _task_options(self, task: TaskRef) -> tuple[str, TaskOptions]:
        """The name and options of ``task``. A name the registry does not know is refused
        (UnknownTask) when the registry knows some and ``strict_tasks`` holds."""
        if isinstance(task, TaskHandle):
            known = task.name in self.registry  # the queue's own view of the task wins
            return task.name, self.registry.options(task.name) if known else task.options
        if callable(task):
            raise InvalidArgumentType(
                f"task must be a task name or the handle @queue.task returned, got the "
                f"unregistered callable {task!r}"
            )
        name = validation.name(task, "task")
        if self.strict_tasks and name not in self.registry and len(self.registry):
            close = self.registry._closest(name)
            raise UnknownTask(
                f"unknown task {name!r}"
                + (f": did you mean {close!r}? " if close else " ")
                + f"(registered: {self.registry._known()}). Nothing was enqueued; a process "
                f"that enqueues tasks only other processes handle opens its Queue with "
                f"strict_tasks=False"
            )
        return name, self.registry.options(name)

    # --- the worker's cycle (public for custom workers) -----------------------------------

    def claim(
        self,
        worker_id: str,
        queues: Sequence[str] | None = None,
        limit: int = 1,
        lease: float = 30.0,
    ) -> list[Job]:
        """Atomically take up to ``limit`` due jobs (highest priority, then oldest first).

        Each claimed job is ``processing``, its attempts counted, and leased to
        ``worker_id`` for ``lease`` seconds; renew it with heartbeat or set_progress.
        """
        return self.lifecycle.claim(self.lifecycle.claim_request(worker_id, queues, limit, lease))

    def complete(self, job: Job, result: Any = None) -> bool:
        """Record success. False (and no change) if this claim no longer owns the job."""
        return self.complete_many([(job, result)])[0]

    def complete_many(self, outcomes: Sequence[tuple[Job, Any]]) -> list[bool]:
        """Record several successes in one transaction; one bool per job as in complete."""
        return self.lifecycle.finish(
            [(job, self.lifecycle.complete_step(job, result)) for job, result in outcomes]
        )

    def fail(
        self,
        job: Job,
        error: str | BaseException,
        *,
        traceback: str | None = None,
        retry: bool = True,
        retry_in: float | None = None,
    ) -> bool:
        """Record a failed attempt: back to the queue with backoff while attempts remain
        (and ``retry`` is true), else ``failed`` keeping the error and traceback.

        False (and no change) if this claim no longer owns the job.
        """
        step = self.lifecycle.fail_step(job, error, traceback, retry, retry_in)
        return self.lifecycle.finish([(job, step)])[0]

    def heartbeat(self, job: Job, lease: float | None = None) -> bool:
        """Extend the job's lease (by its claim's lease unless given). False if this claim
        no longer owns the job; JobTimeout once the job has run past its timeout."""
        return self.lifecycle.heartbeat(job, lease)

    def set_progress(self, job: Job, progress: float, message: str | None = None) -> bool:
        """Record progress (0.0..1.0) and an optional message; also extends the lease.
        Writes of one job are spaced at least 0.25 s apart (a report in between is kept for
        the next write); JobTimeout once the job has run past its timeout."""
        return self.lifecycle.set_progress(job, progress, message)

    def heartbeat_many(self, jobs: Sequence[Job]) -> list[bool]:
        """Extend the leases of several running jobs in one transaction (what workers do)."""
        return self.lifecycle.heartbeat_many(jobs)

    def release(self, jobs: Sequence[Job]) -> int:
        """Return claimed jobs that never started to the queue, their attempt not counted."""
        return self.lifecycle.release(jobs)

    def abandon(self, jobs: Sequence[Job], error: str) -> list[bool]:
        """End runs that will not report (a worker stopping hard): each counts as an attempt,
        back to the queue while attempts remain, else failed."""
        return self.lifecycle.abandon(jobs, error)

    def rescue_expired(self, renew: Sequence[Job] = ()) -> list[int]:
        """Take back jobs whose lease expired (their worker died or hung): to ``queued`` while
        attempts remain, else ``failed``. Workers call this; it returns the job ids.
        ``renew``: the caller's own running jobs, whose leases are extended first."""
        return self.lifecycle.rescue_expired(renew)

    def backoff(self, task: str, attempts: int) -> float:
        """Seconds before the retry that follows failed attempt number ``attempts``."""
        return self.lifecycle.backoff(task, attempts)

    def next_lease_expiry(self) -> float | None:
        """When the earliest lease of a processing job ends (None if nothing runs)."""
        return self.backend.next_lease_expiry()[0]

    def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        """The earliest ``run_at`` of a queued job in ``queues`` (None: every queue), paused
        queues left out (None: no such job)."""
        return self.backend.next_run_at(validation.names(queues, "queues"))[0]

    def data_version(self) -> int:
        """A number that changes when other processes may have committed new work."""
        return self.backend.waker.look()

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job (read from the database)."""
        return self.lifecycle.cancel_requested(job_id)

    # --- operator actions -----------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Cancel a job: a queued one becomes ``cancelled`` at once; a processing one is
        marked so its handler sees ``job.cancelled`` and its outcome is ``cancelled``.
        False if the job had already finished."""
        validation.integer(job_id, "job_id")
        status = self.backend.cancel(job_id)
        if status is None:
            self._status_of(job_id)
            return False
        log.info(
            "job %d %s",
            job_id,
            "cancelled" if status == "cancelled" else "cancel requested while processing",
        )
        return True

    def update(
        self,
        job_id: int,
        *,
        priority: int | None = None,
        queue: str | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
    ) -> Job:
        """Change a job that has not started: its ``priority``, its ``queue``, or when it is
        due (``delay`` seconds from now, or ``run_at``, an aware datetime); the job as it is
        then. Only a queued or waiting job changes (a waiting job's due time is when its
        dependencies finish: it takes no ``delay`` or ``run_at``); any other is refused with
        InvalidArgument saying its status, nothing changed. JobNotFound if there is none."""
        validation.integer(job_id, "job_id")
        parts = []
        if priority is not None:
            priority = validation.integer(priority, "priority")
            parts.append(f"priority {priority}")
        if queue is not None:
            queue = validation.name(queue, "queue")
            parts.append(f"queue {queue!r}")
        if delay is not None and run_at is not None:
            raise InvalidArgument("give delay or run_at, not both")
        due_at = None
        if delay is not None:
            delay = validation.seconds(delay, "delay")
            parts.append(f"due in {delay:g}s")
        elif run_at is not None:
            if not isinstance(run_at, datetime):
                raise InvalidArgumentType(
                    f"run_at must be an aware datetime, got {type(run_at).__name__}"
                )
            if run_at.tzinfo is None or run_at.utcoffset() is None:
                raise InvalidArgument(f"run_at must be an aware datetime, got naive {run_at}")
            due_at = run_at.timestamp()
            parts.append(f"due at {run_at.isoformat()}")
        if not parts:
            raise InvalidArgument("update needs priority, queue, delay or run_at to change")
        if (delay is not None or due_at is not None) and self.get(job_id).status is (
            JobStatus.WAITING
        ):
            raise InvalidArgument(
                f"job {job_id} is waiting for its dependencies: it is due when they finish, "
                "so it takes no delay or run_at"
            )
        change = JobChange(priority, queue, delay, due_at, "changed: " + ", ".join(parts))
        status = self.backend.update_job(job_id, change)
        if status is None:
            raise JobNotFound(f"no job with id {job_id}")
        if status not in ("queued", "waiting"):
            raise InvalidArgument(
                f"job {job_id} is {status}: only a queued or waiting job can be changed"
            )
        log.info("job %d %s", job_id, change.note)
        return self.get(job_id)

    def retry(self, job_id: int) -> bool:
        """Put a failed or cancelled job back in the queue with fresh attempts.

        False if the job is not failed or cancelled. DuplicateJob if its unique key is
        held by another active job.
        """
        validation.integer(job_id, "job_id")
        done = self.backend.retry([job_id])
        if not done:
            self._status_of(job_id)
            return False
        log.info("job %d queued again (retry)", job_id)
        return True

    def retry_failed(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        batch_id: int | None = None,
        error: str | None = None,
    ) -> list[int]:
        """Retry the failed jobs matching every filter given (as ``jobs``; none: every failed
        job), a thousand per transaction; returns the ids re-queued. A job whose unique key
        another active job holds stays failed (logged)."""
        filters = _filters(queue, task, batch_id, error)
        requeued: list[int] = []
        after = 0
        while True:
            ids = self.backend.failed_ids(filters, after, RETRY_CHUNK)
            if not ids:
                break
            after = ids[-1]
            try:
                requeued += self.backend.retry(ids)
            except DuplicateJob:
                for job_id in ids:  # the chunk again, one by one: only the held keys stay
                    try:
                        requeued += self.backend.retry([job_id])
                    except DuplicateJob as exc:
                        log.warning("%s", exc)
            if len(ids) < RETRY_CHUNK:
                break
        if requeued:
            log.info("%d failed jobs queued again (retry)", len(requeued))
        return requeued

    def pause(self, name: str) -> bool:
        """Pause the named queue, for every worker on every host, until ``resume``: no
        worker claims its jobs (within about a second, carried by the workers' wake-up), it
        still takes enqueues, and jobs already running finish. A name no job uses yet may
        be paused. True if this paused it, False if it was paused already."""
        checked = validation.name(name, "queue")
        changed = self.backend.pause_queue(checked)
        log.info("queue %r %s", checked, "paused" if changed else "was paused already")
        return changed

    def resume(self, name: str) -> bool:
        """Let workers claim from a paused queue again; its backlog starts at once. True if
        this resumed it, False if it was not paused."""
        checked = validation.name(name, "queue")
        changed = self.backend.resume_queue(checked)
        log.info("queue %r %s", checked, "resumed" if changed else "was not paused")
        return changed

    def paused(self) -> list[str]:
        """The names of the paused queues, sorted."""
        return list(self.backend.paused_queues())

    def purge(self, older_than: float) -> int:
        """Delete completed, failed and cancelled jobs that finished more than ``older_than``
        seconds ago; returns how many. Batch counts keep the purged jobs.

        Batches go once none of their jobs is left; the rows of workers go once they stopped
        or went silent (a minute without a report) before the cutoff. Nothing alive goes:
        not a queued or processing job, not a batch with one, not a running worker's row."""
        count = self.backend.purge(
            validation.seconds(older_than, "older_than"), WORKER_ALIVE_WINDOW
        )
        log.info("purged %d finished jobs older than %gs", count, older_than)
        return count

    def checkpoint(self) -> tuple[int, int, int]:
        """SQLite: copy the WAL into the database file and truncate it when no reader is in
        the way; returns (busy, wal frames, frames checkpointed). PostgreSQL keeps its own
        log: (0, 0, 0)."""
        return self.backend.checkpoint()

    # --- reads ----------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job with this id; JobNotFound if there is none."""
        validation.integer(job_id, "job_id")
        row = self.backend.get_job(job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id} in {self.target}")
        return self.lifecycle.job(row)

    def _status_of(self, job_id: int) -> JobStatus:
        status = self.backend.job_status(job_id)
        if status is None:
            raise JobNotFound(f"no job with id {job_id} in {self.target}")
        return STATUS[status]

    def jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        batch_id: int | None = None,
        error: str | None = None,
        before: int | None = None,
        after: int | None = None,
        scan: int | None = None,
        limit: int = 100,
        oldest_first: bool = False,
    ) -> list[Job]:
        """Jobs matching every filter given, newest first (or oldest first), a page at a time.

        ``error``: text the error contains, in any case (on SQLite, ASCII letters only).
        ``before`` / ``after``: only ids below / above (the cursor: the last id of the page
        before). ``scan``: look only at the ``scan`` ids next to the cursor (below
        ``before``, or the newest job, going newest first; above ``after``, or the oldest,
        going oldest first), so that a page costs at most that whatever the filters; the
        next window starts where this one ended (see ``max_job_id``).
        """
        if status is not None:
            try:
                status = JobStatus(status)
            except ValueError:
                raise InvalidArgument(
                    f"status must be one of {', '.join(s.value for s in JobStatus)}, got {status!r}"
                ) from None
        params = {
            **_filters(queue, task, batch_id, error),
            "status": None if status is None else status.value,
            "before": _id_or_none(before, "before"),
            "after": _id_or_none(after, "after"),
            "scan": _id_or_none(scan, "scan"),
            "limit": validation.integer(limit, "limit", minimum=1),
        }
        return [self.lifecycle.job(row) for row in self.backend.list_jobs(params, oldest_first)]

    def max_job_id(self) -> int | None:
        """The newest job's id (None: no job yet): where a newest-first ``scan`` window
        starts when no ``before`` is given. One index probe."""
        return self.backend.max_job_id()

    def timeline(self, job_id: int) -> list[JobEvent]:
        """The job's life in time order: enqueued; each attempt that failed, expired or was
        abandoned (its start, then its end), cancel requests, operator retries and hand-backs
        of an unknown task, from its history; then its current attempt's start and its end.

        An end already told by the history is not told twice: an attempt that failed for
        good is its "attempt failed" event (outcome "failed"), and a queued job cancelled is
        its "cancel requested" event (outcome "cancelled"). JobNotFound if there is no job.
        """
        validation.integer(job_id, "job_id")
        found = self.backend.job_history(job_id)
        if found is None:
            raise JobNotFound(f"no job with id {job_id} in {self.target}")
        return _timeline(*found)

    def dependencies(self, job_id: int) -> tuple[list[int], list[int]]:
        """The ids of the unfinished jobs this job still waits for, and the ids of the jobs
        still waiting for it; JobNotFound if there is no such job."""
        validation.integer(job_id, "job_id")
        found = self.backend.dependencies(job_id)
        if found is None:
            raise JobNotFound(f"no job with id {job_id} in {self.target}")
        return found

    def batches(self, limit: int = 50, before: int | None = None) -> list[BatchProgress]:
        """Batches newest first, with ids below ``before`` (the cursor: the last batch id
        of the page before); reads ``limit`` batches whatever their number."""
        return self.backend.batches(
            validation.integer(limit, "limit", minimum=1), _id_or_none(before, "before")
        )

    def throughput(self, minutes: int = 60) -> list[ThroughputPoint]:
        """Jobs completed and failed (for good) per minute, as the workers report them
        (every ``report_interval``), for the last ``minutes`` minutes (1 to a week), oldest
        first, ending with the current minute; a minute without any is zeros."""
        count = validation.integer(minutes, "minutes", minimum=1)
        if count > THROUGHPUT_MINUTES:
            raise InvalidArgument(
                f"minutes must be <= {THROUGHPUT_MINUTES} (a week is kept), got {count}"
            )
        current, rows = self.backend.throughput(count)
        counts = {minute: (completed, failed) for minute, completed, failed in rows}
        return [
            ThroughputPoint(float(minute), *counts.get(minute, (0, 0)))
            for minute in range(current - 60 * (count - 1), current + 1, 60)
        ]

    def batch_progress(self, batch_id: int) -> BatchProgress:
        """Counts of the batch's jobs by status, and the percentage finished."""
        validation.integer(batch_id, "batch_id")
        progress = self.backend.batch(batch_id)
        if progress is None:
            raise JobNotFound(f"no batch with id {batch_id} in {self.target}")
        return progress

    def wait(
        self, job_id: int, timeout: float | None = None, *, raise_on_failure: bool = False
    ) -> Job:
        """Block until the job has finished (completed, failed or cancelled) and return it.

        Woken by the transaction that ends the job, in this process or any other (no sleep
        loop). ``timeout`` (seconds, None: no limit) ends the wait with WaitTimeout, a
        ``TimeoutError``. With ``raise_on_failure``, a job that ended failed or cancelled
        raises JobFailed (its ``.job`` is the finished job) instead of being returned.
        """
        validation.integer(job_id, "job_id")
        seconds = None if timeout is None else validation.seconds(timeout, "timeout")
        job = self.lifecycle.job(self.lifecycle.wait(job_id, seconds))
        if raise_on_failure and job.status is not JobStatus.COMPLETED:
            raise JobFailed.of(job)
        return job

    def wait_batch(self, batch_id: int, timeout: float | None = None) -> BatchProgress:
        """Block until no job of the batch is queued, processing or waiting; its counts."""
        validation.integer(batch_id, "batch_id")
        seconds = None if timeout is None else validation.seconds(timeout, "timeout")
        return self.lifecycle.wait_batch(batch_id, seconds)

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None if there is no batch."""
        return self.backend.latest_batch_id()

    def batch_jobs(self, batch_id: int) -> list[Job]:
        """Every job of the batch, in enqueue order."""
        validation.integer(batch_id, "batch_id")
        return [self.lifecycle.job(row) for row in self.backend.batch_jobs(batch_id)]

    def stats(self) -> QueueStats:
        """Counts by queue and status, the age of the oldest due job (paused queues left
        out), lock waiting (this process's own and the totals reported by every worker),
        and the paused queues."""
        snapshot = self.backend.snapshot(WORKER_ALIVE_WINDOW)
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in snapshot.counts:
            counts.setdefault(queue, {s.value: 0 for s in JobStatus})[status] = int(count)
        earliest, now = snapshot.earliest_run_at, snapshot.now
        return QueueStats(
            counts=counts,
            oldest_queued_age=None if earliest is None or earliest > now else now - earliest,
            next_run_at=earliest,
            lock=self.backend.metrics.snapshot(),
            workers_lock=snapshot.workers_lock,
            active_workers=snapshot.active_workers,
            paused=snapshot.paused,
        )

    def workers(self, *, limit: int = 50, alive_only: bool = False) -> list[WorkerInfo]:
        """Workers as they last reported, newest first; ``alive_only``: running and seen
        within the last minute."""
        found = self.backend.workers(validation.integer(limit, "limit", minimum=1))
        if alive_only:
            since = self.backend.now() - WORKER_ALIVE_WINDOW
            found = [w for w in found if w.stopped_at is None and w.last_seen >= since]
        return found


#: The options of a batch's ``then`` job: it runs once the batch has finished, whatever the
#: outcome of its jobs.
_THEN_OPTIONS = EnqueueOptions(on_dependency_failure="run")
#: The largest cursor or scan window: their sums stay within a 64-bit integer.
_LARGEST_CURSOR = 10**18


def _id_or_none(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    checked = validation.integer(value, what, minimum=1)
    if checked > _LARGEST_CURSOR:
        raise InvalidArgument(f"{what} must be <= {_LARGEST_CURSOR}, got {checked}")
    return checked


def _filters(
    queue: str | None, task: str | None, batch_id: int | None, error: str | None
) -> dict[str, Any]:
    """The filters ``jobs`` and ``retry_failed`` share, checked; ``error`` as the LIKE
    pattern of text containing it (its ``%``, ``_`` and ``\\`` escaped)."""
    text = validation.optional_text(error, "error", max_length=200)
    pattern = None
    if text is not None:
        pattern = "%" + "".join("\\" + c if c in "%_\\" else c for c in text) + "%"
    return {
        "queue": None if queue is None else validation.name(queue, "queue"),
        "task": None if task is None else validation.name(task, "task"),
        "batch_id": None if batch_id is None else validation.integer(batch_id, "batch_id"),
        "error": pattern,
    }


#: The history events that close a run: a "started" event goes before each.
_ATTEMPT_ENDS = frozenset({"attempt failed", "snoozed", "lease expired", "abandoned"})


def _timeline(record: JobRecord, history: str | None) -> list[JobEvent]:
    """A job's events from its row and its history (see ``Queue.timeline``)."""
    try:
        entries = json.loads(history) if history else []
    except ValueError as exc:
        raise PayloadError(
            f"job {record.id}: its stored history cannot be decoded ({exc})"
        ) from None
    events = [JobEvent(record.created_at, "enqueued")]
    ended: list[tuple[int | None, float]] = []  # (attempt, started_at) of attempts told
    for entry in entries:
        event, attempt, started = entry.get("event"), entry.get("attempt"), entry.get("started_at")
        if event in _ATTEMPT_ENDS and started is not None:
            events.append(JobEvent(float(started), "started", attempt, entry.get("worker")))
            ended.append((attempt, float(started)))
        events.append(
            JobEvent(
                at=float(entry["at"]),
                event=str(event),
                attempt=attempt,
                worker=entry.get("worker"),
                error=entry.get("error"),
                traceback=entry.get("traceback"),
                outcome=entry.get("outcome"),
            )
        )
    status, started_at = record.status, record.started_at
    # times in a SQLite history keep 15 significant digits: a microsecond or so apart
    told = started_at is not None and any(
        attempt == record.attempts and abs(at - started_at) < 1e-3 for attempt, at in ended
    )
    if started_at is not None and status != "queued" and status != "waiting" and not told:
        events.append(JobEvent(started_at, "started", record.attempts, record.worker))
    last_outcome = entries[-1].get("outcome") if entries else None
    if status in FINISHED_STATUSES and record.finished_at is not None and last_outcome != status:
        failed = status != "completed"
        events.append(
            JobEvent(
                at=record.finished_at,
                event=status,
                attempt=record.attempts or None,
                worker=record.worker if started_at is not None else None,
                error=record.error if failed else None,
                traceback=record.traceback if failed else None,
                outcome=status,
            )
        )
    events.sort(key=lambda e: e.at)
    return events
