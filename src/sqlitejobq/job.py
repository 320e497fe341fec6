"""Values: a job, its status, batches and statistics."""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lifecycle import JobLifecycle


class JobStatus(enum.StrEnum):
    """Where a job is in its life. A job waiting for a retry is QUEUED with attempts > 0."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Enqueued with ``depends_on``: waits until its dependencies have finished.
    WAITING = "waiting"

    @property
    def finished(self) -> bool:
        """True for the end states: completed, failed, cancelled."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

#: The edges a job may move along. Rescue of an expired lease and retries move
#: processing -> queued; ``Queue.retry`` moves failed/cancelled -> queued.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}

#: Progress writes of one running job are spaced at least this far apart.
PROGRESS_WRITE_INTERVAL = 0.25
#: How long a running job trusts its last look at the cancel flag.
CANCEL_CHECK_INTERVAL = 0.2


class Claim:
    """The mutable side of a claimed job: who holds it, what its handler reported, and when
    its handler started (monotonic) with how long it may run (``timeout``, None: no limit)."""

    __slots__ = (
        "cancel_checked_at",
        "cancelled",
        "lease",
        "lock",
        "pending_message",
        "pending_progress",
        "progress_written_at",
        "started",
        "timeout",
        "undecodable",
        "worker",
    )

    def __init__(self, worker: str, lease: float) -> None:
        self.worker = worker
        self.lease = lease
        self.lock = threading.Lock()
        self.progress_written_at = 0.0
        self.pending_progress: float | None = None
        self.pending_message: str | None = None
        self.cancelled = False
        self.cancel_checked_at = time.monotonic()
        self.started: float | None = None
        self.timeout: float | None = None
        self.undecodable: str | None = None  # why the stored payload cannot be decoded

    def timed_out(self, now: float | None = None) -> bool:
        """True once the handler has run for longer than its timeout."""
        if self.timeout is None or self.started is None:
            return False
        return (time.monotonic() if now is None else now) - self.started >= self.timeout


