"""The seam between the engine-neutral queue and its storage engines.

``Backend`` is what ``Queue`` and ``Worker`` need of a database; each engine (SQLite,
PostgreSQL) implements it in a package of its own, owning its SQL, its schema and
migrations, its retry policy and its wake-up. Above this module nothing names an engine:
rows cross the seam as the typed records below, times are epoch seconds, JSON is text,
and what differs between engines is asked of ``Capabilities``, never of types.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, TypeVar

from ..job import BatchProgress, LockStats, WorkerInfo
from ..limits import LimitRule

if TYPE_CHECKING:
    from types import ModuleType

    from ..migrations.values import Migration, MigrationRunner
    from .shared import LockMetrics

#: The statuses a job ends in.
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do, for the code above the seam to ask instead of its type."""

    #: The queue is one file on this host (SQLite): it has a WAL, a size on disk, a path.
    is_file: bool
    #: Leases and due times are stamped by the database's clock (shared by every host),
    #: not by the clock of the process that writes them.
    database_clock: bool
    #: Other processes' enqueues wake idle workers by a notification (inotify, LISTEN)
    #: rather than only by the workers' own looks.
    listener: bool
    #: A job can be enqueued in the caller's open transaction on an asyncio connection
    #: (``insert_in_async_transaction``), not only on a blocking one.
    async_transaction: bool = False


class JobRecord(NamedTuple):
    """A job's row as stored: JSON as text, status as its value, times as epoch seconds."""

    id: int
    task: str
    queue: str
    payload: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    progress: float
    progress_message: str | None
    result: str | None
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


#: The error of a job whose expiry passed before it started (it ends cancelled).
EXPIRED_ERROR = "Expired: not started before its expiry"


class NewJob(NamedTuple):
    """A job to insert: its payload encoded, due ``delay`` seconds after the insert; held to
    the limits of ``limit_key`` (None: none); waiting for the jobs in ``depends_on``, and
    cancelled if one of them fails (``dependency_policy`` 'cancel') or run anyway ('run')."""

    task: str
    queue: str
    payload: str
    priority: int
    delay: float
    max_attempts: int
    unique_key: str | None
    limit_key: str | None = None
    depends_on: tuple[int, ...] = ()
    dependency_policy: str = "cancel"
    #: Seconds after the insert past which the job, not started, never runs (None: never).
    expires: float | None = None


class RescuedJob(NamedTuple):
    """A job taken back from a worker whose lease expired, as it is after the change."""

    id: int
    task: str
    status: str
    attempts: int
    max_attempts: int
    worker: str | None
    queue: str
    batch_id: int | None
    has_dependents: bool = False
    limit_key: str | None = None
    watched: bool = False


class LimitedDue(NamedTuple):
    """Whether a limited job could be claimed now; when a key held back by its rate frees
    a start, and when the next limited job not due yet becomes due (None: none); now."""

    claimable: bool
    next_start: float | None
    next_run: float | None
    now: float


class Snapshot(NamedTuple):
    """What ``stats()`` reads in one go: counts by (queue, status), the earliest run_at of
    a queued job in a queue that is not paused, the database's now, the workers' reported
    lock totals and live count, and the paused queues (when each was paused)."""

    counts: list[tuple[str, str, int]]
    earliest_run_at: float | None
    now: float
    workers_lock: LockStats
    active_workers: int
    paused: dict[str, float]


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Who claims, from which queues (None: all), how many, for how long (seconds), leaving
    out the jobs of the tasks in ``exclude`` (ones the worker does not know)."""

    worker: str
    queues: tuple[str, ...] | None
    limit: int
    lease: float
    exclude: tuple[str, ...] = ()
    #: The limits of the tasks this worker knows, by task: their jobs are claimed under them.
    limits: dict[str, LimitRule] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker's row: who it is and what it has done (counts and lock waits so far). The
    engine stamps it with its clock; ``started_at`` (None: now) is kept from its start.
    ``completed_delta`` and ``failed_delta``: the jobs it ended since its last report that
    was written, added to the current minute's throughput in the same transaction."""

    id: str
    hostname: str
    pid: int
    queues: str
    concurrency: int
    started_at: float | None = None
    stopped: bool = False
    jobs_completed: int = 0
    jobs_failed: int = 0
    lock: LockStats = field(default_factory=LockStats)
    completed_delta: int = 0
    failed_delta: int = 0

    def row(
        self, started_at: float | None, now: float | None, stopped_at: float | None
    ) -> dict[str, Any]:
        """The parameters of an engine's REPORT_WORKER statement (the same names on each)."""
        return {
            "id": self.id,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "started_at": started_at,
            "now": now,
            "stopped_at": stopped_at,
            "jobs_completed": self.jobs_completed,
            "jobs_failed": self.jobs_failed,
            "writes": self.lock.writes,
            "lock_retries": self.lock.lock_retries,
            "lock_wait_seconds": self.lock.lock_wait_seconds,
            "lock_wait_max_seconds": self.lock.lock_wait_max_seconds,
            "busy_errors": self.lock.busy_errors,
        }


