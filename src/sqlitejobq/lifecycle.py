"""The life of a claimed job: claiming, renewing, and recording outcomes.

``JobLifecycle`` is the interface workers use: the library's ``Worker`` and custom workers
(through ``Queue``'s public ``claim``, ``complete``, ``fail``, ...). It turns outcomes into
fenced steps and hands them to the backend, so it owns the policy (retry backoff, timeouts,
what an unknown task does) and no SQL.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import traceback as traceback_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import validation
from .backends.base import (
    FINISHED_STATUSES,
    Abandon,
    Backend,
    ClaimRequest,
    Complete,
    Defer,
    Fail,
    Fence,
    Heartbeat,
    JobRecord,
    LimitedDue,
    Postpone,
    Progress,
    Release,
    StepValue,
    Waker,
    WorkerRecord,
)
from .backends.shared import LockMetrics
from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    JobNotFound,
    JobTimeout,
    PayloadError,
    PermanentFailure,
    WaitTimeout,
)
from .job import (
    PROGRESS_WRITE_INTERVAL,
    BatchProgress,
    Claim,
    Job,
    JobStatus,
    job_from_values,
)
from .payload import encode_json
from .registry import Registry

log = logging.getLogger("sqlitejobq")
T = TypeVar("T")

_MAX_CLAIM = 10_000
#: A waiter looks this often even without a wake-up (a safety net: wake-ups can be missed).
_WAIT_LOOK = 1.0
#: The longest a job handed back by a worker that does not know its task waits before
#: another worker looks at it.
_UNKNOWN_TASK_RECHECK = 2.0
STATUS = {s.value: s for s in JobStatus}

Outcome = tuple[Job, StepValue]


@dataclass(frozen=True, slots=True)
class Policy:
    """The queue's defaults for jobs whose task does not set its own."""

    max_attempts: int = 3
    retry_backoff: float | tuple[float, ...] = 1.0
    retry_backoff_max: float = 600.0
    max_payload_bytes: int = 1024 * 1024
    job_timeout: float | None = None
    #: How often a job may be put off by ``raise Snooze`` before it fails instead.
    max_snoozes: int = 100


