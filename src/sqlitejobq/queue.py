"""The public API: a job queue over one SQLite file."""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import time
import traceback as traceback_module
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, overload

from . import validation
from .errors import (
    DuplicateJob,
    InvalidArgument,
    InvalidArgumentType,
    JobNotFound,
    JobTimeout,
    PayloadError,
    PermanentFailure,
)
from .job import (
    PROGRESS_WRITE_INTERVAL,
    Batch,
    BatchProgress,
    Claim,
    Job,
    JobStatus,
    LockStats,
    QueueStats,
    WorkerInfo,
    job_from_values,
)
from .registry import CompletionHook, Handler, Registry
from .storage import (
    HOOK,
    HOOK_FAILED,
    SYNCHRONOUS_LEVELS,
    ClaimRequest,
    Row,
    Settings,
    SqliteStorage,
    Step,
    Storage,
)

log = logging.getLogger("sqlitejobq")

H = TypeVar("H", bound=Handler)

#: A worker is counted as alive while it reported within this many seconds.
WORKER_ALIVE_WINDOW = 60.0
_MAX_CLAIM = 10_000
#: The longest a job handed back by a worker that does not know its task waits before
#: another worker looks at it.
_UNKNOWN_TASK_RECHECK = 2.0
_STATUS = {s.value: s for s in JobStatus}