#: Seconds of per-minute throughput kept: the report that adds to a minute deletes older rows.
THROUGHPUT_KEPT = 7 * 86400


class Step(enum.Enum):
    """The kinds of fenced change to a claimed job (each a typed value below)."""

    COMPLETE = "complete"
    FAIL = "fail"
    RELEASE = "release"
    ABANDON = "abandon"
    HEARTBEAT = "heartbeat"
    PROGRESS = "progress"
    DEFER = "defer"
    SNOOZE = "snooze"


#: The steps that change a job's status (and so its counts).
STATUS_STEPS = frozenset(
    {Step.COMPLETE, Step.FAIL, Step.RELEASE, Step.ABANDON, Step.DEFER, Step.SNOOZE}
)


@dataclass(frozen=True, slots=True)
class JobChange:
    """What an operator changes of a job that has not started (None: left as it is);
    ``delay`` (seconds from now) and ``run_at`` (epoch seconds) are the due time, at most
    one of them. ``note`` says what changed, for the job's history."""

    priority: int | None
    queue: str | None
    delay: float | None
    run_at: float | None
    note: str


@dataclass(frozen=True, slots=True)
class Fence:
    """Who holds a claimed job: a step changes the job only while this claim owns it."""

    id: int
    attempts: int
    worker: str


@dataclass(frozen=True, slots=True)
class Complete:
    """Record a result. ``on_complete`` runs in the completion's transaction (given the
    engine's transaction connection); if it raises, ``on_failure(error)`` says the FAIL
    step to record instead, and nothing the hook wrote stays."""

    fence: Fence
    result: str
    message: str | None
    on_complete: Callable[[Any], None] | None = None
    on_failure: Callable[[BaseException], Fail] | None = None
    kind: ClassVar[Step] = Step.COMPLETE


@dataclass(frozen=True, slots=True)
class Fail:
    """Record a failed attempt: back to ``queued`` after ``delay`` seconds, or ``failed``."""

    fence: Fence
    status: str
    delay: float
    error: str
    traceback: str | None
    message: str | None
    kind: ClassVar[Step] = Step.FAIL


@dataclass(frozen=True, slots=True)
class Release:
    """Hand a job back unstarted (a worker stopping), its attempt not counted."""

    fence: Fence
    kind: ClassVar[Step] = Step.RELEASE