@dataclass(frozen=True, slots=True)
class Job:
    """A job as read from the queue. A claimed job is also the handle its handler uses."""

    id: int
    task: str
    queue: str
    payload: Any
    status: JobStatus
    priority: int
    attempts: int
    max_attempts: int
    progress: float
    progress_message: str | None
    result: Any
    error: str | None
    traceback: str | None
    run_at: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    batch_id: int | None
    unique_key: str | None
    worker: str | None
    lease_until: float | None
    cancel_requested: bool
    _lifecycle: JobLifecycle | None = field(default=None, repr=False, compare=False)
    _claim: Claim | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The job's fields as JSON-ready values (status as text, times as epoch seconds)."""
        values = {name: getattr(self, name) for name in _JOB_FIELDS}
        values["status"] = self.status.value
        return values

    def _owned(self) -> tuple[JobLifecycle, Claim]:
        if self._lifecycle is None or self._claim is None:
            raise RuntimeError(f"job {self.id} was not claimed by this process; nothing to update")
        return self._lifecycle, self._claim

    def set_progress(self, progress: float, message: str | None = None) -> bool:
        """Report progress (0.0..1.0, optional message); also extends the lease.

        Writes are spaced at least ``PROGRESS_WRITE_INTERVAL`` apart; a report in between
        is kept and written with the next one. Returns False if this claim lost the job.
        """
        lifecycle, _ = self._owned()
        return lifecycle.set_progress(self, progress, message)

    def heartbeat(self) -> bool:
        """Extend the lease. Returns False if this claim no longer owns the job."""
        lifecycle, _ = self._owned()
        return lifecycle.heartbeat(self)

    @property
    def timed_out(self) -> bool:
        """True once the handler has run past its task's timeout: it should stop, and its
        next ``set_progress`` or ``heartbeat`` raises JobTimeout."""
        return self._claim is not None and self._claim.timed_out()

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this running job; the handler should stop."""
        lifecycle, claim = self._owned()
        if not claim.cancelled and (
            time.monotonic() - claim.cancel_checked_at >= CANCEL_CHECK_INTERVAL
        ):
            claim.cancelled = lifecycle.cancel_requested(self.id)
            claim.cancel_checked_at = time.monotonic()
        return claim.cancelled


@dataclass(frozen=True, slots=True)
class AsyncJob(Job):
    """The job as an ``async def`` handler gets it: ``await job.set_progress(...)`` and
    ``await job.heartbeat()`` write on a thread, never on the event loop. Cancellation
    reaches the handler as ``asyncio.CancelledError``; ``cancelled`` says whether it was
    asked for (as far as the last heartbeat knew)."""

    async def set_progress(self, progress: float, message: str | None = None) -> bool:  # type: ignore[override]
        """Report progress (0.0..1.0, optional message); also extends the lease."""
        lifecycle, _ = self._owned()
        return await asyncio.to_thread(lifecycle.set_progress, self, progress, message)

    async def heartbeat(self) -> bool:  # type: ignore[override]
        """Extend the lease. Returns False if this claim no longer owns the job."""
        lifecycle, _ = self._owned()
        return await asyncio.to_thread(lifecycle.heartbeat, self)

    @property
    def cancelled(self) -> bool:
        """True once a cancel of this running job was seen (read from the claim: no query
        on the event loop)."""
        _, claim = self._owned()
        return claim.cancelled


def as_async(job: Job) -> AsyncJob:
    """The same claimed job, as an async handler gets it."""
    values = [getattr(job, name) for name in Job.__dataclass_fields__]
    handle = _new(AsyncJob)
    for setter, value in zip(_JOB_SETTERS, values, strict=True):
        setter(handle, value)
    return handle


_JOB_FIELDS = tuple(f for f in Job.__dataclass_fields__ if not f.startswith("_"))
_JOB_SETTERS = tuple(getattr(Job, f).__set__ for f in Job.__dataclass_fields__)
_new = object.__new__


def job_from_values(values: tuple[Any, ...]) -> Job:
    """A Job from its field values in declaration order, several times faster than
    ``Job(...)``: the slot descriptors fill a frozen instance without ``__setattr__``."""
    job = _new(Job)
    for setter, value in zip(_JOB_SETTERS, values, strict=True):
        setter(job, value)
    return job


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One moment of a job's life, as ``Queue.timeline`` tells it: ``event`` is "enqueued",
    "started", "attempt failed", "snoozed", "lease expired", "abandoned", "deferred",
    "cancel requested", "updated", "retried", "completed", "failed" or "cancelled";
    ``outcome`` the status the job moved to (None: it did not move)."""

    at: float
    event: str
    attempt: int | None = None
    worker: str | None = None
    error: str | None = None
    traceback: str | None = None
    outcome: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    """Jobs that ended in one minute (``minute``: the epoch second it starts), as the
    workers reported them: completed, and failed for good (retried attempts not counted)."""

    minute: float
    completed: int
    failed: int

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Batch:
    """Jobs enqueued together, followed as one unit."""

    id: int
    job_ids: list[int]
    #: The job enqueued with ``then=``: it runs once every job of the batch has finished.
    then_id: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A periodic job as declared in code and as recorded by the workers that ran it."""

    name: str
    task: str
    every: str
    timezone: str
    #: The latest slot a job was created for (epoch seconds), its job and that job's status.
    last_slot: float | None
    last_job_id: int | None
    last_status: str | None
    #: The next slot (None: not declared in this process's code, so not known here).
    next_slot: float | None
    #: When a worker last declared it (None: never ran on a worker yet).
    declared_at: float | None

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """A limit key with jobs queued or processing: the task's limits (as declared in this
    process: None if unknown here) against what is in use."""

    key: str
    task: str
    limit: int | None
    rate: str | None
    queued: int
    processing: int
    starts_last_hour: int

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Counts of a batch's jobs by status; ``percent`` is the share that has finished."""

    batch_id: int
    name: str | None
    total: int
    queued: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    created_at: float
    #: Jobs waiting for their dependencies.
    waiting: int = 0

    @property
    def finished(self) -> int:
        """Jobs that reached an end state (completed, failed or cancelled)."""
        return self.completed + self.failed + self.cancelled

    @property
    def percent(self) -> float:
        """Finished jobs as a percentage of the total (100.0 for an empty batch)."""
        return 100.0 if self.total == 0 else round(100.0 * self.finished / self.total, 2)

    @property
    def done(self) -> bool:
        """True when no job of the batch is queued, processing or waiting."""
        return self.queued == 0 and self.processing == 0 and self.waiting == 0

    def __str__(self) -> str:
        return f"{self.finished}/{self.total}, {self.percent:.0f}%"

    def as_dict(self) -> dict[str, Any]:
        """Counts, percent and done flag as JSON-ready values."""
        return {
            "batch_id": self.batch_id,
            "name": self.name,
            "total": self.total,
            "queued": self.queued,
            "processing": self.processing,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "waiting": self.waiting,
            "finished": self.finished,
            "percent": self.percent,
            "done": self.done,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as it last reported itself in the database."""

    id: str
    hostname: str
    pid: int
    queues: str
    concurrency: int
    started_at: float
    last_seen: float
    stopped_at: float | None
    jobs_completed: int
    jobs_failed: int
    writes: int
    lock_retries: int
    lock_wait_seconds: float
    busy_errors: int


@dataclass(frozen=True, slots=True)
class LockStats:
    """How much waiting for SQLite's write lock this process has done."""

    writes: int = 0
    lock_wait_seconds: float = 0.0
    lock_wait_max_seconds: float = 0.0
    lock_retries: int = 0
    busy_errors: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of the queue: counts by queue and status, age of the backlog, lock waits,
    paused queues.

    ``oldest_queued_age`` and ``next_run_at`` leave out the jobs of paused queues (none of
    them is due until its queue is resumed); ``paused`` maps each paused queue's name to
    when it was paused (epoch seconds), in name order.
    """

    counts: dict[str, dict[str, int]]
    oldest_queued_age: float | None
    next_run_at: float | None
    lock: LockStats
    workers_lock: LockStats
    active_workers: int
    paused: dict[str, float] = field(default_factory=dict)

    def total(self, status: JobStatus | str | None = None) -> int:
        """Jobs in one status (all statuses when None) across every queue."""
        key = None if status is None else JobStatus(status).value
        return sum(
            n
            for by_status in self.counts.values()
            for s, n in by_status.items()
            if key is None or s == key
        )

    @property
    def by_status(self) -> dict[str, int]:
        """Counts per status across every queue, every status present (zero included)."""
        return {s.value: self.total(s) for s in JobStatus}

    def as_dict(self) -> dict[str, Any]:
        """Everything above as JSON-ready values."""
        return {
            "counts": self.counts,
            "by_status": self.by_status,
            "oldest_queued_age": self.oldest_queued_age,
            "next_run_at": self.next_run_at,
            "active_workers": self.active_workers,
            "paused": self.paused,
            "lock": asdict(self.lock),
            "workers_lock": asdict(self.workers_lock),
        }