class Queue:
    """A job queue over one SQLite file, safe to share between threads.

    Opening it creates the file if needed, switches it to WAL and applies the library's
    migrations; a file it refuses (not a database, another app's tables named like the
    library's, a newer schema) is left exactly as it was. Each thread uses its own
    connection; a forked child opens new ones. ``job_timeout`` is the longest a job may
    run when its task sets no ``timeout`` (None: no limit).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registry: Registry | None = None,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        retry_timeout: float = 30.0,
        max_attempts: int = 3,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 600.0,
        max_payload_bytes: int = 1024 * 1024,
        job_timeout: float | None = None,
        journal_size_limit: int = 64 * 1024 * 1024,
        allow_network_filesystem: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise InvalidArgumentType(
                f"path must be a str or os.PathLike, got {type(path).__name__}: {path!r}"
            )
        if registry is not None and not isinstance(registry, Registry):
            raise InvalidArgumentType(f"registry must be a Registry, got {type(registry).__name__}")
        if not callable(clock):
            raise InvalidArgumentType("clock must be a callable returning epoch seconds")
        settings = Settings(
            synchronous=validation.choice(synchronous, "synchronous", SYNCHRONOUS_LEVELS),
            busy_timeout=validation.seconds(busy_timeout, "busy_timeout"),
            retry_timeout=validation.seconds(retry_timeout, "retry_timeout", positive=True),
            journal_size_limit=validation.integer(
                journal_size_limit, "journal_size_limit", minimum=-1
            ),
            allow_network_filesystem=bool(allow_network_filesystem),
        )
        self.max_attempts = validation.integer(max_attempts, "max_attempts", minimum=1)
        self.retry_backoff = validation.seconds(retry_backoff, "retry_backoff")
        self.retry_backoff_max = validation.seconds(retry_backoff_max, "retry_backoff_max")
        self.max_payload_bytes = validation.integer(
            max_payload_bytes, "max_payload_bytes", minimum=2
        )
        self.job_timeout = (
            None if job_timeout is None
            else validation.seconds(job_timeout, "job_timeout", positive=True)
        )  # fmt: skip
        self.registry = registry if registry is not None else Registry()
        self.clock = clock
        self._storage: Storage = SqliteStorage(path, settings)
        try:
            self._storage.migrate_schema()
        except BaseException:
            self._storage.close()
            raise

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file."""
        return self._storage.path

    @property
    def settings(self) -> Settings:
        """Connection and retry settings (synchronous level, timeouts)."""
        return self._storage.settings

    def close(self) -> None:
        """Close this process's connections. Safe to call twice."""
        self._storage.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Queue({self.path!r}, synchronous={self.settings.synchronous!r})"

    @overload
    def task(self, name: H, /) -> H: ...

    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        max_attempts: int | None = None,
        lease: float | None = None,
        timeout: float | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        on_complete: CompletionHook | None = None,
    ) -> Callable[[H], H]: ...

    def task(
        self,
        name: str | H | None = None,
        /,
        *,
        max_attempts: int | None = None,
        lease: float | None = None,
        timeout: float | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        on_complete: CompletionHook | None = None,
    ) -> H | Callable[[H], H]:
        """Register a handler on this queue's registry; same arguments as Registry.task."""
        if callable(name):
            return self.registry.task(name)
        return self.registry.task(
            name,
            max_attempts=max_attempts,
            lease=lease,
            timeout=timeout,
            backoff=backoff,
            backoff_max=backoff_max,
            queue=queue,
            priority=priority,
            on_complete=on_complete,
        )

    # --- enqueue --------------------------------------------------------------------------

    def enqueue(
        self,
        task: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float = 0.0,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        connection: sqlite3.Connection | None = None,
    ) -> int:
        """Add one job; returns its id.

        With ``unique_key``, if a queued or processing job already holds the key, nothing
        is added and that job's id is returned. With ``connection``, the job is written in
        the caller's open transaction on the same file and exists once the caller commits.
        """
        now = self.clock()
        make_row = self._row_maker(task, queue, priority, delay, max_attempts, unique_key, now)
        row = make_row(payload)
        _, ids = self._storage.insert_jobs(
            [row], now=now, connection=_checked_connection(connection)
        )
        if connection is None:
            self._storage.notify()
        if log.isEnabledFor(logging.INFO):
            log.info("job %d %s queued in %r", ids[0], task, row[1])
        return ids[0]

    def enqueue_many(
        self,
        task: str,
        payloads: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float = 0.0,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        connection: sqlite3.Connection | None = None,
    ) -> list[int]:
        """Add one job per payload in one transaction; the options apply to every job."""
        return self._enqueue_all(
            task, payloads, None, False,
            queue=queue, priority=priority, delay=delay, max_attempts=max_attempts,
            unique_key=unique_key, connection=connection,
        )[1]  # fmt: skip

    def enqueue_batch(
        self,
        task: str,
        payloads: Iterable[Any],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float = 0.0,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        connection: sqlite3.Connection | None = None,
    ) -> Batch:
        """Add jobs as one batch, followed with ``batch_progress``."""
        batch_id, ids = self._enqueue_all(
            task, payloads, validation.optional_text(name, "batch name", max_length=200), True,
            queue=queue, priority=priority, delay=delay, max_attempts=max_attempts,
            unique_key=unique_key, connection=connection,
        )  # fmt: skip
        assert batch_id is not None
        return Batch(batch_id, ids)

    def _enqueue_all(
        self,
        task: str,
        payloads: Iterable[Any],
        batch_name: str | None,
        make_batch: bool,
        *,
        queue: str | None,
        priority: int | None,
        delay: float,
        max_attempts: int | None,
        unique_key: str | None,
        connection: sqlite3.Connection | None,
    ) -> tuple[int | None, list[int]]:
        if isinstance(payloads, str | bytes | dict) or not isinstance(payloads, Iterable):
            raise InvalidArgumentType(
                f"payloads must be a list (or other iterable) of payloads, "
                f"got {type(payloads).__name__}"
            )
        now = self.clock()
        make_row = self._row_maker(task, queue, priority, delay, max_attempts, unique_key, now)
        rows = []
        for index, payload in enumerate(payloads):
            try:
                rows.append(make_row(payload))
            except PayloadError as exc:
                raise PayloadError(f"payload #{index}: {exc}") from None
        if not rows and not make_batch:
            return None, []
        batch_id, ids = self._storage.insert_jobs(
            rows,
            batch_name=batch_name,
            make_batch=make_batch,
            now=now,
            connection=_checked_connection(connection),
        )
        if connection is None:
            self._storage.notify()
        if ids and log.isEnabledFor(logging.INFO):
            where = f" as batch {batch_id}" if batch_id is not None else ""
            log.info("jobs %d..%d %s queued in %r%s (%d jobs)", min(ids), max(ids), task,
                     rows[0][1], where, len(ids))  # fmt: skip
        return batch_id, ids

    def _row_maker(
        self,
        task: str,
        queue: str | None,
        priority: int | None,
        delay: float,
        max_attempts: int | None,
        unique_key: str | None,
        now: float,
    ) -> Callable[[Any], tuple[Any, ...]]:
        """Validate the options once; the returned function encodes one payload into a row."""
        validation.name(task, "task")
        options = self.registry.options(task)
        queue_name = validation.name(
            queue if queue is not None else options.queue or "default", "queue"
        )
        prio = validation.integer(
            priority if priority is not None else options.priority or 0, "priority"
        )
        run_at_offset = validation.seconds(delay, "delay")
        attempts = validation.integer(
            max_attempts if max_attempts is not None
            else options.max_attempts or self.max_attempts,
            "max_attempts", minimum=1,
        )  # fmt: skip
        key = validation.optional_text(unique_key, "unique_key", max_length=1000)
        run_at = now + run_at_offset
        encode = self._encode

        def make_row(payload: Any) -> tuple[Any, ...]:
            return (task, queue_name, encode(payload, "payload"), prio, run_at, attempts, key)

        return make_row

    def _encode(self, value: Any, what: str) -> str:
        return encode_json(value, what, self.max_payload_bytes)

    # --- the worker's cycle ---------------------------------------------------------------

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
        request = self.claim_request(worker_id, queues, limit, lease)
        jobs = self._settle([], request)[1]
        bad = [job for job in jobs if job._claim is not None and job._claim.undecodable]
        if bad:
            now = self.clock()
            self._finish([(job, self._undecodable_step(job, now)) for job in bad])
            jobs = [job for job in jobs if job not in bad]
        for job in jobs:
            job._claim.timeout = self.timeout_of(job.task)  # type: ignore[union-attr]
        return jobs

    def _undecodable_step(self, job: Job, now: float) -> tuple[Step, dict[str, Any]]:
        """Fail at once a claimed job whose stored payload cannot be decoded."""
        problem = _claim_of(job).undecodable or "undecodable payload"
        return self._fail_step(job, PayloadError(problem), None, False, None, now)

    def timeout_of(self, task: str) -> float | None:
        """How long one run of ``task`` may take: the task's ``timeout``, else the queue's
        ``job_timeout`` (None: no limit)."""
        timeout = self.registry.options(task).timeout
        return timeout if timeout is not None else self.job_timeout

    def claim_request(
        self, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> ClaimRequest:
        """Checked arguments of a claim, dated now (what ``claim`` and workers send)."""
        validation.name(worker_id, "worker_id")
        names = validation.names(queues, "queues")
        count = validation.integer(limit, "limit", minimum=1)
        if count > _MAX_CLAIM:
            raise InvalidArgument(f"limit must be <= {_MAX_CLAIM}, got {count}")
        seconds = validation.seconds(lease, "lease", positive=True)
        return ClaimRequest(worker_id, names, count, seconds, self.clock())

    def complete(self, job: Job, result: Any = None) -> bool:
        """Record success. False (and no change) if this claim no longer owns the job."""
        return self.complete_many([(job, result)])[0]

    def complete_many(self, outcomes: Sequence[tuple[Job, Any]]) -> list[bool]:
        """Record several successes in one transaction; one bool per job as in complete."""
        now = self.clock()
        steps = [(job, self._complete_step(job, result, now)) for job, result in outcomes]
        return self._finish(steps)

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
        step = self._fail_step(job, error, traceback, retry, retry_in, self.clock())
        return self._finish([(job, step)])[0]

    def _complete_step(self, job: Job, result: Any, now: float) -> tuple[Step, dict[str, Any]]:
        claim = _claim_of(job)
        params = {
            **_fence(job, claim),
            "result": self._encode(result, "result"),
            "message": claim.pending_message,
            "now": now,
        }
        hook = self.registry.options(job.task).on_complete
        if hook is not None:
            params[HOOK] = lambda conn: hook(conn, job, result)
            params[HOOK_FAILED] = lambda exc: self._fail_step(
                job, exc, None, not isinstance(exc, PermanentFailure), None, now
            )[1]
        return Step.COMPLETE, params

    def _fail_step(
        self,
        job: Job,
        error: str | BaseException,
        trace: str | None,
        retry: bool,
        retry_in: float | None,
        now: float,
    ) -> tuple[Step, dict[str, Any]]:
        claim = _claim_of(job)
        if isinstance(error, BaseException):
            if trace is None and error.__traceback__ is not None:
                trace = "".join(traceback_module.format_exception(error))
            error = f"{type(error).__name__}: {error}"
        elif not isinstance(error, str):
            raise InvalidArgumentType(
                f"error must be a str or an exception, got {type(error).__name__}"
            )
        error = validation.storable_text(error)
        trace = None if trace is None else validation.storable_text(trace)
        again = retry and job.attempts < job.max_attempts
        if retry_in is not None:
            delay = validation.seconds(retry_in, "retry_in")
        else:
            delay = self.backoff(job.task, job.attempts) if again else 0.0
        return Step.FAIL, {
            **_fence(job, claim),
            "status": "queued" if again else "failed",
            "run_at": now + delay,
            "error": error[:10_000],
            "traceback": trace[:50_000] if trace else None,
            "message": claim.pending_message,
            "now": now,
        }

    def _defer_step(
        self, job: Job, worker: str, window: float, now: float
    ) -> tuple[Step, dict[str, Any]]:
        """Hand back a job whose task ``worker`` does not know, its attempt not counted: it
        waits for a worker that knows the task, up to ``window`` seconds from the first
        time one that did not handed it back, then fails with UnknownTask."""
        recheck = min(_UNKNOWN_TASK_RECHECK, window / 4)
        return Step.DEFER, {
            **_fence(job, _claim_of(job)),
            "now": now,
            "run_at": now + recheck,
            "give_up_before": now - window,
            "waiting_error": f"UnknownTask: waiting up to {window:g}s for a worker that knows "
            f"task {job.task!r} (worker {worker} does not)",
            "failed_error": f"UnknownTask: no worker that knows task {job.task!r} took the job "
            f"within {window:g}s; register a handler for it and retry the job",
        }

    def _finish(self, steps: Sequence[tuple[Job, tuple[Step, dict[str, Any]]]]) -> list[bool]:
        if not steps:
            return []
        return [status is not None for status in self._settle(steps, None)[0]]

    def _settle(
        self,
        steps: Sequence[tuple[Job, tuple[Step, dict[str, Any]]]],
        request: ClaimRequest | None,
    ) -> tuple[list[str | None], list[Job]]:
        """Record outcomes of claimed jobs and claim more, in one transaction.

        Returns each job's status after its step (None: the claim no longer owned it, and
        nothing changed), and the jobs newly claimed.
        """
        statuses, rows = self._storage.exchange([step for _, step in steps], request)
        if log.isEnabledFor(logging.INFO):
            for (job, (_, params)), status in zip(steps, statuses, strict=True):
                _log_outcome(job, status, params)
        jobs: list[Job] = []
        if request is not None and rows:
            jobs = [self._job(row, Claim(request.worker, request.lease)) for row in rows]
            jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
            if log.isEnabledFor(logging.INFO):
                for job in jobs:
                    log.info("job %d %s processing, attempt %d/%d (worker %s)", job.id,
                             job.task, job.attempts, job.max_attempts, request.worker)  # fmt: skip
        return statuses, jobs

    def backoff(self, task: str, attempts: int) -> float:
        """Seconds before the retry that follows failed attempt number ``attempts``.

        Exponential from the task's (or queue's) ``backoff``, capped at ``backoff_max``,
        with jitter over the upper half so that failures of one cause spread out.
        """
        options = self.registry.options(task)
        base = options.backoff if options.backoff is not None else self.retry_backoff
        cap = options.backoff_max if options.backoff_max is not None else self.retry_backoff_max
        ceiling = min(cap, base * 2.0 ** min(max(attempts - 1, 0), 60))
        return ceiling / 2.0 + random.random() * ceiling / 2.0

    def heartbeat(self, job: Job, lease: float | None = None) -> bool:
        """Extend the job's lease (by its claim's lease unless given); writes any progress
        report held back by rate limiting. False if this claim no longer owns the job;
        JobTimeout once the job has run past its timeout."""
        claim = _claim_of(job)
        seconds = (
            claim.lease if lease is None else validation.seconds(lease, "lease", positive=True)
        )
        _refuse_timed_out(job, claim)
        with claim.lock:
            if claim.pending_progress is not None:
                return self._write_progress(job, claim, claim.pending_progress,
                                            claim.pending_message)  # fmt: skip
            return self._renew(job, claim, Step.HEARTBEAT, {"lease_until": self.clock() + seconds})

    def set_progress(self, job: Job, progress: float, message: str | None = None) -> bool:
        """Record progress (0.0..1.0) and an optional message; also extends the lease.

        Writes of one job are spaced at least 0.25 s apart; a report in between is kept
        and written by the next report or heartbeat. JobTimeout once the job has run past
        its timeout: the handler should let it propagate.
        """
        claim = _claim_of(job)
        value = validation.fraction(progress, "progress")
        text = validation.optional_text(message, "progress message", max_length=2000)
        _refuse_timed_out(job, claim)
        with claim.lock:
            if time.monotonic() - claim.progress_written_at < PROGRESS_WRITE_INTERVAL:
                claim.pending_progress = value
                claim.pending_message = text if text is not None else claim.pending_message
                return True
            return self._write_progress(job, claim, value, text)

    def _write_progress(self, job: Job, claim: Claim, progress: float, message: str | None) -> bool:
        owned = self._renew(job, claim, Step.PROGRESS, {
            "progress": progress, "message": message,
            "lease_until": self.clock() + claim.lease,
        })  # fmt: skip
        claim.progress_written_at = time.monotonic()
        claim.pending_progress = None
        claim.pending_message = None
        return owned

    def _renew(self, job: Job, claim: Claim, step: Step, params: dict[str, Any]) -> bool:
        [cancel_flag], _ = self._storage.exchange([(step, {**_fence(job, claim), **params})], None)
        _note_cancel_flag(claim, cancel_flag, time.monotonic())
        return cancel_flag is not None

    def heartbeat_many(self, jobs: Sequence[Job]) -> list[bool]:
        """Extend the leases of several running jobs in one transaction (what workers do)."""
        if not jobs:
            return []
        now = self.clock()
        claims = [_claim_of(job) for job in jobs]
        flags, _ = self._storage.exchange([
            (Step.HEARTBEAT, {**_fence(job, claim), "lease_until": now + claim.lease})
            for job, claim in zip(jobs, claims, strict=True)
        ], None)  # fmt: skip
        checked = time.monotonic()
        for claim, flag in zip(claims, flags, strict=True):
            _note_cancel_flag(claim, flag, checked)
        return [flag is not None for flag in flags]

    def release(self, jobs: Sequence[Job]) -> int:
        """Return claimed jobs that never started to the queue, their attempt not counted."""
        now = self.clock()
        steps = [(job, (Step.RELEASE, {**_fence(job, _claim_of(job)), "now": now})) for job in jobs]
        return sum(self._finish(steps))

    def abandon(self, jobs: Sequence[Job], error: str) -> list[bool]:
        """End runs that will not report (a worker stopping hard): each counts as an attempt,
        back to the queue while attempts remain, else failed."""
        now = self.clock()
        steps = [
            (job, (Step.ABANDON, {**_fence(job, _claim_of(job)), "now": now, "error": error}))
            for job in jobs
        ]
        return self._finish(steps)

    def rescue_expired(self, renew: Sequence[Job] = ()) -> list[int]:
        """Take back jobs whose lease expired (their worker died or hung): to ``queued`` while
        attempts remain, else ``failed``. Workers call this; it returns the job ids.

        ``renew``: the caller's own running jobs, whose leases are extended first in the same
        transaction, so that a worker never takes back a job it still runs (after a forward
        jump of the clock, say)."""
        now = self.clock()
        expiry = self.next_lease_expiry()
        if expiry is None or expiry >= now:
            return []
        steps = [
            (Step.HEARTBEAT, {**_fence(job, claim), "lease_until": now + claim.lease})
            for job in renew
            if (claim := _claim_of(job)) is not None
        ]
        rows = self._storage.rescue_expired(
            now, "lease expired: the worker stopped renewing it (crashed, killed or hung)", steps
        )
        for job_id, task, status, attempts, max_attempts, worker, *_ in rows:
            log.warning("job %d %s lease expired (worker %s, attempt %d/%d): now %s", job_id,
                        task, worker, attempts, max_attempts, status)  # fmt: skip
        if rows:
            self._storage.notify()
        return [row[0] for row in rows]

    def next_lease_expiry(self) -> float | None:
        """When the earliest lease of a processing job ends (None if nothing runs)."""
        return self._storage.next_lease_expiry()

    def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        """The earliest ``run_at`` of a queued job in ``queues`` (None: no queued job)."""
        return self._storage.next_run_at(validation.names(queues, "queues"))

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the file."""
        return self._storage.data_version()

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job (read from the database)."""
        return self._storage.cancel_requested(job_id)

    # --- operator actions -----------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Cancel a job: a queued one becomes ``cancelled`` at once; a processing one is
        marked so its handler sees ``job.cancelled`` and its outcome is ``cancelled``.
        False if the job had already finished."""
        validation.integer(job_id, "job_id")
        status = self._storage.cancel(job_id, self.clock())
        if status is None:
            self._status_of(job_id)
            return False
        log.info(
            "job %d %s",
            job_id,
            "cancelled" if status == "cancelled" else "cancel requested while processing",
        )
        return True

    def retry(self, job_id: int) -> bool:
        """Put a failed or cancelled job back in the queue with fresh attempts.

        False if the job is not failed or cancelled. DuplicateJob if its unique key is
        held by another active job.
        """
        validation.integer(job_id, "job_id")
        done = self._storage.retry([job_id], self.clock())
        if not done:
            self._status_of(job_id)
            return False
        self._storage.notify()
        log.info("job %d queued again (retry)", job_id)
        return True

    def retry_failed(self) -> list[int]:
        """Retry every failed job whose unique key is free; returns the ids re-queued."""
        requeued = []
        for job_id in self._storage.failed_ids():
            try:
                if self.retry(job_id):
                    requeued.append(job_id)
            except DuplicateJob as exc:
                log.warning("%s", exc)
        return requeued

    def purge(self, older_than: float) -> int:
        """Delete completed, failed and cancelled jobs that finished more than ``older_than``
        seconds ago; returns how many. Batch counts keep the purged jobs.

        Batches go once none of their jobs is left; the rows of workers go once they stopped
        or went silent (a minute without a report) before the cutoff. Nothing alive goes:
        not a queued or processing job, not a batch with one, not a running worker's row."""
        now = self.clock()
        cutoff = now - validation.seconds(older_than, "older_than")
        count = self._storage.purge(cutoff, now - WORKER_ALIVE_WINDOW)
        log.info("purged %d finished jobs older than %gs", count, older_than)
        return count

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database file and truncate it when no reader is in the way.

        Returns SQLite's (busy, wal frames, frames checkpointed).
        """
        return self._storage.checkpoint()

    # --- reads ----------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job with this id; JobNotFound if there is none."""
        validation.integer(job_id, "job_id")
        row = self._storage.get_job(job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id} in {self.path}")
        return self._job(row)

    def _status_of(self, job_id: int) -> JobStatus:
        status = self._storage.job_status(job_id)
        if status is None:
            raise JobNotFound(f"no job with id {job_id} in {self.path}")
        return _STATUS[status]

    def jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        batch_id: int | None = None,
        limit: int = 100,
        oldest_first: bool = False,
    ) -> list[Job]:
        """Jobs matching every filter given, newest first (or oldest first)."""
        if status is not None:
            try:
                status = JobStatus(status)
            except ValueError:
                raise InvalidArgument(
                    f"status must be one of {', '.join(s.value for s in JobStatus)}, got {status!r}"
                ) from None
        params = {
            "status": None if status is None else status.value,
            "queue": None if queue is None else validation.name(queue, "queue"),
            "task": None if task is None else validation.name(task, "task"),
            "batch_id": None if batch_id is None else validation.integer(batch_id, "batch_id"),
            "limit": validation.integer(limit, "limit", minimum=1),
        }
        return [self._job(row) for row in self._storage.list_jobs(params, oldest_first)]

    def batch_progress(self, batch_id: int) -> BatchProgress:
        """Counts of the batch's jobs by status, and the percentage finished."""
        validation.integer(batch_id, "batch_id")
        row = self._storage.batch(batch_id)
        if row is None:
            raise JobNotFound(f"no batch with id {batch_id} in {self.path}")
        return BatchProgress(*row)

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None if there is no batch."""
        return self._storage.latest_batch_id()

    def batch_jobs(self, batch_id: int) -> list[Job]:
        """Every job of the batch, in enqueue order."""
        validation.integer(batch_id, "batch_id")
        return [self._job(row) for row in self._storage.batch_jobs(batch_id)]

    def stats(self) -> QueueStats:
        """Counts by queue and status, the age of the oldest due job, and lock waiting:
        this process's own and the totals reported by every worker."""
        now = self.clock()

        counts_rows, earliest, workers = self._storage.snapshot(now - WORKER_ALIVE_WINDOW)
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in counts_rows:
            counts.setdefault(queue, {s.value: 0 for s in JobStatus})[status] = count
        return QueueStats(
            counts=counts,
            oldest_queued_age=None if earliest is None or earliest > now else now - earliest,
            next_run_at=earliest,
            lock=self._storage.metrics.snapshot(),
            workers_lock=LockStats(
                writes=workers[0],
                lock_wait_seconds=workers[1],
                lock_wait_max_seconds=workers[2],
                lock_retries=workers[3],
                busy_errors=workers[4],
            ),
            active_workers=workers[5],
        )

    def workers(self, *, limit: int = 50, alive_only: bool = False) -> list[WorkerInfo]:
        """Workers as they last reported, newest first; ``alive_only``: running and seen
        within the last minute."""
        found = [WorkerInfo(*row) for row in self._storage.workers(
            validation.integer(limit, "limit", minimum=1))]  # fmt: skip
        if alive_only:
            since = self.clock() - WORKER_ALIVE_WINDOW
            found = [w for w in found if w.stopped_at is None and w.last_seen >= since]
        return found

    # --- helpers --------------------------------------------------------------------------

    def _job(self, row: Row, claim: Claim | None = None) -> Job:
        # row follows JOB_COLUMNS; payload and result are JSON text, status its value
        result = row[10]
        try:
            payload = json.loads(row[3])
            result = None if result is None else json.loads(result)
        except (ValueError, RecursionError) as exc:
            problem = f"job {row[0]}: its stored JSON cannot be decoded ({exc})"
            if claim is None:
                raise PayloadError(problem) from None
            claim.undecodable = problem  # the worker fails it; it never reaches a handler
            payload = result = None
        return job_from_values((
            *row[:3], payload, _STATUS[row[4]], *row[5:10], result, *row[11:21],
            bool(row[21]), None if claim is None else self, claim,
        ))  # fmt: skip