@dataclass(frozen=True, slots=True)
class Abandon:
    """Give up a run whose outcome is lost (counted as a failed attempt): back to
    ``queued`` after ``delay`` seconds while attempts remain, else failed."""

    fence: Fence
    error: str
    delay: float
    kind: ClassVar[Step] = Step.ABANDON


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Extend the lease by ``lease`` seconds."""

    fence: Fence
    lease: float
    kind: ClassVar[Step] = Step.HEARTBEAT


@dataclass(frozen=True, slots=True)
class Progress:
    """Record progress (0..1) and a message, extending the lease."""

    fence: Fence
    progress: float
    message: str | None
    lease: float
    kind: ClassVar[Step] = Step.PROGRESS


@dataclass(frozen=True, slots=True)
class Defer:
    """Hand back a job whose task the worker does not know, its attempt not counted: looked
    at again in ``recheck`` seconds, failed with ``failed_error`` after ``window``."""

    fence: Fence
    recheck: float
    window: float
    waiting_error: str
    failed_error: str
    kind: ClassVar[Step] = Step.DEFER


#: A fenced change to a claimed job. Applied, it gives the job's status after it
#: (HEARTBEAT and PROGRESS: whether a cancel was requested), or None when the claim no
#: longer owned the job and nothing changed.
@dataclass(frozen=True, slots=True)
class Postpone:
    """Put a job off at its handler's word (``raise Snooze``), its attempt not counted:
    due in ``delay`` seconds, or failed with ``error`` once it was put off ``max_snoozes``
    times."""

    fence: Fence
    delay: float
    max_snoozes: int
    error: str
    #: What the history says of it ("snoozed for 30s").
    note: str
    kind: ClassVar[Step] = Step.SNOOZE


StepValue = Complete | Fail | Release | Abandon | Heartbeat | Progress | Defer | Postpone


def step_parameters(step: StepValue) -> dict[str, Any]:
    """The named parameters of a step's statement, the same names on every engine (the
    engine adds ``now``)."""
    fence = step.fence
    params: dict[str, Any] = {"id": fence.id, "attempts": fence.attempts, "worker": fence.worker}
    for name in step.__dataclass_fields__:
        if name not in ("fence", "on_complete", "on_failure", "kind"):
            params[name] = getattr(step, name)
    return params


class Waker(Protocol):
    """Wakes the idle workers of one process. An enqueue in the process calls ``notify``;
    an engine with a listener also wakes them when other processes enqueue."""

    @property
    def enqueued(self) -> int:
        """Counts this process's enqueues: a change is new work, no read needed."""

    @property
    def signals(self) -> int:
        """Counts the signals of other processes' commits (file events, notifications)."""

    @property
    def watching(self) -> bool:
        """True while other processes' commits are signalled (not only found by looks)."""

    def notify(self) -> None:
        """A job was enqueued (or re-queued) in this process and committed."""

    def listen(self, event: threading.Event, active: bool = True) -> None:
        """Have (or, with ``active`` false, stop having) ``event`` set on every wake-up."""

    def sleeping(self, asleep: bool) -> None:
        """A listener goes to sleep waiting for work, or wakes: a listener that costs while
        active (a file watch) is active only then. After ``sleeping(True)``, look once more
        before sleeping: a commit made before the call may not be signalled."""

    def look(self) -> int:
        """A cheap look for other processes' commits: a number that changes when there may
        be new work (SQLite: ``PRAGMA data_version``)."""


class Storage(Protocol):
    """The database itself: opening, closing, its clock, its upkeep."""

    #: The database, for messages: a path, or a URL without its password.
    target: str
    capabilities: Capabilities
    metrics: LockMetrics

    @property
    def waker(self) -> Waker:
        """Wakes this process's idle workers."""

    def open(self) -> None:
        """Refuse a database that is not this library's (changing nothing), then create or
        update the library's tables."""

    def close(self) -> None:
        """Close this process's connections; later calls raise QueueClosed."""

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""

    def now(self) -> float:
        """The time of the clock that stamps leases and due times."""

    def checkpoint(self) -> tuple[int, int, int]:
        """Fold the engine's log into its main storage when idle: (busy, log, folded)."""


