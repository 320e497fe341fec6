"""The seam between the engine-neutral queue and its storage engines.

``Backend`` is what ``Queue`` and ``Worker`` need of a database; each engine (SQLite,
PostgreSQL) implements it in a package of its own, owning its SQL, its schema and
migrations, its retry policy and its wake-up. Above this module nothing names an engine:
rows cross the seam as the typed records below, times are epoch seconds, JSON is text,
and what differs between engines is asked of ``Capabilities``, never of types.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from .. import validation
from ..errors import (
    DatabaseBusy,
    InvalidArgument,
    InvalidArgumentType,
    JobNotFound,
    MigrationError,
    SqliteJobQError,
)
from ..job import BatchProgress, LockStats, WorkerInfo

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


@dataclass(frozen=True, slots=True)
class LimitRule:
    """A task's limits, across every worker: at most ``limit`` of its jobs processing at
    once and at most ``rate[0]`` starts in any ``rate[1]`` seconds (None: no such limit);
    per value of the payload field ``key`` when it is given, else for the task as a whole."""

    task: str
    limit: int | None
    rate: tuple[int, float] | None
    key: str | None = None


#: A limit key joins the task's name and the payload value it is limited by with this
#: character, which no task name holds.
LIMIT_KEY_SEPARATOR = "|"
#: The rule (and limit key) of a queue's limit is the queue's name after this character,
#: which no task or queue name starts with.
QUEUE_RULE_PREFIX = "#"


def rule_for(rules: dict[str, LimitRule], task: str, queue: str) -> LimitRule | None:
    """The limit a job is held to: its task's, else its queue's (None: neither is limited)."""
    return rules.get(task) or rules.get(QUEUE_RULE_PREFIX + queue)


class LimitQueries(NamedTuple):
    """An engine's statements for a limited claim: the keys with queued jobs, the running
    count per key; then either per key (``many`` false: :key, :limit or :since) or for all
    keys at once (``many`` true: parallel arrays :keys with :rooms or :sinces, rows carrying
    their key last), a key's best due jobs (with the claim's own parameters) and its
    starts since a time."""

    keys: str
    running: str
    candidates: str
    starts: str
    many: bool = False


def plan_limited_in(
    execute: Callable[[str, dict[str, Any]], Iterable[Sequence[Any]]],
    queries: LimitQueries,
    claim: ClaimRequest,
    want: int,
    now: float,
    params: dict[str, Any],
    only: list[str] | None = None,
) -> LimitedClaim:
    """``plan_limited_claim`` on an engine's transaction (``execute`` runs one statement and
    returns its rows), among the keys ``only`` when given, else every key with queued jobs.
    ``params``: the claim's parameters of the candidates statement, in the engine's form."""
    if not claim.limits:
        return LimitedClaim([], [], None)
    keys = only if only is not None else [str(row[0]) for row in execute(queries.keys, {})]
    if not keys:
        return LimitedClaim([], [], None)
    running = {str(key): int(n) for key, n in execute(queries.running, {})}

    def candidates(rooms: dict[str, int]) -> list[tuple[int, int, float, str]]:
        if queries.many:
            rows = execute(queries.candidates, {
                **params, "keys": list(rooms), "rooms": list(rooms.values()),
            })  # fmt: skip
            return [(int(r[0]), int(r[1]), float(r[2]), str(r[-1])) for r in rows]
        return [
            (int(r[0]), int(r[1]), float(r[2]), key)
            for key, room in rooms.items()
            for r in execute(queries.candidates, {**params, "key": key, "limit": room})
        ]

    def recent_starts(sinces: dict[str, float]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        if queries.many:
            rows = execute(queries.starts, {"keys": list(sinces), "sinces": list(sinces.values())})
            for key, started in rows:
                found.setdefault(str(key), []).append(float(started))
            return found
        for key, since in sinces.items():
            found[key] = [
                float(r[0]) for r in execute(queries.starts, {"key": key, "since": since})
            ]
        return found

    return plan_limited_claim(keys, running, claim.limits, want, now, candidates, recent_starts)


def dependency_outcome(job: NewJob, statuses: dict[int, str]) -> str | list[int]:
    """What a new job's dependencies (their statuses by id) make of it: the reason it is
    cancelled at once (one failed or was cancelled, and its policy is 'cancel'), else the
    ids it waits for (empty: none left, it is queued). JobNotFound if one does not exist."""
    missing = [dep for dep in job.depends_on if dep not in statuses]
    if missing:
        raise JobNotFound(
            f"depends_on: no job has id {', '.join(map(str, missing))} (nothing was enqueued)"
        )
    if job.dependency_policy == "cancel":
        for dep in job.depends_on:
            if statuses[dep] in ("failed", "cancelled"):
                return f"cancelled: dependency {dep} did not complete ({statuses[dep]})"
    return [dep for dep in dict.fromkeys(job.depends_on) if statuses[dep] not in FINISHED_STATUSES]


def limit_key_of(rule: LimitRule, payload: Any) -> str | None:
    """The limit key of a job of ``rule.task`` with this (decoded) payload: the task's name,
    or with ``rule.key`` the name and the payload's value of that field (None when the
    payload has no such field, or its value is not text or an int of 1-200 characters)."""
    if rule.key is None:
        return rule.task
    if not isinstance(payload, dict):
        return None
    value = payload.get(rule.key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    if not text or len(text) > 200:
        return None
    return f"{rule.task}{LIMIT_KEY_SEPARATOR}{text}"


def keys_for_unkeyed(
    records: Sequence[JobRecord], rules: dict[str, LimitRule]
) -> tuple[list[JobRecord], list[tuple[int, str]]]:
    """Split jobs just claimed by the plain claim (none has a limit key) into those to run
    and (id, key) of those whose task or queue is limited here: they go back, keyed, to be claimed
    under the limit. A payload that gives no key puts the job under ``task|`` (one shared
    bucket) rather than letting it run unlimited."""
    if not rules:
        return list(records), []
    run, hold = [], []
    for record in records:
        rule = rule_for(rules, record.task, record.queue)
        if rule is None:
            run.append(record)
            continue
        try:
            payload = json.loads(record.payload)
        except ValueError:
            payload = None
        key = limit_key_of(rule, payload) or f"{rule.task}{LIMIT_KEY_SEPARATOR}"
        hold.append((record.id, key))
    return run, hold


def task_of_limit_key(key: str) -> str:
    """The task whose rule governs a job with this limit key."""
    return key.split(LIMIT_KEY_SEPARATOR, 1)[0]


def listing_by(filters: dict[str, Any]) -> str:
    """What a listing of jobs reads, every engine alike: a batch's jobs through the batch
    index ("batch"), failed or cancelled ones through the index of those ("finished_badly"),
    else the primary key ("id"); so that a page stays cheap however many jobs completed."""
    if filters.get("batch_id") is not None:
        return "batch"
    if filters.get("status") in ("failed", "cancelled"):
        return "finished_badly"
    return "id"


class LimitedDue(NamedTuple):
    """Whether a limited job could be claimed now; when a key held back by its rate frees
    a start, and when the next limited job not due yet becomes due (None: none); now."""

    claimable: bool
    next_start: float | None
    next_run: float | None
    now: float


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    """What a claim of limited jobs chose: the job ids (best first), the keys whose starts
    count against a rate, and when a key held back by its rate frees a start (or None);
    ``keys``: the key of each job chosen."""

    ids: list[int]
    rated_keys: list[str]
    next_start: float | None
    keys: list[str] = field(default_factory=list)


def plan_limited_claim(
    keys: Iterable[str],
    running: dict[str, int],
    rules: dict[str, LimitRule],
    want: int,
    now: float,
    candidates: Callable[[dict[str, int]], list[tuple[int, int, float, str]]],
    recent_starts: Callable[[dict[str, float]], dict[str, list[float]]],
) -> LimitedClaim:
    """Choose up to ``want`` limited jobs, best first, without going over any key's limit.

    ``running`` counts the processing jobs per key; ``recent_starts({key: since})`` gives
    each key's starts after its ``since``, oldest first; ``candidates({key: room})`` up to
    ``room`` due jobs of each key as (id, priority, run_at, key), best first. An engine may
    answer each for all keys at once (one round trip). The engine calls this inside the
    claim's transaction, serialized with the other claims of the same keys, so the counts
    stay exact.
    """
    rooms: dict[str, int] = {}
    rates: dict[str, tuple[int, float]] = {}
    for key in keys:
        rule = rules.get(task_of_limit_key(key))
        if rule is None:
            continue  # a task this worker does not know: left to workers that do
        room = want if rule.limit is None else min(want, rule.limit - running.get(key, 0))
        if room > 0:
            rooms[key] = room
            if rule.rate is not None:
                rates[key] = rule.rate
    next_start: float | None = None
    if rates:
        starts = recent_starts({key: now - period for key, (_, period) in rates.items()})
        for key, (count, period) in rates.items():
            seen = starts.get(key, [])
            if len(seen) >= count:
                frees_at = seen[len(seen) - count] + period
                next_start = frees_at if next_start is None else min(next_start, frees_at)
            rooms[key] = min(rooms[key], count - len(seen))
    rooms = {key: room for key, room in rooms.items() if room > 0}
    chosen = sorted(
        (-priority, run_at, job_id, key)
        for job_id, priority, run_at, key in (candidates(rooms) if rooms else [])
    )[:want]
    return LimitedClaim(
        [job_id for _, _, job_id, _ in chosen],
        [key for _, _, _, key in chosen if key in rates],
        next_start,
        [key for _, _, _, key in chosen],
    )


class Snapshot(NamedTuple):
    """What ``stats()`` reads in one go: counts by (queue, status), the earliest run_at of
    a queued job, the database's now, the workers' reported lock totals and live count."""

    counts: list[tuple[str, str, int]]
    earliest_run_at: float | None
    now: float
    workers_lock: LockStats
    active_workers: int


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

    def row(self, started_at: float | None, now: float | None,
            stopped_at: float | None) -> dict[str, Any]:  # fmt: skip
        """The parameters of an engine's REPORT_WORKER statement (the same names on each)."""
        return {
            "id": self.id, "hostname": self.hostname, "pid": self.pid, "queues": self.queues,
            "concurrency": self.concurrency, "started_at": started_at, "now": now,
            "stopped_at": stopped_at, "jobs_completed": self.jobs_completed,
            "jobs_failed": self.jobs_failed, "writes": self.lock.writes,
            "lock_retries": self.lock.lock_retries,
            "lock_wait_seconds": self.lock.lock_wait_seconds,
            "lock_wait_max_seconds": self.lock.lock_wait_max_seconds,
            "busy_errors": self.lock.busy_errors,
        }  # fmt: skip