class JobLifecycle:
    """Claims jobs and records what became of them, through one backend.

    Workers use it directly; ``Queue``'s low-level calls (``claim``, ``complete``, ...) are
    the same operations with their arguments checked.
    """

    def __init__(self, backend: Backend, registry: Registry, policy: Policy) -> None:
        self.backend = backend
        self.registry = registry
        self.policy = policy

    # --- what workers need of the engine ---------------------------------------------------

    @property
    def waker(self) -> Waker:
        """Wakes idle workers of this process."""
        return self.backend.waker

    @property
    def metrics(self) -> LockMetrics:
        """This process's waiting for the database."""
        return self.backend.metrics

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts."""
        self.backend.register_worker(worker)

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row."""
        self.backend.report_worker(worker)

    def checkpoint(self) -> None:
        """Fold the engine's log into its main storage (SQLite: the WAL into the file): the
        upkeep an idle worker does."""
        self.backend.checkpoint()

    def due_in(self, queues: tuple[str, ...] | None, exclude: tuple[str, ...] = ()) -> float | None:
        """Seconds until the earliest queued job of ``queues`` is due (<= 0: due now); with
        limits declared, a limited job counts once its limits would let it start."""
        earliest, now = self.backend.next_run_at(queues)
        due = None if earliest is None else earliest - now
        if due is None or due > 0:
            limited = self.limited_due(queues, exclude)
            if limited is not None:
                if limited.claimable:
                    return 0.0
                for later in (limited.next_start, limited.next_run):
                    if later is not None:
                        due = later - limited.now if due is None else min(due, later - limited.now)
        return due

    def limited_due(
        self, queues: tuple[str, ...] | None, exclude: tuple[str, ...] = ()
    ) -> LimitedDue | None:
        """When limited jobs can next be claimed (None: no limits declared here)."""
        rules = self.registry.limit_rules()
        if not rules:
            return None
        return self.backend.limited_due(ClaimRequest("due", queues, 1, 1.0, exclude, rules))

    def lease_expiry_in(self) -> float | None:
        """Seconds until the earliest lease of a processing job ends (< 0: expired)."""
        expiry, now = self.backend.next_lease_expiry()
        return None if expiry is None else expiry - now

    # --- waiting for an end ------------------------------------------------------------------

    def wait(self, job_id: int, timeout: float | None) -> JobRecord:
        """The job's row once it has finished (completed, failed or cancelled). The wait is
        woken by the transaction that ends the job, in any process (the job is marked as
        waited for; the engine's notification path carries it), with a look each second
        as a safety net. WaitTimeout past ``timeout`` seconds; JobNotFound if there is no
        such job (or it was purged meanwhile)."""
        if self.backend.watch(job_id) is None:
            raise JobNotFound(f"no job with id {job_id}")

        def finished() -> JobRecord | None:
            record = self.backend.get_job(job_id)
            if record is None:
                raise JobNotFound(f"job {job_id} was deleted while waited for (purged?)")
            return record if record.status in FINISHED_STATUSES else None

        return self._wait_until(finished, timeout, f"job {job_id}")

    def wait_batch(self, batch_id: int, timeout: float | None) -> BatchProgress:
        """The batch's counts once none of its jobs is queued, processing or waiting."""
        if self.backend.batch(batch_id) is None:
            raise JobNotFound(f"no batch with id {batch_id}")
        self.backend.watch_batch(batch_id)

        def done() -> BatchProgress | None:
            progress = self.backend.batch(batch_id)
            if progress is None:
                raise JobNotFound(f"batch {batch_id} was deleted while waited for (purged?)")
            return progress if progress.done else None

        return self._wait_until(done, timeout, f"batch {batch_id}")

    def _wait_until(self, look: Callable[[], T | None], timeout: float | None, what: str) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        waker = self.backend.waker
        event = threading.Event()
        waker.listen(event)
        waker.sleeping(True)
        try:
            while True:
                found = look()
                if found is not None:
                    return found
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"{what} did not finish within {timeout:g}s")
                event.wait(_WAIT_LOOK if left is None else min(_WAIT_LOOK, left))
                event.clear()
        finally:
            waker.sleeping(False)
            waker.listen(event, False)

    # --- claiming ----------------------------------------------------------------------------

    def claim_request(
        self,
        worker_id: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        exclude: tuple[str, ...] = (),
    ) -> ClaimRequest:
        """Checked arguments of a claim (``exclude``: tasks to leave to other workers)."""
        validation.name(worker_id, "worker_id")
        names = validation.names(queues, "queues")
        count = validation.integer(limit, "limit", minimum=1)
        if count > _MAX_CLAIM:
            raise InvalidArgument(f"limit must be <= {_MAX_CLAIM}, got {count}")
        seconds = validation.seconds(lease, "lease", positive=True)
        return ClaimRequest(worker_id, names, count, seconds, exclude, self.registry.limit_rules())

    def claim(self, request: ClaimRequest) -> list[Job]:
        """Claim jobs; one whose stored payload cannot be decoded fails at once instead."""
        jobs = self.settle([], request)[1]
        bad = [job for job in jobs if job._claim is not None and job._claim.undecodable]
        if bad:
            self.finish([(job, self.undecodable_step(job)) for job in bad])
            jobs = [job for job in jobs if job not in bad]
        for job in jobs:
            job._claim.timeout = self.timeout_of(job.task)  # type: ignore[union-attr]
        return jobs

    def timeout_of(self, task: str) -> float | None:
        """How long one run of ``task`` may take: the task's ``timeout``, else the queue's
        ``job_timeout`` (None: no limit)."""
        timeout = self.registry.options(task).timeout
        return timeout if timeout is not None else self.policy.job_timeout

    def settle(
        self, outcomes: Sequence[Outcome], request: ClaimRequest | None
    ) -> tuple[list[str | None], list[Job]]:
        """Record outcomes of claimed jobs and claim more, in one transaction.

        Returns each job's status after its step (None: the claim no longer owned it, and
        nothing changed), and the jobs newly claimed.
        """
        statuses, records = self.backend.exchange([step for _, step in outcomes], request)
        if log.isEnabledFor(logging.INFO):
            for (job, step), status in zip(outcomes, statuses, strict=True):
                _log_outcome(job, status, step)
        jobs: list[Job] = []
        if request is not None and records:
            jobs = [self.job(record, Claim(request.worker, request.lease)) for record in records]
            if len(jobs) > 1:
                jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
            if log.isEnabledFor(logging.INFO):
                for job in jobs:
                    log.info(
                        "job %d %s processing, attempt %d/%d (worker %s)",
                        job.id,
                        job.task,
                        job.attempts,
                        job.max_attempts,
                        request.worker,
                    )
        return statuses, jobs

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record outcomes; whether each claim still owned its job."""
        if not outcomes:
            return []
        return [status is not None for status in self.settle(outcomes, None)[0]]

    # --- outcomes as fenced steps ----------------------------------------------------------

    def complete_step(self, job: Job, result: Any) -> Complete:
        """The step that records ``result`` (and runs the task's on_complete hook)."""
        claim = _claim_of(job)
        encoded = encode_json(result, "result", self.policy.max_payload_bytes)
        hook = self.registry.options(job.task).on_complete
        if hook is None:
            return Complete(_fence(job, claim), encoded, claim.pending_message)
        return Complete(
            _fence(job, claim),
            encoded,
            claim.pending_message,
            on_complete=lambda conn: hook(conn, job, result),
            on_failure=lambda exc: self.fail_step(
                job, exc, None, not isinstance(exc, PermanentFailure), None
            ),
        )

    def fail_step(
        self,
        job: Job,
        error: str | BaseException,
        trace: str | None,
        retry: bool,
        retry_in: float | None,
    ) -> Fail:
        """The step that records a failed attempt: back to the queue after the backoff
        while attempts remain (and ``retry``), else failed, keeping error and traceback."""
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
        return Fail(
            _fence(job, claim),
            status="queued" if again else "failed",
            delay=delay,
            error=error[:10_000],
            traceback=trace[:50_000] if trace else None,
            message=claim.pending_message,
        )

    def defer_step(self, job: Job, worker: str, window: float) -> Defer:
        """Hand back a job whose task ``worker`` does not know, its attempt not counted: it
        waits for a worker that knows the task, up to ``window`` seconds from the first
        time one that did not handed it back, then fails with UnknownTask."""
        return Defer(
            _fence(job, _claim_of(job)),
            recheck=min(_UNKNOWN_TASK_RECHECK, window / 4),
            window=window,
            waiting_error=f"UnknownTask: waiting up to {window:g}s for a worker that knows "
            f"task {job.task!r} (worker {worker} does not)",
            failed_error=f"UnknownTask: no worker that knows task {job.task!r} took the job "
            f"within {window:g}s; register a handler for it and retry the job",
        )

    def snooze_step(self, job: Job, delay: float) -> Postpone:
        """The step of a handler that raised ``Snooze(delay)``: back to the queue, due in
        ``delay`` seconds, the attempt not counted; failed past ``max_snoozes``."""
        limit = self.policy.max_snoozes
        return Postpone(
            _fence(job, _claim_of(job)),
            delay=delay,
            max_snoozes=limit,
            error=f"Snooze: put off more than max_snoozes={limit} times; "
            "raise Snooze for a bounded wait, or give the queue a larger max_snoozes",
            note=f"snoozed for {delay:g}s",
        )

    def undecodable_step(self, job: Job) -> Fail:
        """Fail at once a claimed job whose stored payload cannot be decoded."""
        problem = _claim_of(job).undecodable or "undecodable payload"
        return self.fail_step(job, PayloadError(problem), None, False, None)

    def backoff(self, task: str, attempts: int) -> float:
        """Seconds before the retry that follows failed attempt number ``attempts``.

        Exponential from the task's (or queue's) ``backoff``, capped at ``backoff_max``,
        with jitter over the upper half so that failures of one cause spread out; or, when
        ``backoff`` lists waits, the wait of this retry (the last one for later retries).
        """
        options = self.registry.options(task)
        base = options.backoff if options.backoff is not None else self.policy.retry_backoff
        if isinstance(base, tuple):
            return base[min(max(attempts - 1, 0), len(base) - 1)]
        cap = (
            options.backoff_max
            if options.backoff_max is not None
            else self.policy.retry_backoff_max
        )
        ceiling = min(cap, base * 2.0 ** min(max(attempts - 1, 0), 60))
        return ceiling / 2.0 + random.random() * ceiling / 2.0

    # --- while a job runs --------------------------------------------------------------------

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
                return self._write_progress(
                    job, claim, claim.pending_progress, claim.pending_message
                )
            return self._renew(claim, Heartbeat(_fence(job, claim), seconds))

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
        owned = self._renew(claim, Progress(_fence(job, claim), progress, message, claim.lease))
        claim.progress_written_at = time.monotonic()
        claim.pending_progress = None
        claim.pending_message = None
        return owned

    def _renew(self, claim: Claim, step: Heartbeat | Progress) -> bool:
        [cancel_flag], _ = self.backend.exchange([step], None)
        _note_cancel_flag(claim, cancel_flag, time.monotonic())
        return cancel_flag is not None

    def heartbeat_many(self, jobs: Sequence[Job]) -> list[bool]:
        """Extend the leases of several running jobs in one transaction (what workers do)."""
        if not jobs:
            return []
        claims = [_claim_of(job) for job in jobs]
        steps = [
            Heartbeat(_fence(job, claim), claim.lease)
            for job, claim in zip(jobs, claims, strict=True)
        ]
        flags, _ = self.backend.exchange(steps, None)
        checked = time.monotonic()
        for claim, flag in zip(claims, flags, strict=True):
            _note_cancel_flag(claim, flag, checked)
        return [flag is not None for flag in flags]

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job (read from the database)."""
        return self.backend.cancel_requested(job_id)

    # --- runs that will not report -------------------------------------------------------

    def release(self, jobs: Sequence[Job]) -> int:
        """Return claimed jobs that never started to the queue, their attempt not counted."""
        return sum(self.finish([(job, Release(_fence(job, _claim_of(job)))) for job in jobs]))

    def abandon(self, jobs: Sequence[Job], error: str) -> list[bool]:
        """End runs that will not report (a worker stopping hard): each counts as an attempt,
        back to the queue while attempts remain, else failed."""
        return self.finish(
            [
                (job, Abandon(_fence(job, _claim_of(job)), error, self.retry_delay(job)))
                for job in jobs
            ]
        )

    def retry_delay(self, job: Job) -> float:
        """Seconds before a job whose run ended without an outcome is due again: the
        task's backoff while attempts remain, so that a job that kills its worker is not
        retried at once, again and again."""
        return self.backoff(job.task, job.attempts) if job.attempts < job.max_attempts else 0.0

    def rescue_expired(self, renew: Sequence[Job] = ()) -> list[int]:
        """Take back jobs whose lease expired (their worker died or hung): to ``queued`` while
        attempts remain, else ``failed``; the job ids.

        ``renew``: the caller's own running jobs, whose leases are extended first in the same
        transaction, so that a worker never takes back a job it still runs (after a forward
        jump of the clock, say)."""
        expiry = self.lease_expiry_in()
        if expiry is None or expiry >= 0:
            return []
        steps = [
            Heartbeat(_fence(job, claim), claim.lease)
            for job in renew
            if (claim := _claim_of(job)) is not None
        ]
        rescued = self.backend.rescue_expired(
            "lease expired: the worker stopped renewing it (crashed, killed or hung)",
            steps,
            self.backoff,
        )
        for job in rescued:
            log.warning(
                "job %d %s lease expired (worker %s, attempt %d/%d): now %s",
                job.id,
                job.task,
                job.worker,
                job.attempts,
                job.max_attempts,
                job.status,
            )
        return [job.id for job in rescued]

    # --- values ----------------------------------------------------------------------------

    def job(self, record: JobRecord, claim: Claim | None = None) -> Job:
        """A Job from its stored record; with ``claim``, the handle of a claimed run."""
        result = record[10]
        try:
            payload = json.loads(record[3])
            result = None if result is None else json.loads(result)
        except (ValueError, RecursionError) as exc:
            problem = f"job {record[0]}: its stored JSON cannot be decoded ({exc})"
            if claim is None:
                raise PayloadError(problem) from None
            claim.undecodable = problem  # the worker fails it; it never reaches a handler
            payload = result = None
        return job_from_values(
            (
                *record[:3],
                payload,
                STATUS[record[4]],
                *record[5:10],
                result,
                *record[11:21],
                record[21],
                None if claim is None else self,
                claim,
            )
        )


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


def _fence(job: Job, claim: Claim) -> Fence:
    return Fence(job.id, job.attempts, claim.worker)


def _log_outcome(job: Job, status: str | None, step: StepValue) -> None:
    error = getattr(step, "error", None) or ""
    first_line = error.splitlines()[0][:200] if error else ""
    if status is None:
        log.warning(
            "job %d %s: attempt %d no longer owns the job (lease lost); outcome discarded",
            job.id,
            job.task,
            job.attempts,
        )
    elif status == "queued" and isinstance(step, Fail | Abandon):
        log.info(
            "job %d %s queued for retry at attempt %d/%d (%s)",
            job.id,
            job.task,
            job.attempts,
            job.max_attempts,
            first_line,
        )
    elif status == "failed":
        log.warning(
            "job %d %s failed after attempt %d/%d: %s",
            job.id,
            job.task,
            job.attempts,
            job.max_attempts,
            first_line,
        )
    else:
        log.info("job %d %s %s", job.id, job.task, status)