class HotPath(Protocol):
    """What workers and enqueuers run all day."""

    def insert_jobs(
        self,
        jobs: Sequence[NewJob],
        *,
        batch_name: str | None,
        make_batch: bool,
        connection: Any = None,
        then: Callable[[int, list[int]], NewJob] | None = None,
    ) -> tuple[int | None, list[int]]:
        """Insert jobs (in the caller's open transaction with ``connection``): the batch id
        and the job ids, in order; the active holder's id for a unique key already held.
        ``then(batch_id, ids)`` gives one more job to insert after them (its id comes last)."""

    async def insert_in_async_transaction(self, conn: Any, job: NewJob) -> int:
        """Insert one job in the caller's open transaction on an asyncio connection; an
        engine without ``capabilities.async_transaction`` refuses it saying so."""

    def exchange(
        self, steps: Sequence[StepValue], claim: ClaimRequest | None
    ) -> tuple[list[Any], list[JobRecord]]:
        """Apply fenced steps to claimed jobs, then claim more, in one transaction."""

    def rescue_expired(
        self,
        error: str,
        renew: Sequence[Heartbeat] = (),
        backoff: Callable[[str, int], float] | None = None,
    ) -> list[RescuedJob]:
        """Take back the jobs whose lease ended; ``renew`` (the caller's own heartbeats)
        is applied first, in the same transaction. A job going back to the queue is due
        ``backoff(task, attempts)`` seconds later (None: at once)."""

    def next_run_at(self, queues: tuple[str, ...] | None) -> tuple[float | None, float]:
        """The earliest ``run_at`` of a queued job in ``queues`` (None: every queue) that
        are not paused, and the clock's now: how long until it is due, whatever the host."""

    def next_lease_expiry(self) -> tuple[float | None, float]:
        """When the earliest lease of a processing job ends (None: none), and now."""

    def limited_due(self, claim: ClaimRequest) -> LimitedDue:
        """When limited jobs can next be claimed under ``claim.limits`` (a slot that frees
        when a running job ends is signalled instead)."""


class Operations(Protocol):
    """What an operator (or code acting for one) does to jobs."""

    def cancel(self, job_id: int) -> str | None:
        """Cancel a queued job or flag a running one; its status then, None if neither."""

    def update_job(self, job_id: int, change: JobChange) -> str | None:
        """Change a queued or waiting job's priority, queue or due time; its status (the
        job is changed only if it is queued or waiting), None if there is no such job."""

    def retry(self, job_ids: Sequence[int]) -> list[int]:
        """Queue failed or cancelled jobs again with fresh attempts; the ids re-queued.
        DuplicateJob if another active job holds one's unique key."""

    def purge(self, older_than: float, dead_after: float) -> int:
        """Delete jobs that finished more than ``older_than`` seconds ago, then batches left
        with no job, and the rows of workers that stopped (or were silent for
        ``dead_after`` seconds) that long ago; how many jobs."""

    def pause_queue(self, name: str) -> bool:
        """Pause a queue: no worker claims its jobs until it is resumed (it still takes
        enqueues; running jobs finish). Wakes the workers. False if it was paused already."""

    def resume_queue(self, name: str) -> bool:
        """Resume a paused queue and wake the workers. False if it was not paused."""

    def paused_queues(self) -> dict[str, float]:
        """The paused queues by name, in name order: when each was paused."""

    def watch(self, job_id: int) -> str | None:
        """Mark a job as waited for, so that the transaction that ends it wakes waiters
        (in every process); its status, or None if there is no such job."""

    def watch_batch(self, batch_id: int) -> None:
        """Mark every unfinished job of a batch as waited for."""


class Schedules(Protocol):
    """Periodic jobs: one job per slot across every worker."""

    def declare_schedules(self, schedules: Sequence[tuple[str, str, str, str]]) -> None:
        """Record the (name, task, spec, timezone) of the schedules a worker runs."""

    def last_slots(self) -> dict[str, float | None]:
        """The latest slot each recorded schedule created a job for."""

    def fire_slot(self, name: str, slot: float, job: NewJob) -> int | None:
        """Create ``job`` for ``slot`` of schedule ``name`` unless a job was created for it
        (or a later slot) already: one job per slot across every worker. The new job's id."""

    def schedules(self) -> list[tuple[Any, ...]]:
        """Recorded schedules: name, task, spec, timezone, last slot, last job id, its
        status, when a worker last declared it."""


class WorkerRows(Protocol):
    """The workers' rows: who runs, what each has done."""

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts (or starts again under the same id)."""

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row (write it anew if it is missing)."""

    def workers(self, limit: int) -> list[WorkerInfo]:
        """The workers as they last reported, most recently started first."""