#: Seconds of per-minute throughput kept: the report that adds to a minute deletes older rows.
THROUGHPUT_KEPT = 7 * 86400


class Step(enum.Enum):
    """A fenced change to a claimed job, with its parameters (all engines name them alike;
    the engine adds ``now``, the time of its clock):

    - every step: ``id``, ``attempts``, ``worker`` (the fence);
    - COMPLETE: ``result`` (JSON text), ``message``; optionally HOOK and HOOK_FAILED;
    - FAIL: ``status`` ('queued' or 'failed'), ``delay`` (seconds until the retry),
      ``error``, ``traceback``, ``message``;
    - ABANDON: ``error``;
    - HEARTBEAT: ``lease`` (seconds); PROGRESS: ``progress``, ``message``, ``lease``;
    - DEFER: ``recheck`` (seconds until it is looked at again), ``window`` (seconds),
      ``waiting_error``, ``failed_error``.

    Each returns the job's status after the change (HEARTBEAT and PROGRESS: whether a
    cancel was requested), or None when the claim no longer owned the job.
    """

    COMPLETE = "complete"
    FAIL = "fail"
    RELEASE = "release"
    ABANDON = "abandon"
    HEARTBEAT = "heartbeat"
    PROGRESS = "progress"
    DEFER = "defer"


