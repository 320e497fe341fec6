"""Worker: runs handlers in a pool of threads, claiming in batches sized to free slots.

One dispatcher thread (the one that calls ``Worker.run``) talks to the database; the
runners (``runners``: threads, and an event loop for ``async def`` handlers) only run
handlers. Each round trip records the outcomes that finished since the last one and claims
jobs for the free slots in the same transaction, so a busy worker pays one transaction for
many jobs. An outcome whose write fails is kept and written again (its lease renewed
meanwhile) until it is recorded or its claim is refused: a finished handler's outcome is
never dropped while the worker lives. Between round trips the dispatcher runs its periodic
duties (``duties``: rescue, heartbeat, report, checkpoint, schedules). While idle it
sleeps: an enqueue in this process wakes it at once, a commit by another process through a
file watcher (inotify), a timer when the next delayed job or duty is due; a slow read-only
poll is the fallback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from . import validation
from .backends.base import Step, WorkerRecord
from .duties import (
    Checkpoint,
    Duty,
    Found,
    Heartbeat,
    ParentWatch,
    Report,
    Rescue,
    Schedules,
    WorkerRow,
)
from .errors import (
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    DiskFull,
    InvalidArgumentType,
    JobTimeout,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
)
from .job import Job
from .queue import Queue
from .runners import Slots, moving_average
from .scheduler import Scheduler

if TYPE_CHECKING:
    from .backends.base import Waker
    from .lifecycle import Outcome

log = logging.getLogger("sqlitejobq")

#: Set by a supervisor: the worker stops gracefully when this process is orphaned.
PARENT_PID_ENV = "SQLITEJOBQ_PARENT_PID"
#: The most jobs claimed ahead of free threads (only short jobs are claimed ahead).
_MAX_AHEAD = 256
#: The exit status of a supervised worker process asking to be replaced at once: a handler
#: outlived its timeout and grace, and a thread cannot be killed, only left behind.
EXIT_REPLACE = 75
#: After a wake-up, the first look for work committed elsewhere; the looks then space out,
#: up to 2 ms apart while anything happened in the last 10 ms.
_FAST_POLL = 0.0005
_BUSY_POLL = 0.002
_QUIET_AFTER = 0.01
#: The longest wait between looks once quiet: with a file watcher reporting other
#: processes' commits (the look is only a safety net), and without one.
_IDLE_POLL_WATCHED = 1.0
_IDLE_POLL_UNWATCHED = 0.05
#: How long a worker leaves the jobs of a task it does not know to other workers before it
#: looks at them again (a quarter of the unknown-task window if that is shorter).
_UNKNOWN_TASK_RECHECK = 30.0
#: Faults that pass: while one lasts, outcomes are kept and written again later.
_TRANSIENT = (
    DatabaseBusy,
    DiskFull,
    ReadOnlyDatabase,
    DatabaseUnavailable,
    CorruptDatabase,
    QueueClosed,
)


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """What one run of a worker did."""

    completed: int
    failed: int
    retried: int
    lost: int
    seconds: float
    stuck: int = 0
    snoozed: int = 0

    @property
    def processed(self) -> int:
        """Jobs whose handler ran to an outcome that was recorded."""
        return self.completed + self.failed + self.retried + self.snoozed

    # ``lost``: outcomes refused because the claim no longer owned the job (its lease
    # expired and it was taken back). ``stuck``: handlers still running past their timeout
    # and grace, whose attempts were failed and whose threads were left behind.


class Worker:
    """Runs the handlers of a queue's registry in ``concurrency`` threads.

    ``queues`` limits the named queues it claims from (None: every queue); a paused queue
    (``Queue.pause``) is left out until it is resumed, which wakes the worker. ``lease`` is
    how long a claim holds a job without a heartbeat; the worker renews the leases of its
    running jobs every third of it, so a long job keeps its lease while the worker lives.

    A handler that runs past its task's ``timeout`` (or the queue's ``job_timeout``) sees
    ``job.timed_out``, its next ``set_progress``/``heartbeat`` raises JobTimeout and its
    lease is no longer renewed; if it still runs ``timeout_grace`` seconds later, its
    attempt fails with JobTimeout and a new thread takes its place (a supervised worker
    process stops and is replaced instead). A job whose task this worker does not know goes
    back, its attempt not counted, for a worker that knows it, for ``unknown_task_window``
    seconds from the first time a worker handed it back; then it fails with UnknownTask.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int = 4,
        queues: Sequence[str] | None = None,
        lease: float = 30.0,
        grace: float = 30.0,
        timeout_grace: float = 5.0,
        unknown_task_window: float = 600.0,
        poll_interval: float | None = None,
        rescue_interval: float = 1.0,
        checkpoint_interval: float = 60.0,
        report_interval: float = 10.0,
        prefetch: int | None = None,
        worker_id: str | None = None,
        run_schedules: bool = True,
        schedule_check: float = 5.0,
    ) -> None:
        if not isinstance(queue, Queue):
            raise InvalidArgumentType(
                f"queue must be a sqlitejobq.Queue, got {type(queue).__name__}"
            )
        self.queue = queue
        self.lifecycle = queue.lifecycle
        self.concurrency = validation.integer(concurrency, "concurrency", minimum=1)
        self.queues = validation.names(queues, "queues")
        self.lease = validation.seconds(lease, "lease", positive=True)
        self.grace = validation.seconds(grace, "grace")
        self.timeout_grace = validation.seconds(timeout_grace, "timeout_grace")
        self.unknown_task_window = validation.seconds(
            unknown_task_window, "unknown_task_window", positive=True
        )
        self.poll_interval = (
            None
            if poll_interval is None
            else validation.seconds(poll_interval, "poll_interval", positive=True)
        )
        self.rescue_interval = validation.seconds(rescue_interval, "rescue_interval", positive=True)
        self.checkpoint_interval = validation.seconds(checkpoint_interval, "checkpoint_interval")
        self.report_interval = validation.seconds(report_interval, "report_interval", positive=True)
        self.prefetch = (
            None if prefetch is None else validation.integer(prefetch, "prefetch", minimum=0)
        )
        self.id = validation.name(
            worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
            "worker_id",
        )
        self.run_schedules = bool(run_schedules)
        self.schedule_check = validation.seconds(schedule_check, "schedule_check", positive=True)
        self._wake = threading.Event()  # the dispatcher's sleep ends: news, or a stop
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._stop_deadline: float | None = None
        self._active = False
        self._counts = {
            "completed": 0,
            "failed": 0,
            "retried": 0,
            "lost": 0,
            "stuck": 0,
            "snoozed": 0,
        }
        self._slots = Slots(self.lifecycle, self.concurrency, self._wake, self._stopping)
        self._row = WorkerRow(self.lifecycle, self._record)
        self._scheduler = Scheduler(queue, queue.registry.schedules)
        self._unknown_until: dict[str, float] = {}  # task: until when it is not claimed
        self._round_trip = 0.0  # moving average (seconds) of a dispatch round trip

    def __repr__(self) -> str:
        queues = list(self.queues) if self.queues else "all"
        return f"Worker({self.id!r}, concurrency={self.concurrency}, queues={queues})"

    # --- control ----------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; running handlers get ``timeout`` seconds (default: the grace) to
        finish, claimed jobs that never started go back to the queue. Returns at once; a
        second call stops without waiting for handlers."""
        if self._stopping.is_set():
            self._hard_stop.set()
        else:
            wait = self.grace if timeout is None else validation.seconds(timeout, "timeout")
            self._stop_deadline = time.monotonic() + wait
            self._stopping.set()
        self._wake.set()
        self._slots.threads.wake_idle()

    @property
    def stopping(self) -> bool:
        """True once stop() was called or a stop signal arrived."""
        return self._stopping.is_set()

    def run(self, burst: bool = False, *, handle_signals: bool | None = None) -> WorkerSummary:
        """Run until stopped; with ``burst``, return once nothing is runnable.

        A job whose lease expired counts as runnable: it is rescued and run. With
        ``handle_signals`` (default: when called from the main thread) SIGTERM and SIGINT
        stop gracefully and a second signal stops at once; the old handlers come back after.
        """
        if self._active:
            raise SqliteJobQError(f"worker {self.id} is already running")
        self._active = True
        self._stopping.clear()
        self._hard_stop.clear()
        self._counts = dict.fromkeys(self._counts, 0)
        started = time.monotonic()
        if handle_signals is None:
            handle_signals = threading.current_thread() is threading.main_thread()
        waker = self.lifecycle.waker
        try:
            with self._signals(handle_signals):
                self._slots.threads.start()
                waker.listen(self._wake)
                try:
                    self._register()
                    self._loop(burst)
                finally:
                    waker.listen(self._wake, active=False)
                    try:
                        self._shut_down()
                    finally:
                        self._slots.loop.close()
        finally:
            self._active = False
        return WorkerSummary(seconds=time.monotonic() - started, **self._counts)

    @contextlib.contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        if not install:
            yield
            return
        # A signal handler runs in the main thread between two bytecodes, possibly while that
        # thread holds a lock (an Event's, waiting in the dispatcher): taking any lock there
        # can deadlock. The handler only records the signal and writes a byte to a pipe; a
        # relay thread reads it and stops the worker as stop() does.
        received: list[int] = []  # list.append and pop take no lock
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            with contextlib.suppress(OSError):  # full: a byte is waiting already
                os.write(write_fd, b"s")

        def relay() -> None:
            while True:
                data = os.read(read_fd, 64)
                while received:
                    name = signal.Signals(received.pop(0)).name
                    if self._stopping.is_set():
                        log.warning("worker %s: second %s, stopping now", self.id, name)
                    else:
                        log.info(
                            "worker %s: %s, stopping gracefully (send again to stop now)",
                            self.id,
                            name,
                        )
                    self.stop()
                if not data:  # the write end closed: the worker's run is over
                    return

        relay_thread = threading.Thread(target=relay, name="sqlitejobq-signals", daemon=True)
        relay_thread.start()
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(write_fd)  # the relay reads what is left, then the end of the pipe
            relay_thread.join(5.0)
            if not relay_thread.is_alive():
                os.close(read_fd)

    # --- the dispatcher -----------------------------------------------------------------

    def _duties(self, now: float, burst: bool, parent: int | None) -> list[Duty]:
        """This run's duties, in the order a round runs them."""
        duties: list[Duty] = [Rescue(self.lifecycle, self._slots, self.rescue_interval, now)]
        if parent is not None:
            duties.append(ParentWatch(parent, self.rescue_interval, self.stop, self.id, now))
        duties += [
            Heartbeat(self.lifecycle, self._slots, self.lease, self.id, now),
            Report(self._row, self.report_interval, now),
        ]
        # burst mode runs what is there, then returns: it creates no periodic jobs
        if self.run_schedules and not burst and self._scheduler.schedules:
            duties.append(Schedules(self._scheduler, self.schedule_check, now))
        if self.checkpoint_interval:
            duties.append(Checkpoint(self.lifecycle, self.checkpoint_interval, now))
        return duties

    def _loop(self, burst: bool) -> None:
        """Record, claim and run the due duties, round after round, until stopped (in burst
        mode: until nothing is runnable)."""
        now = time.monotonic()
        parent = _expected_parent()
        duties = self._duties(now, burst, parent)
        sleep = _Sleep(self.lifecycle.waker, self._wake, self.poll_interval, now)
        maybe_work = True  # there may be due jobs: try a claim
        look_ahead = False  # the queue looked drained or changed: read when work is next due
        next_due: float | None = None  # when the next delayed job we know of is due (monotonic)
        error_backoff = 0.0
        while not self._hard_stop.is_set():
            try:
                now = time.monotonic()
                if self._stopping.is_set() and self._drain_for_stop(now):
                    return
                next_expiry = self._end_overdue_runs(now, supervised=parent is not None)
                for duty in duties:
                    if not duty.idle_only and now >= duty.next_at:
                        found = duty.run(now)
                        maybe_work = maybe_work or Found.WORK in found
                        look_ahead = look_ahead or (Found.CLOCK in found and next_due is not None)
                if next_due is not None and now >= next_due:
                    maybe_work, next_due = True, None
                again, drained = self._exchange(maybe_work and not self._stopping.is_set())
                error_backoff = 0.0
                look_ahead = look_ahead or drained
                if again:
                    maybe_work = True  # a full claim or a recorded outcome: go round at once
                    sleep.busy(now)
                    continue
                maybe_work = False
                if look_ahead:
                    look_ahead = False
                    due_in = self.lifecycle.due_in(self.queues, self._unknown())
                    if due_in is not None and due_in <= 0:
                        maybe_work, next_due = True, None
                        continue
                    next_due = None if due_in is None else time.monotonic() + due_in
                idle = self._slots.idle()
                if burst and idle and not self._stopping.is_set():
                    wait = self._burst_wait()
                    if wait is None:
                        return
                    if wait <= 0:
                        maybe_work = True
                        continue
                    next_due = time.monotonic() + wait
                if idle:
                    for duty in duties:
                        if duty.idle_only and now >= duty.next_at:
                            duty.run(now)
                # a busy worker's idle duties wait for it to be idle, not for their time
                timers = [d.next_at for d in duties if idle or not d.idle_only]
                wake_at = min([*timers, *(t for t in (next_due, next_expiry) if t is not None)])
                # a commit elsewhere is news only while a slot is free to claim for
                news = sleep.until(now, wake_at, looking=self._free_slots() > 0)
                look_ahead = look_ahead or news
            except QueueClosed:
                log.warning("worker %s: the queue was closed, stopping", self.id)
                return
            except Exception as exc:
                error_backoff = min(max(error_backoff * 2, 0.05), 1.0)
                if isinstance(exc, _TRANSIENT):
                    log.warning("worker %s: %s; trying again in %.2fs", self.id, exc, error_backoff)
                else:
                    log.exception(
                        "worker %s: error in the dispatch loop; retrying in %.2fs",
                        self.id,
                        error_backoff,
                    )
                self._hard_stop.wait(error_backoff)
                maybe_work = True

    def _exchange(self, claim: bool) -> tuple[bool, bool]:
        """Record the finished outcomes and claim for free slots in one transaction; whether
        to go round at once (outcomes recorded, a full claim), whether the claim came short."""
        outcomes = self._slots.take_outcomes()
        free = self._free_slots()
        if not outcomes and not (claim and free > 0):
            return False, False
        request = (
            self.lifecycle.claim_request(self.id, self.queues, free, self.lease, self._unknown())
            if claim and free > 0
            else None
        )
        started = time.perf_counter()
        try:
            statuses, jobs = self.lifecycle.settle(outcomes, request)
            recorded = list(zip(outcomes, statuses, strict=True))
        except Exception as exc:
            if not outcomes or isinstance(exc, _TRANSIENT):
                self._slots.keep(outcomes)
                raise
            log.warning(
                "worker %s: recording %d outcomes together failed (%s: %s); recording each alone",
                self.id,
                len(outcomes),
                type(exc).__name__,
                exc,
            )
            recorded, jobs = self._record_each(outcomes), []
        self._round_trip = moving_average(self._round_trip, time.perf_counter() - started)
        self._count(recorded)
        deferred = self._take(jobs)
        full = request is not None and len(jobs) == request.limit
        return bool(outcomes) or full or deferred, request is not None and not full

    def _take(self, jobs: list[Job]) -> bool:
        """Hand claimed jobs to the runners; a job whose task this worker does not know goes
        back (its attempt not counted) for one that does, and one whose payload cannot be
        decoded fails. True if any was not handed to a runner."""
        if not jobs:
            return False
        lifecycle = self.lifecycle
        registry = lifecycle.registry
        known: list[Job] = []
        deferred: list[Outcome] = []
        settings: dict[str, tuple[float | None, float | None]] = {}  # task: lease, timeout
        for job in jobs:
            claim = job._claim
            assert claim is not None
            if claim.undecodable:
                deferred.append((job, lifecycle.undecodable_step(job)))
                continue
            if job.task in registry:
                lease, timeout = settings.get(job.task) or settings.setdefault(
                    job.task, (registry.options(job.task).lease, lifecycle.timeout_of(job.task))
                )
                if lease is not None:
                    claim.lease = lease
                if timeout is not None:
                    claim.timeout = timeout
                    self._slots.timeouts = True
                known.append(job)
                continue
            if job.task not in self._unknown_until:
                log.warning(
                    "worker %s does not know task %r: its jobs go back for a worker that does "
                    "(for up to %gs), their attempts not counted",
                    self.id,
                    job.task,
                    self.unknown_task_window,
                )
            # leave the task's jobs to workers that know it for a while, then look again
            # (one past its window is failed by whichever worker looks)
            self._unknown_until[job.task] = time.monotonic() + min(
                _UNKNOWN_TASK_RECHECK, self.unknown_task_window / 4
            )
            deferred.append((job, lifecycle.defer_step(job, self.id, self.unknown_task_window)))
        self._slots.add(deferred)
        self._slots.submit(known)
        return bool(deferred)

    def _unknown(self) -> tuple[str, ...]:
        """The tasks this worker does not know and leaves to others for now."""
        if not self._unknown_until:
            return ()
        now = time.monotonic()
        return tuple(sorted(task for task, until in self._unknown_until.items() if until > now))

    def _record_each(self, outcomes: list[Outcome]) -> list[tuple[Outcome, str | None]]:
        """Record outcomes one by one, so that one that cannot be stored fails its own job
        and never holds back the others. A fault that passes keeps the rest for later."""
        recorded: list[tuple[Outcome, str | None]] = []
        try:
            for outcome in outcomes:
                recorded.append(self._record_alone(outcome))
        except Exception:
            self._slots.keep(outcomes[len(recorded) :])
            self._count(recorded)
            raise
        return recorded

    def _record_alone(self, outcome: Outcome) -> tuple[Outcome, str | None]:
        """Record one outcome; if the database refuses it, record its attempt as failed
        with the reason instead. Returns the outcome recorded and the job's status."""
        job = outcome[0]
        try:
            return outcome, self.lifecycle.settle([outcome], None)[0][0]
        except Exception as exc:
            if isinstance(exc, _TRANSIENT):
                raise
            problem = f"{type(exc).__name__}: {exc}"
        log.error(
            "job %d %s: its outcome cannot be recorded (%s); the attempt fails instead",
            job.id,
            job.task,
            problem,
        )
        error = f"the outcome could not be recorded: {problem}"
        failure = (job, self.lifecycle.fail_step(job, error, None, False, None))
        try:
            return failure, self.lifecycle.settle([failure], None)[0][0]
        except Exception as exc:
            if isinstance(exc, _TRANSIENT):
                raise
            log.error(
                "job %d %s: not even its failure can be recorded (%s); the job goes back to "
                "the queue when its lease expires",
                job.id,
                job.task,
                exc,
            )
            return failure, None

    def _count(self, recorded: list[tuple[Outcome, str | None]]) -> None:
        for (_, step), status in recorded:
            if status is None:
                self._counts["lost"] += 1
            elif step.kind is Step.COMPLETE:
                self._counts["completed"] += 1
            elif step.kind is Step.SNOOZE and status == "queued":
                self._counts["snoozed"] += 1
            elif status == "queued":
                if step.kind is not Step.DEFER:
                    self._counts["retried"] += 1
            elif status == "failed" or step.kind is not Step.DEFER:
                self._counts["failed"] += 1

    def _free_slots(self) -> int:
        """Slots to claim for: idle ones, plus for short jobs what finishes in one round trip
        (so one transaction carries many); long jobs are not claimed ahead, and spread out."""
        ahead = self.prefetch
        if ahead is None:
            run_time = self._slots.run_time
            if run_time <= 0.0:
                ahead = 0
            else:
                ahead = min(_MAX_AHEAD, int(self.concurrency * self._round_trip / run_time))
        return self._slots.free(ahead)

    def _burst_wait(self) -> float | None:
        """Burst mode: None when it ends (nothing due in our queues, no lease left to rescue,
        no job held back only by a rate limit), else how long to wait before looking again
        (0: at once)."""
        due_in = self.lifecycle.due_in(self.queues, self._unknown())
        if due_in is not None and due_in <= 0:
            return 0.0
        expiry_in = self.lifecycle.lease_expiry_in()
        if expiry_in is not None and expiry_in < 0:
            held = self._slots.held(time.monotonic())
            return 0.0 if self.lifecycle.rescue_expired(renew=held) else None
        limited = self.lifecycle.limited_due(self.queues, self._unknown())
        if limited is not None:
            if limited.claimable:  # its rate freed a start since the look above
                return 0.0
            if limited.next_start is not None:  # runnable once its rate lets it
                return max(0.001, limited.next_start - limited.now)
        return None

    def _end_overdue_runs(self, now: float, supervised: bool) -> float | None:
        """Fail the attempts of handlers still running ``timeout_grace`` past their timeout,
        and put a new thread in each one's place; when the next such end is due."""
        overdue, soonest = self._slots.overdue(now, self.timeout_grace)
        for job in overdue:
            timeout = job._claim.timeout if job._claim is not None else 0.0
            error = JobTimeout(
                f"timed out after {timeout:g}s (the handler still ran {self.timeout_grace:g}s "
                f"later; its thread was left behind)"
            )
            self._slots.add([(job, self.lifecycle.fail_step(job, error, None, True, None))])
            self._counts["stuck"] += 1
            log.error(
                "job %d %s: handler still running %gs after its timeout of %gs; the attempt "
                "fails, and its thread is left behind (a thread cannot be killed)",
                job.id,
                job.task,
                self.timeout_grace,
                timeout,
            )
            if not self._stopping.is_set():
                self._slots.threads.add_thread()
        if overdue and supervised and not self._stopping.is_set():
            log.warning(
                "worker %s: stopping so that the supervisor replaces this process and its "
                "stuck thread",
                self.id,
            )
            self.stop()
        return soonest

    # --- stopping -------------------------------------------------------------------------

    def _drain_for_stop(self, now: float) -> bool:
        """While stopping: hand back unstarted jobs, wait for running ones and write their
        outcomes. True when done."""
        unstarted, running = self._slots.withdraw()
        if unstarted:
            try:
                released = self.lifecycle.release(unstarted)
            except Exception:
                self._slots.put_back(unstarted)
                raise
            log.info(
                "worker %s: %d claimed jobs that had not started went back to the queue",
                self.id,
                released,
            )
        if self._stop_deadline is not None and now >= self._stop_deadline:
            if running:
                reason = "interrupted: the worker stopped before the handler finished"
                self._abandon(running, reason)
            return True
        self._exchange(claim=False)
        return self._slots.idle()

    def _abandon(self, jobs: list[Job], reason: str) -> None:
        self._slots.abandon(jobs)
        if jobs:
            self.lifecycle.abandon(jobs, reason)
            log.warning(
                "worker %s: %d running jobs did not finish in time: %s",
                self.id,
                len(jobs),
                ", ".join(str(j.id) for j in jobs),
            )

    def _shut_down(self) -> None:
        self._stopping.set()
        self._slots.threads.wake_idle()
        try:
            unstarted, running = self._slots.withdraw()
            if unstarted:
                self.lifecycle.release(unstarted)
            self._flush_outcomes()
            self._abandon(running, "interrupted: the worker stopped at once")
            self._report(stopped=True)
        except QueueClosed:
            pass
        except Exception:
            log.exception("worker %s: error while stopping", self.id)
        self._slots.threads.join(0.1 if self._hard_stop.is_set() else 1.0)
        log.info("worker %s stopped: %s", self.id, self._counts)

    def _flush_outcomes(self) -> None:
        """Write the outcomes still held, trying again while the fault lasts, for as long as
        their leases were last renewed for (once, on a hard stop)."""
        deadline = time.monotonic() + self.lease
        backoff = 0.05
        while True:
            try:
                self._exchange(claim=False)
                return
            except QueueClosed:
                raise
            except Exception as exc:
                with self._slots.lock:
                    left = len(self._slots.outcomes)
                if self._hard_stop.is_set() or time.monotonic() + backoff > deadline:
                    log.error(
                        "worker %s: %d outcomes could not be recorded before stopping (%s); "
                        "their jobs go back to the queue when their leases expire",
                        self.id,
                        left,
                        exc,
                    )
                    return
                log.warning(
                    "worker %s: %d outcomes not recorded yet (%s); trying again",
                    self.id,
                    left,
                    exc,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    # --- the worker's row -----------------------------------------------------------------

    def _record(self) -> WorkerRecord:
        """The worker's row as it stands (its start and stop are the row's to add)."""
        return WorkerRecord(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=",".join(self.queues) if self.queues else "*",
            concurrency=self.concurrency,
            jobs_completed=self._counts["completed"],
            jobs_failed=self._counts["failed"],
            lock=self.lifecycle.metrics.snapshot(),
        )

    def _register(self) -> None:
        self._row.register(self.queue.clock())
        queues = ",".join(self.queues) if self.queues else "all"
        log.info(
            "worker %s started: concurrency %d, queues %s, lease %gs",
            self.id,
            self.concurrency,
            queues,
            self.lease,
        )

    def _report(self, stopped: bool = False) -> None:
        self._row.write(stopped)


class _Sleep:
    """The dispatcher's sleep between rounds: looks for commits elsewhere come at most 2 ms
    apart while busy (a cheap read each), then space out and the armed file watcher reports."""

    def __init__(
        self, waker: Waker, wake: threading.Event, poll_interval: float | None, now: float
    ) -> None:
        self._waker = waker
        self._wake = wake
        self._poll_interval = poll_interval
        self._version = waker.look()
        self._enqueued, self._signals = waker.enqueued, waker.signals
        self._poll = _FAST_POLL
        self._active_at = now  # the last time anything happened

    def busy(self, now: float) -> None:
        """Something happened: look again soon."""
        self._poll, self._active_at = _FAST_POLL, now

    def until(self, now: float, wake_at: float, looking: bool) -> bool:
        """Sleep until ``wake_at`` at the latest (and while ``looking``, until the next look
        for work); True if work may have come: an enqueue here or a commit elsewhere."""
        waker = self._waker
        quiet = now - self._active_at >= _QUIET_AFTER
        if self._poll_interval:
            ceiling = self._poll_interval
        elif not quiet:
            ceiling = _BUSY_POLL
        else:
            ceiling = _IDLE_POLL_WATCHED if waker.watching else _IDLE_POLL_UNWATCHED
        armed = looking and quiet
        timeout = min(self._poll, ceiling, wake_at - now) if looking else wake_at - now
        if armed:
            waker.sleeping(True)
        try:
            # a commit made before the watch began is seen by this look
            if not armed or waker.look() == self._version:
                self._wake.wait(max(0.0, timeout))
        finally:
            if armed:
                waker.sleeping(False)
        self._wake.clear()
        # an enqueue here is news; a file change only says to look soon: the commit it
        # announces may not be visible yet, or may be our own
        news = waker.enqueued != self._enqueued
        if news or waker.signals != self._signals:
            self._enqueued, self._signals = waker.enqueued, waker.signals
            self._poll, self._active_at = _FAST_POLL, now
        else:
            self._poll = min(self._poll * 2, ceiling)
        version = waker.look()
        if version != self._version:
            self._version, self._active_at = version, now
            news = True
        return news


def _expected_parent() -> int | None:
    value = os.environ.get(PARENT_PID_ENV)
    if value is None or not value.isdigit():
        return None
    return int(value)