def encode_json(value: Any, what: str, max_bytes: int) -> str:
    """``value`` as compact JSON text that decodes back to an equal value; PayloadError
    naming the problem if it cannot: not JSON, NaN, nested too deeply, a lone surrogate,
    two keys that JSON would merge (``{1: "a", "1": "b"}``), or over ``max_bytes``."""
    if value is None:
        return "null"
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply to encode as JSON") from None
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} must be JSON-serializable: {exc}") from None
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise PayloadError(
                f"{what} is not valid Unicode text: {text[exc.start : exc.end]!r} is a lone "
                f"surrogate, which JSON text cannot carry"
            ) from None
    if size > max_bytes:
        raise PayloadError(f"{what} is {size} bytes as JSON, over the limit of {max_bytes}")
    problem = _json_problem(value)
    if problem is not None:
        raise PayloadError(f"{what} {problem}")
    return text


_JSON_KEYS = {True: "true", False: "false", None: "null"}
#: The deepest nesting of lists and objects a payload or result may have. Decoding JSON
#: recurses in Python's C stack; a fixed bound, well inside the interpreter's recursion
#: limit, keeps what was stored readable from any caller.
MAX_JSON_DEPTH = 100


def _json_problem(value: Any) -> str | None:
    """What JSON would lose of ``value``, if anything: nesting deeper than MAX_JSON_DEPTH,
    or two keys of one mapping that become the same text.

    JSON object keys are text, so ``json.dumps`` turns 1, 1.0, True and None into "1",
    "1.0", "true" and "null"; a mapping that also has that text as a key would lose one.
    """
    if type(value) not in _CONTAINERS and not isinstance(value, dict | list | tuple):
        return None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, dict):
            for key in item:
                if type(key) is not str:
                    collision = _colliding_keys(item)
                    if collision is not None:
                        return collision
                    break
            children = item.values()
        else:
            children = item
        for child in children:
            if type(child) in _CONTAINERS or isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return None