#: The steps that change a job's status (and so its counts).
STATUS_STEPS = frozenset({Step.COMPLETE, Step.FAIL, Step.RELEASE, Step.ABANDON, Step.DEFER})
#: Keys of a COMPLETE step's parameters: code to run inside the completion's transaction
#: (given the engine's transaction connection), and what to record instead if that code
#: raises (given the error: the parameters of a FAIL step).
HOOK = "on_complete"
HOOK_FAILED = "on_complete_failed"

StepParams = dict[str, Any]


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


class Backend(Protocol):
    """What the queue needs of a database. Every method that writes is atomic and retried
    while the fault passes (a busy lock, a lost connection), within ``retry_timeout``.
    Times are stamped by the engine's clock: the queue's injected ``clock`` if it has one,
    else the process's (SQLite) or the database server's (PostgreSQL)."""

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

    async def insert_in_async_transaction(self, conn: Any, job: NewJob) -> int:
        """Insert one job in the caller's open transaction on an asyncio connection; an
        engine without ``capabilities.async_transaction`` refuses it saying so."""

    def now(self) -> float:
        """The time of the clock that stamps leases and due times."""

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

    def exchange(
        self, steps: Sequence[tuple[Step, StepParams]], claim: ClaimRequest | None
    ) -> tuple[list[Any], list[JobRecord]]:
        """Apply fenced steps to claimed jobs, then claim more, in one transaction."""

    def rescue_expired(
        self, error: str, renew: Sequence[tuple[Step, StepParams]] = ()
    ) -> list[RescuedJob]:
        """Take back the jobs whose lease ended; ``renew`` (the caller's own heartbeats)
        is applied first, in the same transaction."""

    def watch(self, job_id: int) -> str | None:
        """Mark a job as waited for, so that the transaction that ends it wakes waiters
        (in every process); its status, or None if there is no such job."""

    def watch_batch(self, batch_id: int) -> None:
        """Mark every unfinished job of a batch as waited for."""

    def limited_due(self, claim: ClaimRequest) -> LimitedDue:
        """When limited jobs can next be claimed under ``claim.limits`` (a slot that frees
        when a running job ends is signalled instead)."""

    def limit_usage(self, limit: int) -> list[tuple[str, int, int, int]]:
        """Per limit key (up to ``limit`` keys): queued and processing jobs, and the starts
        within the last hour (for status)."""

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

    def cancel(self, job_id: int) -> str | None:
        """Cancel a queued job or flag a running one; its status then, None if neither."""

    def retry(self, job_ids: Sequence[int]) -> list[int]:
        """Queue failed or cancelled jobs again with fresh attempts; the ids re-queued.
        DuplicateJob if another active job holds one's unique key."""

    def purge(self, older_than: float, dead_after: float) -> int:
        """Delete jobs that finished more than ``older_than`` seconds ago, then batches left
        with no job, and the rows of workers that stopped (or were silent for
        ``dead_after`` seconds) that long ago; how many jobs."""

    def checkpoint(self) -> tuple[int, int, int]:
        """Fold the engine's log into its main storage when idle: (busy, log, folded)."""

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

    def dependencies(self, job_id: int) -> tuple[list[int], list[int]] | None:
        """The unfinished jobs the job waits for, and the jobs waiting for it (None: no such
        job)."""

    def throughput(self, minutes: int) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute (the epoch second it starts, by the engine's clock), and the
        (minute, completed, failed) rows of the last ``minutes`` minutes up to it."""

    def batch(self, batch_id: int) -> BatchProgress | None:
        """The batch's counts, or None if there is no such batch."""

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None."""

    def batch_jobs(self, batch_id: int) -> list[JobRecord]:
        """Rows of the batch's jobs in enqueue order."""

    def next_run_at(self, queues: tuple[str, ...] | None) -> tuple[float | None, float]:
        """The earliest ``run_at`` of a queued job in ``queues`` (None: every queue), and
        the clock's now: how long until it is due, whatever the host."""

    def next_lease_expiry(self) -> tuple[float | None, float]:
        """When the earliest lease of a processing job ends (None: none), and now."""

    def snapshot(self, alive_window: float) -> Snapshot:
        """Counts, the earliest run_at and the workers' totals, for ``stats()``."""

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts (or starts again under the same id)."""

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row (write it anew if it is missing)."""

    def workers(self, limit: int) -> list[WorkerInfo]:
        """The workers as they last reported, most recently started first."""


# --- lock and retry telemetry, and the shape of every engine's retry policy ---------------


class LockMetrics:
    """Counters of waiting for the database, shared by every thread of one backend: write
    transactions, time spent waiting to begin them, retries, and bounds spent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes = 0
        self.wait = 0.0
        self.wait_max = 0.0
        self.retries = 0
        self.busy_errors = 0

    def record_write(self, waited: float) -> None:
        """Count one write transaction and how long it waited to begin."""
        with self._lock:
            self.writes += 1
            self.wait += waited
            if waited > self.wait_max:
                self.wait_max = waited

    def record_retry(self, state: RetryCallState) -> None:
        """Count one retry and the wait before it (tenacity's before_sleep)."""
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        with self._lock:
            self.retries += 1
            self.wait += sleep
        log.debug("database busy, retry %d in %.3fs", state.attempt_number, sleep)

    def record_first_busy(self) -> None:
        """Count the error that hands an operation over to the retry policy."""
        with self._lock:
            self.retries += 1

    def record_busy_error(self) -> None:
        """Count an operation that gave up: the fault lasted past the time bound."""
        with self._lock:
            self.busy_errors += 1

    def snapshot(self) -> LockStats:
        """The counters so far, as one consistent value."""
        with self._lock:
            return LockStats(
                writes=self.writes,
                lock_wait_seconds=self.wait,
                lock_wait_max_seconds=self.wait_max,
                lock_retries=self.retries,
                busy_errors=self.busy_errors,
            )


class RetryPolicy:
    """The one retry policy of an engine: only on the faults that pass (``transient``),
    full-jitter exponential waits, bounded in time. When the bound is spent the caller gets
    DatabaseBusy within ``timeout`` of the call (plus one statement's time), or, when the
    last fault says the database cannot be reached at all (``unreachable``), the error
    ``translate`` names for it; every other error becomes the library error it names.

    ``waits_for`` lets the engine cut its own waits to what is left.
    """

    def __init__(
        self,
        timeout: float,
        metrics: LockMetrics,
        *,
        transient: Callable[[BaseException], bool],
        translate: Callable[[BaseException, str], SqliteJobQError],
        engine_errors: tuple[type[BaseException], ...],
        exhausted: str = "the database stayed busy",
        unreachable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.timeout = timeout
        self.exhausted = exhausted
        self.unreachable = unreachable
        self.metrics = metrics
        self.transient = transient
        self.translate = translate
        self.engine_errors = engine_errors
        self._retrying = Retrying(
            retry=retry_if_exception(transient),
            wait=wait_random_exponential(multiplier=0.002, max=0.5),
            before_sleep=metrics.record_retry,
        )

    def __call__(self, fn: Callable[[], T], what: str, conn: Any = None) -> T:
        """Run ``fn`` under the policy; ``what`` names the operation in error messages,
        ``conn`` the connection ``fn`` uses (for ``waits_for``)."""
        # the uncontended case pays for one plain call; the policy takes over at the
        # first transient error, with what is left of the time bound
        deadline = time.monotonic() + self.timeout
        try:
            return fn()
        except self.engine_errors as exc:
            if not self.transient(exc):
                raise self.translate(exc, what) from exc
            self.metrics.record_first_busy()
            if time.monotonic() >= deadline:  # the first attempt spent the bound: no second
                self.metrics.record_busy_error()
                raise self._gave_up(exc, what, 1) from exc
        wait = self._retrying.wait
        before_retry, after_retries = self.waits_for(conn)

        def until_deadline(state: RetryCallState) -> float:
            return max(0.0, min(wait(state), deadline - time.monotonic()))

        def cut(state: RetryCallState) -> None:
            if before_retry is not None:
                before_retry(deadline - time.monotonic())

        try:
            return self._retrying.copy(
                stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
                wait=until_deadline,
                before=cut,
            )(fn)
        except RetryError as exc:
            self.metrics.record_busy_error()
            last = exc.last_attempt.exception()
            assert last is not None  # a RetryError ends a run of failed attempts
            raise self._gave_up(last, what, exc.last_attempt.attempt_number + 1) from last
        except self.engine_errors as exc:
            raise self.translate(exc, what) from exc
        finally:
            if after_retries is not None:
                after_retries()

    def _gave_up(self, last: BaseException, what: str, attempts: int) -> SqliteJobQError:
        """The error once the bound is spent: the database is gone, or it stayed busy."""
        if self.unreachable is not None and self.unreachable(last):
            return self.translate(last, what)  # not busy: gone
        return DatabaseBusy(
            f"{what}: {self.exhausted} for more than {self.timeout:g}s "
            f"({attempts} attempt{'s' if attempts != 1 else ''}; last error: {last})"
        )

    def waits_for(
        self, conn: Any
    ) -> tuple[Callable[[float], None] | None, Callable[[], None] | None]:
        """Once retries begin: what to run before each retry (given the seconds left) and
        after the last, e.g. to cut the engine's own lock wait on ``conn``."""
        return None, None


# --- counts kept beside the jobs ---------------------------------------------------------

BATCH_COLUMNS = ("total", "queued", "processing", "completed", "failed", "cancelled", "waiting")
#: The statuses a job ends in: its dependents are released when it reaches one.
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})


class Tally:
    """How one transaction moved jobs between statuses; each engine writes it before the
    transaction commits, so the counts by queue and by batch change with the jobs."""

    __slots__ = ("batches", "finished", "freed_limit", "queues", "released", "watched_ended")

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], int] = {}
        self.batches: dict[int, dict[str, int]] = {}
        #: (id, completed?) of jobs with dependents that reached an end state
        self.finished: list[tuple[int, bool]] = []
        #: a limited job left processing: a slot freed for workers waiting on its limit
        self.freed_limit = False
        #: queues where waiting jobs became queued
        self.released: set[str] = set()
        #: a job someone waits for (``Queue.wait``) reached an end state
        self.watched_ended = False

    def changed(self, row: Sequence[Any], old: str | None) -> None:
        """One job moved from ``old``, as a status-changing statement returned it:
        (status, queue, batch_id, id, has_dependents, limit_key, watched)."""
        new, queue, batch_id, job_id, dependents, limit_key, watched = row[:7]
        if watched and new in FINISHED_STATUSES:
            self.watched_ended = True
        self.move(queue, batch_id, old, new)
        if dependents and new in FINISHED_STATUSES and old not in FINISHED_STATUSES:
            self.finished.append((job_id, new == "completed"))
        if limit_key is not None and old == "processing" and new != "processing":
            self.freed_limit = True
        if old == "waiting" and new == "queued":
            self.released.add(queue)

    def move(self, queue: str, batch_id: int | None, old: str | None, new: str | None) -> None:
        """One job went from status ``old`` to ``new`` (None: it was inserted or deleted)."""
        if old == new:
            return
        if old is not None:
            self.queues[queue, old] = self.queues.get((queue, old), 0) - 1
        if new is not None:
            self.queues[queue, new] = self.queues.get((queue, new), 0) + 1
        if batch_id is not None and new is not None:
            counts = self.batches.setdefault(batch_id, dict.fromkeys(BATCH_COLUMNS, 0))
            counts[new] += 1
            if old is None:
                counts["total"] += 1
            else:
                counts[old] -= 1

    def changed_queues(self) -> list[tuple[str, str, int]]:
        """(queue, status, delta) of every count that changed, sorted by key."""
        changed = [(q, s, n) for (q, s), n in self.queues.items() if n]
        if len(changed) > 1:
            changed.sort()
        return changed