# --- lock and retry telemetry, and the shape of every engine's retry policy ---------------


class Reads(Protocol):
    """What the API, the CLI and the dashboard show."""

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job's row, or None."""

    def job_status(self, job_id: int) -> str | None:
        """The job's status, or None if there is no such job."""

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job."""

    def job_history(self, job_id: int) -> tuple[JobRecord, str | None] | None:
        """The job's row and its history (a JSON array as text, None: nothing recorded),
        or None if there is no such job."""

    def list_jobs(self, filters: dict[str, Any], oldest_first: bool) -> list[JobRecord]:
        """Rows of the jobs matching ``filters``: status, queue, task, batch_id, error (a
        LIKE pattern, case-insensitive), ids below ``before`` and above ``after``, within
        ``scan`` ids of the cursor (None: unbounded), up to ``limit``."""

    def failed_ids(self, filters: dict[str, Any], after: int, limit: int) -> list[int]:
        """Up to ``limit`` ids of failed jobs above ``after``, in id order, matching
        ``filters`` (queue, task, batch_id, error as for ``list_jobs``)."""

    def max_job_id(self) -> int | None:
        """The newest job's id (None: no job)."""

    def batches(self, limit: int, before: int | None) -> list[BatchProgress]:
        """Up to ``limit`` batches with ids below ``before`` (None: any), newest first."""

    def batch(self, batch_id: int) -> BatchProgress | None:
        """The batch's counts, or None if there is no such batch."""

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None."""

    def batch_jobs(self, batch_id: int) -> list[JobRecord]:
        """Rows of the batch's jobs in enqueue order."""

    def dependencies(self, job_id: int) -> tuple[list[int], list[int]] | None:
        """The unfinished jobs the job waits for, and the jobs waiting for it (None: no such
        job)."""

    def throughput(self, minutes: int) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute (the epoch second it starts, by the engine's clock), and the
        (minute, completed, failed) rows of the last ``minutes`` minutes up to it."""

    def snapshot(self, alive_window: float) -> Snapshot:
        """Counts, the earliest run_at and the workers' totals, for ``stats()``."""

    def limit_usage(self, limit: int) -> list[tuple[str, int, int, int]]:
        """Per limit key (up to ``limit`` keys): queued and processing jobs, and the starts
        within the last hour (for status)."""


class Backend(Storage, HotPath, Operations, Schedules, WorkerRows, Reads, Protocol):
    """What the queue needs of a database. Every method that writes is atomic and retried
    while the fault passes (a busy lock, a lost connection), within ``retry_timeout``.
    Times are stamped by the engine's clock: the queue's injected ``clock`` if it has one,
    else the process's (SQLite) or the database server's (PostgreSQL)."""


@dataclass(frozen=True, slots=True)
class Engine:
    """Everything engine-specific, chosen once from a target (``backends.engine_for``):
    nothing above ``backends/`` asks which engine it has; it asks this value."""

    #: For messages: "SQLite", "PostgreSQL".
    name: str
    #: The queue's database lives in one file on this host.
    is_file: bool
    #: ``(target, retry_timeout=, clock=, options=)``: the engine's ``Backend``.
    open_backend: Callable[..., Backend]
    #: ``(db, retry_timeout=, options=)``: applies migrations to a target or connection.
    migration_runner: Callable[..., MigrationRunner]
    #: The namespace and migrations of the library's own tables.
    namespace: str
    migrations: Sequence[Migration]
    #: ``(conn, error_class, owner)``: the caller's-transaction adapter a migration or an
    #: on_complete hook gets (reads and writes, no commit).
    transaction_connection: Callable[[Any, type[Exception], str], Any]
    #: The copy seam: ``open_source``, ``open_target``, ``peek_target``,
    #: ``migration_target``, ``database_identity`` (see ``transfer.py``).
    copy: Callable[[], ModuleType]
    #: How another process reaches the same database (a file by its absolute path).
    location: Callable[[str], str]
    #: ``(given, target)``: whether a target as given names the database of a queue whose
    #: ``target`` (as the queue shows it) is the second.
    same_database: Callable[[str, str], bool]