_CONTAINERS = frozenset({dict, list, tuple})


def _colliding_keys(mapping: dict[Any, Any]) -> str | None:
    seen: dict[str, Any] = {}
    for key in mapping:
        if isinstance(key, str):
            text = key
        elif key is None or isinstance(key, bool):
            text = _JSON_KEYS[key]
        else:
            text = json.dumps(key)
        if text in seen:
            return (f"has keys {seen[text]!r} and {key!r}, which are both {json.dumps(text)} "
                    f"in JSON: one would silently replace the other")  # fmt: skip
        seen[text] = key
    return None


def _claim_of(job: Job) -> Claim:
    if not isinstance(job, Job):
        raise InvalidArgumentType(f"expected a claimed Job, got {type(job).__name__}")
    if job._claim is None:
        raise InvalidArgument(
            f"job {job.id} was not claimed by this process (use a Job returned by claim())"
        )
    return job._claim


def _refuse_timed_out(job: Job, claim: Claim) -> None:
    if claim.timed_out():
        raise JobTimeout(f"job {job.id} {job.task} timed out after {claim.timeout:g}s")


def _note_cancel_flag(claim: Claim, flag: Any, checked: float) -> None:
    if flag:
        claim.cancelled = True
    claim.cancel_checked_at = checked


def _fence(job: Job, claim: Claim) -> dict[str, Any]:
    return {"id": job.id, "attempts": job.attempts, "worker": claim.worker}


def _checked_connection(connection: object) -> sqlite3.Connection | None:
    if connection is not None and not isinstance(connection, sqlite3.Connection):
        raise InvalidArgumentType(
            f"connection must be a sqlite3.Connection or None, got {type(connection).__name__}"
        )
    return connection


def _log_outcome(job: Job, status: str | None, params: dict[str, Any]) -> None:
    if status is None:
        log.warning("job %d %s: attempt %d no longer owns the job (lease lost); outcome "
                    "discarded", job.id, job.task, job.attempts)  # fmt: skip
    elif status == "queued" and "error" in params:
        log.info("job %d %s queued for retry at attempt %d/%d (%s)", job.id, job.task,
                 job.attempts, job.max_attempts, params["error"].splitlines()[0][:200])  # fmt: skip
    elif status == "failed":
        log.warning("job %d %s failed after attempt %d/%d: %s", job.id, job.task, job.attempts,
                    job.max_attempts, (params.get("error") or "").splitlines()[0][:200] if
                    params.get("error") else "")  # fmt: skip
    else:
        log.info("job %d %s %s", job.id, job.task, status)