# --- migrations: the values every engine's runner takes ------------------------------------

MigrationBody = str | Callable[[Any], None]
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: a version, a name, and SQL text or a callable taking a connection.

    SQL text may hold several statements; they run inside the migration's transaction.
    A callable gets the engine's transaction connection (it can read and write, not commit).
    """

    version: int
    name: str
    sql: MigrationBody

    def __post_init__(self) -> None:
        validation.integer(self.version, "migration version", minimum=1)
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgument(
                f"migration {self.version} needs a non-empty name, got {self.name!r}"
            )
        if isinstance(self.sql, str):
            if not _COMMENTS.sub("", self.sql).strip(" \t\r\n;"):
                raise InvalidArgument(f"migration {self.version} ({self.name}) has no SQL")
        elif not callable(self.sql):
            raise InvalidArgumentType(
                f"migration {self.version} sql must be SQL text or a callable, "
                f"got {type(self.sql).__name__}"
            )

    @property
    def checksum(self) -> str:
        """A digest of the migration's text: an applied migration must never change."""
        if isinstance(self.sql, str):
            text = "\n".join(line.rstrip() for line in self.sql.strip().splitlines())
        else:
            try:
                text = inspect.getsource(self.sql)
            except (OSError, TypeError):
                text = f"{self.sql.__module__}.{self.sql.__qualname__}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A migration recorded as applied in the database."""

    version: int
    name: str
    checksum: str
    applied_at: float


class MigrationRunner(Protocol):
    """An engine's way of applying migrations: each in its own transaction with its
    bookkeeping row, serialized between processes, retried like every write."""

    def applied(self, namespace: str) -> list[AppliedMigration]:
        """The migrations recorded as applied in ``namespace``, oldest first."""

    def apply(
        self, migrations: list[Migration], namespace: str, *, dry_run: bool, backup: str | None
    ) -> list[int]:
        """Apply the missing ones in order; the versions applied (or that would be)."""

    def close(self) -> None:
        """Release what the runner opened."""


def checked_migrations(migrations: Iterable[Migration], namespace: str) -> list[Migration]:
    """The migrations, checked and in version order; a version listed twice is refused."""
    if isinstance(migrations, Migration) or not isinstance(migrations, Iterable):
        raise InvalidArgumentType("migrations must be a list of Migration")
    ordered = list(migrations)
    for migration in ordered:
        if not isinstance(migration, Migration):
            raise InvalidArgumentType(
                f"migrations must be Migration values, got {type(migration).__name__}"
            )
    versions = [m.version for m in ordered]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise MigrationError(f"namespace {namespace!r} lists version(s) {duplicates} twice")
    return sorted(ordered, key=lambda m: m.version)


def pending(
    ordered: list[Migration], applied: list[AppliedMigration], namespace: str
) -> list[Migration]:
    """The migrations not applied yet; MigrationError if the database records a version
    this code does not know, or one whose text changed (it is newer than the code)."""
    known = {m.version: m for m in ordered}
    for record in applied:
        migration = known.get(record.version)
        if migration is None:
            raise MigrationError(
                f"database has migration {namespace}:{record.version} ({record.name}) applied, "
                f"which this code does not know (known: {sorted(known) or 'none'}); is the "
                f"database newer than the code?"
            )
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"migration {namespace}:{record.version} ({record.name}) was applied with "
                f"different text; applied migrations must not change — add a new version instead"
            )
    done = {record.version for record in applied}
    return [m for m in ordered if m.version not in done]


def options_of(engine: str, options: dict[str, Any], known: Sequence[str]) -> None:
    """Refuse an option the engine does not take, naming the ones it does."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InvalidArgument(
            f"unknown option(s) for the {engine} engine: {', '.join(unknown)} (it takes: "
            f"{', '.join(sorted(known))})"
        )


__all__ = [
    "FINISHED_STATUSES",
    "HOOK",
    "HOOK_FAILED",
    "LIMIT_KEY_SEPARATOR",
    "QUEUE_RULE_PREFIX",
    "STATUS_STEPS",
    "THROUGHPUT_KEPT",
    "AppliedMigration",
    "Backend",
    "Capabilities",
    "ClaimRequest",
    "JobRecord",
    "LimitQueries",
    "LimitRule",
    "LimitedClaim",
    "LimitedDue",
    "LockMetrics",
    "Migration",
    "MigrationRunner",
    "NewJob",
    "RescuedJob",
    "RetryPolicy",
    "Snapshot",
    "Step",
    "StepParams",
    "Tally",
    "Waker",
    "WorkerRecord",
    "dependency_outcome",
    "keys_for_unkeyed",
    "limit_key_of",
    "listing_by",
    "plan_limited_claim",
    "plan_limited_in",
    "rule_for",
    "task_of_limit_key",
]
