"""Worker: runs handlers in a pool of threads, claiming in batches sized to free slots.

One dispatcher thread (the one that calls ``Worker.run``) talks to the database; the
handler threads only run handlers. Each round trip records the outcomes that finished since
the last one and claims jobs for the free slots in the same transaction, so a busy worker
pays one transaction for many jobs. An outcome whose write fails is kept and written again
(its lease renewed meanwhile) until it is recorded or its claim is refused: a finished
handler's outcome is never dropped while the worker lives. While idle the dispatcher
sleeps: an enqueue in this process wakes it at once, a commit by another process through a
file watcher (inotify), a timer when the next delayed job is due; a slow read-only poll is
the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from . import validation
from .backends.base import Step, WorkerRecord
from .errors import (
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    DiskFull,
    InvalidArgumentType,
    JobTimeout,
    PayloadError,
    PermanentFailure,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
)
from .job import AsyncJob, Job, as_async
from .queue import Queue
from .scheduler import Scheduler

log = logging.getLogger("sqlitejobq")

#: Set by a supervisor: the worker stops gracefully when this process is orphaned.
PARENT_PID_ENV = "SQLITEJOBQ_PARENT_PID"
#: An idle worker still writes its row this often, so others can tell it is alive.
_ALIVE_EVERY = 30.0
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
#: How long a worker leaves the jobs of a task it does not know to other workers before it
#: looks at them again (a quarter of the unknown-task window if that is shorter).
_UNKNOWN_TASK_RECHECK = 30.0
_IDLE_POLL_UNWATCHED = 0.05
#: Faults that pass: while one lasts, outcomes are kept and written again later.
_TRANSIENT = (DatabaseBusy, DiskFull, ReadOnlyDatabase, DatabaseUnavailable, CorruptDatabase,
              QueueClosed)  # fmt: skip

_Outcome = tuple[Job, tuple[Step, dict[str, Any]]]
#: One run of one job: its id and attempt number.
_Run = tuple[int, int]


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """What one run of a worker did."""

    completed: int
    failed: int
    retried: int
    lost: int
    seconds: float
    stuck: int = 0

    @property
    def processed(self) -> int:
        """Jobs whose handler ran to an outcome that was recorded."""
        return self.completed + self.failed + self.retried

    # ``lost``: outcomes refused because the claim no longer owned the job (its lease
    # expired and it was taken back). ``stuck``: handlers still running past their timeout
    # and grace, whose attempts were failed and whose threads were left behind.


class Worker:
    """Runs the handlers of a queue's registry in ``concurrency`` threads.

    ``queues`` limits the named queues it claims from (None: every queue). ``lease`` is how
    long a claim holds a job without a heartbeat; the worker renews the leases of its
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
        self.cycle = queue.cycle
        self.concurrency = validation.integer(concurrency, "concurrency", minimum=1)
        self.queues = validation.names(queues, "queues")
        self.lease = validation.seconds(lease, "lease", positive=True)
        self.grace = validation.seconds(grace, "grace")
        self.timeout_grace = validation.seconds(timeout_grace, "timeout_grace")
        self.unknown_task_window = validation.seconds(
            unknown_task_window, "unknown_task_window", positive=True
        )
        self.poll_interval = (
            None if poll_interval is None
            else validation.seconds(poll_interval, "poll_interval", positive=True)
        )  # fmt: skip
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
        self._scheduler = Scheduler(queue, queue.registry.schedules)
        self._lock = threading.Lock()
        self._jobs_ready = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._buffer: deque[Job] = deque()
        # claimed jobs of async def handlers, waiting for a slot of ``concurrency``
        self._async_queue: deque[Job] = deque()
        self._running: dict[_Run, Job] = {}
        self._outcomes: list[_Outcome] = []
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._stop_deadline: float | None = None
        self._threads: list[threading.Thread] = []
        self._counts = {"completed": 0, "failed": 0, "retried": 0, "lost": 0, "stuck": 0}
        self._reported: WorkerRecord | None = None
        self._started_at = 0.0
        self._reported_at = 0.0
        self._parent: int | None = None
        self._unknown_until: dict[str, float] = {}  # task: until when it is not claimed
        self._timeouts = False  # whether any job claimed so far has a timeout
        # moving averages (seconds) of a handler's run and of a dispatch round trip
        self._run_time = 0.0
        self._round_trip = 0.0
        self._active = False
        # async def handlers run on one event loop per worker, in a thread of its own
        self._loop_thread: threading.Thread | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[_Run, asyncio.Task[None]] = {}  # async runs, touched on the loop
        self._async_tasks: dict[str, bool] = {}  # task name: its handler is async

    def __repr__(self) -> str:
        return (f"Worker({self.id!r}, concurrency={self.concurrency}, "
                f"queues={list(self.queues) if self.queues else 'all'})")  # fmt: skip

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
        with self._jobs_ready:
            self._jobs_ready.notify_all()

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
        self._parent = _expected_parent()
        started = time.monotonic()
        if handle_signals is None:
            handle_signals = threading.current_thread() is threading.main_thread()
        waker = self.cycle.waker
        try:
            with self._signals(handle_signals):
                self._start_threads()
                waker.listen(self._wake)
                try:
                    self._register()
                    self._loop(burst)
                finally:
                    waker.listen(self._wake, active=False)
                    try:
                        self._shut_down()
                    finally:
                        self._stop_loop()
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
                        log.info("worker %s: %s, stopping gracefully (send again to stop "
                                 "now)", self.id, name)  # fmt: skip
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

    def _loop(self, burst: bool) -> None:
        cycle = self.cycle
        waker = cycle.waker
        now = time.monotonic()
        next_heartbeat = now + self._heartbeat_every()
        next_rescue = now  # rescue before the first claim: a dead worker's jobs are runnable
        next_checkpoint = now + self.checkpoint_interval
        next_report = now + self.report_interval
        next_due: float | None = None  # when the next delayed job we know of is due (monotonic)
        # the periodic jobs: not in burst mode (it runs what is there, then returns)
        scheduling = self.run_schedules and not burst and bool(self._scheduler.schedules)
        next_schedule = now if scheduling else float("inf")
        maybe_work = True  # there may be due jobs: try a claim
        look_ahead = False  # the queue looked drained or changed: read when work is next due
        seen_version = waker.look()
        seen_enqueued, seen_signals = waker.enqueued, waker.signals
        poll = _FAST_POLL
        active_at = now  # the last time anything happened
        error_backoff = 0.0
        while not self._hard_stop.is_set():
            try:
                now = time.monotonic()
                if self._stopping.is_set() and self._drain_for_stop(now):
                    return
                next_expiry = self._end_overdue_runs(now)
                if now >= next_rescue:
                    next_rescue = now + self.rescue_interval
                    if cycle.rescue_expired(renew=self._held(now)):
                        maybe_work = True
                    # a delayed job's time is read again: the clock it is due by may jump
                    look_ahead = look_ahead or next_due is not None
                    if self._parent is not None and os.getppid() != self._parent:
                        log.warning("worker %s: supervisor %d is gone, stopping", self.id,
                                    self._parent)  # fmt: skip
                        self.stop()
                if now >= next_heartbeat:
                    self._heartbeat(now)
                    next_heartbeat = now + self._heartbeat_every()
                if now >= next_report:
                    self._report()
                    next_report = now + self.report_interval
                if next_due is not None and now >= next_due:
                    maybe_work, next_due = True, None
                if now >= next_schedule:
                    created = self._scheduler.created
                    until_slot = self._scheduler.tick()
                    next_schedule = time.monotonic() + min(until_slot, self.schedule_check)
                    maybe_work = maybe_work or self._scheduler.created != created
                again, drained = self._exchange(maybe_work and not self._stopping.is_set())
                error_backoff = 0.0
                look_ahead = look_ahead or drained
                if again:
                    maybe_work = True  # a full claim or a recorded outcome: go round at once
                    poll, active_at = _FAST_POLL, now
                    continue
                maybe_work = False
                if look_ahead:
                    look_ahead = False
                    due_in = cycle.due_in(self.queues, self._unknown())
                    if due_in is not None and due_in <= 0:
                        maybe_work, next_due = True, None
                        continue
                    next_due = None if due_in is None else time.monotonic() + due_in
                with self._lock:
                    idle = not (self._running or self._buffer or self._async_queue
                                or self._outcomes)  # fmt: skip
                if burst and idle and not self._stopping.is_set():
                    wait = self._burst_wait()
                    if wait is None:
                        return
                    if wait <= 0:
                        maybe_work = True
                        continue
                    next_due = time.monotonic() + wait
                if idle and self.checkpoint_interval and now >= next_checkpoint:
                    next_checkpoint = now + self.checkpoint_interval
                    cycle.maintain()
                # sleep until a handler finishes, an enqueue here or a commit elsewhere, a
                # timer, or the next look for work. While busy, the looks come at most
                # 2 ms apart (a read each, as cheap as reading a file watcher); once quiet
                # for a while they space out and the file watcher, armed, reports commits
                looking = self._free_slots() > 0  # only then is a commit elsewhere news
                quiet = now - active_at >= _QUIET_AFTER
                ceiling = self.poll_interval or (
                    _BUSY_POLL if not quiet
                    else _IDLE_POLL_WATCHED if waker.watching else _IDLE_POLL_UNWATCHED
                )  # fmt: skip
                armed = looking and quiet
                timeout = min(poll, ceiling) if looking else next_heartbeat - now
                if next_due is not None:
                    timeout = min(timeout, max(0.0, next_due - now))
                if next_expiry is not None:
                    timeout = min(timeout, next_expiry - now)
                timeout = min(timeout, max(0.0, next_schedule - now))
                if armed:
                    waker.sleeping(True)
                try:
                    # a commit made before the watch began is seen by this look
                    if not armed or waker.look() == seen_version:
                        self._wake.wait(max(0.0, min(timeout, next_rescue - now)))
                finally:
                    if armed:
                        waker.sleeping(False)
                self._wake.clear()
                # an enqueue here is news; a file change only says to look soon: the
                # commit it announces may not be visible yet, or may be our own
                enqueued = waker.enqueued != seen_enqueued
                if enqueued or waker.signals != seen_signals:
                    seen_enqueued, seen_signals = waker.enqueued, waker.signals
                    poll, look_ahead, active_at = _FAST_POLL, look_ahead or enqueued, now
                else:
                    poll = min(poll * 2, ceiling)
                version = waker.look()
                if version != seen_version:
                    seen_version, look_ahead, active_at = version, True, now
            except QueueClosed:
                log.warning("worker %s: the queue was closed, stopping", self.id)
                return
            except Exception as exc:
                error_backoff = min(max(error_backoff * 2, 0.05), 1.0)
                if isinstance(exc, _TRANSIENT):
                    log.warning("worker %s: %s; trying again in %.2fs", self.id, exc,
                                error_backoff)  # fmt: skip
                else:
                    log.exception("worker %s: error in the dispatch loop; retrying in %.2fs",
                                  self.id, error_backoff)  # fmt: skip
                self._hard_stop.wait(error_backoff)
                maybe_work = True

    def _exchange(self, claim: bool) -> tuple[bool, bool]:
        """Record finished outcomes and claim for free slots in one transaction.

        Returns whether to go round again at once (outcomes recorded, or a full claim), and
        whether a claim came back short (the queue has no more due jobs for now). Outcomes
        that could not be written are kept for the next round.
        """
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        free = self._free_slots()
        if not outcomes and not (claim and free > 0):
            return False, False
        request = (
            self.cycle.claim_request(self.id, self.queues, free, self.lease, self._unknown())
            if claim and free > 0 else None
        )  # fmt: skip
        started = time.perf_counter()
        try:
            statuses, jobs = self.cycle.settle(outcomes, request)
            recorded = list(zip(outcomes, statuses, strict=True))
        except Exception as exc:
            if not outcomes or isinstance(exc, _TRANSIENT):
                self._keep(outcomes)
                raise
            log.warning("worker %s: recording %d outcomes together failed (%s: %s); recording "
                        "each alone", self.id, len(outcomes), type(exc).__name__,
                        exc)  # fmt: skip
            recorded, jobs = self._record_each(outcomes), []
        self._round_trip = _average(self._round_trip, time.perf_counter() - started)
        self._count(recorded)
        deferred = self._take(jobs)
        full = request is not None and len(jobs) == request.limit
        return bool(outcomes) or full or deferred, request is not None and not full

    def _take(self, jobs: list[Job]) -> bool:
        """Hand claimed jobs to the handler threads; a job whose task this worker does not
        know goes back (its attempt not counted) for one that does, and one whose payload
        cannot be decoded fails. True if any was not handed to a thread."""
        if not jobs:
            return False
        cycle = self.cycle
        registry = cycle.registry
        known, deferred = [], []
        settings: dict[str, tuple[float | None, float | None]] = {}  # task: lease, timeout
        for job in jobs:
            claim = job._claim
            assert claim is not None
            if claim.undecodable:
                deferred.append((job, cycle.undecodable_step(job)))
                continue
            if job.task in registry:
                lease, timeout = settings.get(job.task) or settings.setdefault(
                    job.task, (registry.options(job.task).lease, cycle.timeout_of(job.task))
                )
                if lease is not None:
                    claim.lease = lease
                if timeout is not None:
                    claim.timeout = timeout
                    self._timeouts = True
                known.append(job)
                continue
            if job.task not in self._unknown_until:
                log.warning("worker %s does not know task %r: its jobs go back for a worker "
                            "that does (for up to %gs), their attempts not counted", self.id,
                            job.task, self.unknown_task_window)  # fmt: skip
            # leave the task's jobs to workers that know it for a while, then look again
            # (one past its window is failed by whichever worker looks)
            self._unknown_until[job.task] = time.monotonic() + min(
                _UNKNOWN_TASK_RECHECK, self.unknown_task_window / 4
            )
            deferred.append((job, cycle.defer_step(job, self.id, self.unknown_task_window)))
        on_loop = [job for job in known if self._is_async(job.task)]
        if on_loop:
            known = [job for job in known if not self._is_async(job.task)]
        with self._jobs_ready:
            self._outcomes.extend(deferred)
            self._buffer.extend(known)
            self._jobs_ready.notify(len(known))
        if on_loop:
            with self._lock:
                self._async_queue.extend(on_loop)
            self._pump_async()
        return bool(deferred)

    # --- async def handlers: on the worker's event loop ------------------------------------

    def _is_async(self, task: str) -> bool:
        known = self._async_tasks.get(task)
        if known is None:
            handler = self.cycle.registry.get(task).handler
            known = self._async_tasks[task] = inspect.iscoroutinefunction(handler)
        return known

    def _loop_for_async(self) -> asyncio.AbstractEventLoop:
        """The worker's event loop, started in a thread of its own on first use."""
        if self._event_loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="sqlitejobq-loop",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._event_loop, self._loop_thread = loop, thread
        return self._event_loop

    def _pump_async(self) -> None:
        """Start waiting jobs of ``async def`` handlers on the loop while slots of
        ``concurrency`` are free: each takes a slot as a thread's job does, but no thread."""
        started: list[tuple[_Run, AsyncJob]] = []
        with self._lock:
            while self._async_queue and len(self._running) < self.concurrency:
                handle = as_async(self._async_queue.popleft())
                run = (handle.id, handle.attempts)
                if handle._claim is not None:
                    handle._claim.started = time.monotonic()
                self._running[run] = handle
                started.append((run, handle))
        if not started:
            return
        loop = self._loop_for_async()

        def spawn() -> None:
            for run, handle in started:
                self._tasks[run] = loop.create_task(self._run_async(handle, run))

        loop.call_soon_threadsafe(spawn)

    async def _run_async(self, job: AsyncJob, run: _Run) -> None:
        started = time.perf_counter()
        try:
            outcome = await self._execute_async(job)
        finally:
            self._tasks.pop(run, None)
        self._hand_over(run, outcome, time.perf_counter() - started)
        self._pump_async()

    async def _execute_async(self, job: AsyncJob) -> _Outcome:
        cycle = self.cycle
        task = cycle.registry.get(job.task)
        claim = job._claim
        try:
            result = await task.handler(job)
        except asyncio.CancelledError as exc:
            if claim is not None and claim.timed_out():
                timeout = JobTimeout(f"timed out after {claim.timeout:g}s (cancelled)")
                return job, cycle.fail_step(job, timeout, None, True, None)
            reason = "cancelled" if claim is not None and claim.cancelled else "interrupted"
            return job, cycle.fail_step(job, f"CancelledError: {reason}",
                                        "".join(traceback.format_exception(exc)), False,
                                        None)  # fmt: skip
        except Exception as exc:  # a handler's failure is the job's, never the worker's
            return self._failed(job, exc)
        return self._completed(job, result)

    def _cancel_async(self, runs: list[_Run]) -> None:
        """Deliver CancelledError to these async runs (from any thread)."""
        loop = self._event_loop
        if loop is None or not runs:
            return

        def cancel() -> None:
            for run in runs:
                task = self._tasks.get(run)
                if task is not None:
                    task.cancel()

        loop.call_soon_threadsafe(cancel)

    def _stop_loop(self) -> None:
        loop, thread = self._event_loop, self._loop_thread
        if loop is None or thread is None:
            return

        def stop() -> None:  # on the loop: the tasks are the loop's to touch
            for task in list(self._tasks.values()):
                task.cancel()
            loop.stop()

        loop.call_soon_threadsafe(stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()
        self._event_loop = self._loop_thread = None

    def _unknown(self) -> tuple[str, ...]:
        """The tasks this worker does not know and leaves to others for now."""
        if not self._unknown_until:
            return ()
        now = time.monotonic()
        return tuple(sorted(task for task, until in self._unknown_until.items() if until > now))

    def _keep(self, outcomes: list[_Outcome]) -> None:
        """Put outcomes that were not written back in front, to be written next round."""
        if outcomes:
            with self._lock:
                self._outcomes[:0] = outcomes

    def _record_each(self, outcomes: list[_Outcome]) -> list[tuple[_Outcome, str | None]]:
        """Record outcomes one by one, so that one that cannot be stored fails its own job
        and never holds back the others. A fault that passes keeps the rest for later."""
        recorded: list[tuple[_Outcome, str | None]] = []
        try:
            for outcome in outcomes:
                recorded.append(self._record_alone(outcome))
        except Exception:
            self._keep(outcomes[len(recorded) :])
            self._count(recorded)
            raise
        return recorded

    def _record_alone(self, outcome: _Outcome) -> tuple[_Outcome, str | None]:
        """Record one outcome; if the database refuses it, record its attempt as failed
        with the reason instead. Returns the outcome recorded and the job's status."""
        job = outcome[0]
        try:
            return outcome, self.cycle.settle([outcome], None)[0][0]
        except Exception as exc:
            if isinstance(exc, _TRANSIENT):
                raise
            problem = f"{type(exc).__name__}: {exc}"
        log.error("job %d %s: its outcome cannot be recorded (%s); the attempt fails instead",
                  job.id, job.task, problem)  # fmt: skip
        failure = (job, self.cycle.fail_step(
            job, f"the outcome could not be recorded: {problem}", None, False, None
        ))  # fmt: skip
        try:
            return failure, self.cycle.settle([failure], None)[0][0]
        except Exception as exc:
            if isinstance(exc, _TRANSIENT):
                raise
            log.error("job %d %s: not even its failure can be recorded (%s); the job goes back "
                      "to the queue when its lease expires", job.id, job.task, exc)  # fmt: skip
            return failure, None

    def _count(self, recorded: list[tuple[_Outcome, str | None]]) -> None:
        for (_, (step, _)), status in recorded:
            if status is None:
                self._counts["lost"] += 1
            elif step is Step.COMPLETE:
                self._counts["completed"] += 1
            elif status == "queued":
                if step is not Step.DEFER:
                    self._counts["retried"] += 1
            elif status == "failed" or step is not Step.DEFER:
                self._counts["failed"] += 1

    def _free_slots(self) -> int:
        """Slots to claim for: idle threads, plus what will finish during one round trip.

        Short jobs are claimed ahead (up to 256) so that one transaction carries many of
        them; long jobs are not, so they spread over every worker.
        """
        ahead = self.prefetch
        if ahead is None:
            if self._run_time <= 0.0:
                ahead = 0
            else:
                per_round = self._round_trip / self._run_time
                ahead = min(_MAX_AHEAD, int(self.concurrency * per_round))
        with self._lock:
            return (self.concurrency + ahead - len(self._running) - len(self._buffer)
                    - len(self._async_queue))  # fmt: skip

    def _burst_wait(self) -> float | None:
        """Burst mode: None when it ends (nothing due in our queues, no lease left to rescue,
        no job held back only by a rate limit), else how long to wait before looking again
        (0: at once)."""
        due_in = self.cycle.due_in(self.queues, self._unknown())
        if due_in is not None and due_in <= 0:
            return 0.0
        expiry_in = self.cycle.lease_expiry_in()
        if expiry_in is not None and expiry_in < 0:
            return 0.0 if self.cycle.rescue_expired(renew=self._held(time.monotonic())) else None
        limited = self.cycle.limited_due(self.queues, self._unknown())
        if limited is not None:
            if limited.claimable:  # its rate freed a start since the look above
                return 0.0
            if limited.next_start is not None:  # runnable once its rate lets it
                return max(0.001, limited.next_start - limited.now)
        return None

    def _heartbeat_every(self) -> float:
        with self._lock:
            leases = [j._claim.lease for j in self._running.values() if j._claim is not None]
        return min([self.lease, *leases]) / 3.0

    def _held(self, now: float) -> list[Job]:
        """The jobs whose leases this worker renews: running (and not past their timeout),
        claimed but not started, and finished with an outcome not yet written."""
        with self._lock:
            running = [
                job for job in self._running.values()
                if job._claim is not None and not job._claim.timed_out(now)
            ]  # fmt: skip
            return [*running, *self._buffer, *self._async_queue,
                    *(job for job, _ in self._outcomes)]  # fmt: skip

    def _heartbeat(self, now: float) -> None:
        held = self._held(now)
        if not held:
            return
        for job, owned in zip(held, self.cycle.heartbeat_many(held), strict=True):
            if not owned:
                log.warning("job %d %s: worker %s lost its lease (another worker may run it)",
                            job.id, job.task, self.id)  # fmt: skip
        if self._tasks:  # a cancel asked for since: CancelledError in the handler
            self._cancel_async([
                (job.id, job.attempts) for job in held
                if isinstance(job, AsyncJob) and job._claim is not None and job._claim.cancelled
            ])  # fmt: skip

    def _end_overdue_runs(self, now: float) -> float | None:
        """Fail the attempts of handlers still running ``timeout_grace`` past their timeout,
        and put a new thread in each one's place; when the next such end is due."""
        if not self._timeouts:
            return None
        overdue, soonest = [], None
        with self._lock:
            for run, job in list(self._running.items()):
                claim = job._claim
                if claim is None or claim.timeout is None or claim.started is None:
                    continue
                if isinstance(job, AsyncJob):  # a coroutine can be stopped: at its timeout
                    ends = claim.started + claim.timeout
                    if now >= ends:
                        self._cancel_async([run])
                    elif soonest is None or ends < soonest:
                        soonest = ends
                    continue
                ends = claim.started + claim.timeout + self.timeout_grace
                if now >= ends:
                    del self._running[run]
                    overdue.append(job)
                elif soonest is None or ends < soonest:
                    soonest = ends
        for job in overdue:
            timeout = job._claim.timeout if job._claim is not None else 0.0
            error = JobTimeout(
                f"timed out after {timeout:g}s (the handler still ran {self.timeout_grace:g}s "
                f"later; its thread was left behind)"
            )
            step = self.cycle.fail_step(job, error, None, True, None)
            with self._lock:
                self._outcomes.append((job, step))
            self._counts["stuck"] += 1
            log.error("job %d %s: handler still running %gs after its timeout of %gs; the "
                      "attempt fails, and its thread is left behind (a thread cannot be "
                      "killed)", job.id, job.task, self.timeout_grace, timeout)  # fmt: skip
            if not self._stopping.is_set():
                self._start_thread()
        if overdue and self._parent is not None and not self._stopping.is_set():
            log.warning("worker %s: stopping so that the supervisor replaces this process "
                        "and its stuck thread", self.id)  # fmt: skip
            self.stop()
        return soonest

    def _drain_for_stop(self, now: float) -> bool:
        """While stopping: hand back unstarted jobs, wait for running ones and write their
        outcomes. True when done."""
        with self._lock:
            unstarted = [*self._buffer, *self._async_queue]
            self._buffer.clear()
            self._async_queue.clear()
            running = list(self._running.values())
        if unstarted:
            try:
                released = self.cycle.release(unstarted)
            except Exception:
                with self._lock:
                    self._buffer.extendleft(reversed(unstarted))
                raise
            log.info("worker %s: %d claimed jobs that had not started went back to the queue",
                     self.id, released)  # fmt: skip
        if self._stop_deadline is not None and now >= self._stop_deadline:
            if running:
                self._abandon(running, "interrupted: the worker stopped before the handler "
                              "finished")  # fmt: skip
            return True
        self._exchange(claim=False)
        with self._lock:
            return not self._running and not self._outcomes

    def _abandon(self, jobs: list[Job], reason: str) -> None:
        with self._lock:
            for job in jobs:
                self._running.pop((job.id, job.attempts), None)
        self._cancel_async([(job.id, job.attempts) for job in jobs if isinstance(job, AsyncJob)])
        if jobs:
            self.cycle.abandon(jobs, reason)
            log.warning("worker %s: %d running jobs did not finish in time: %s", self.id,
                        len(jobs), ", ".join(str(j.id) for j in jobs))  # fmt: skip

    def _shut_down(self) -> None:
        with self._jobs_ready:
            self._stopping.set()
            self._jobs_ready.notify_all()
        try:
            with self._lock:
                unstarted = [*self._buffer, *self._async_queue]
                self._buffer.clear()
                self._async_queue.clear()
                running = list(self._running.values())
            if unstarted:
                self.cycle.release(unstarted)
            self._flush_outcomes()
            self._abandon(running, "interrupted: the worker stopped at once")
            self._report(stopped=True)
        except QueueClosed:
            pass
        except Exception:
            log.exception("worker %s: error while stopping", self.id)
        for thread in self._threads:
            thread.join(0.1 if self._hard_stop.is_set() else 1.0)
        self._threads = []
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
                with self._lock:
                    left = len(self._outcomes)
                if self._hard_stop.is_set() or time.monotonic() + backoff > deadline:
                    log.error("worker %s: %d outcomes could not be recorded before stopping "
                              "(%s); their jobs go back to the queue when their leases expire",
                              self.id, left, exc)  # fmt: skip
                    return
                log.warning("worker %s: %d outcomes not recorded yet (%s); trying again",
                            self.id, left, exc)  # fmt: skip
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    # --- bookkeeping ----------------------------------------------------------------------

    def _record(self, stopped: bool = False) -> WorkerRecord:
        return WorkerRecord(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=",".join(self.queues) if self.queues else "*",
            concurrency=self.concurrency,
            started_at=self._started_at,
            stopped=stopped,
            jobs_completed=self._counts["completed"],
            jobs_failed=self._counts["failed"],
            lock=self.cycle.metrics.snapshot(),
        )

    def _register(self) -> None:
        self._started_at = self.queue.clock()
        self.cycle.register_worker(self._record())
        self._reported, self._reported_at = self._record(), time.monotonic()
        log.info("worker %s started: concurrency %d, queues %s, lease %gs", self.id,
                 self.concurrency, ",".join(self.queues) if self.queues else "all",
                 self.lease)  # fmt: skip

    def _report(self, stopped: bool = False) -> None:
        """Write the worker's row when its figures changed, or now and then to show it lives.
        The jobs it ended since the last report written go to the throughput with it: a
        report that fails leaves them for the next one, none lost nor counted twice."""
        record = self._record(stopped)
        last = self._reported
        unchanged = (
            last is not None and (record.jobs_completed, record.jobs_failed, record.lock.writes)
            == (last.jobs_completed, last.jobs_failed, last.lock.writes)
        )  # fmt: skip
        if unchanged and not stopped and time.monotonic() - self._reported_at < _ALIVE_EVERY:
            return
        if last is not None:
            record = replace(
                record,
                completed_delta=record.jobs_completed - last.jobs_completed,
                failed_delta=record.jobs_failed - last.jobs_failed,
            )
        self.cycle.report_worker(record)
        self._reported, self._reported_at = record, time.monotonic()

    # --- handler threads ----------------------------------------------------------------

    def _start_threads(self) -> None:
        self._threads = []
        for _ in range(self.concurrency):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"sqlitejobq-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while True:
            with self._jobs_ready:
                while not self._buffer and not self._stopping.is_set():
                    self._jobs_ready.wait()
                if self._stopping.is_set():
                    return  # claimed jobs not yet started go back to the queue
                job = self._buffer.popleft()
                run = (job.id, job.attempts)
                if job._claim is not None:
                    job._claim.started = time.monotonic()
                self._running[run] = job
            started = time.perf_counter()
            outcome = self._execute(job)
            if not self._hand_over(run, outcome, time.perf_counter() - started):
                return  # another thread took this one's place

    def _hand_over(self, run: _Run, outcome: _Outcome, elapsed: float) -> bool:
        """Give a finished run's outcome to the dispatcher; False when the run had been
        ended without it (overdue past its timeout, or a hard stop: its attempt is
        recorded already) and the outcome is discarded."""
        job = outcome[0]
        with self._lock:
            self._run_time = _average(self._run_time, elapsed)
            if self._running.pop(run, None) is None:
                log.warning("job %d %s: handler returned after its run was ended; its "
                            "outcome is discarded", job.id, job.task)  # fmt: skip
                return False
            self._outcomes.append(outcome)
        self._wake.set()
        return True

    def _execute(self, job: Job) -> _Outcome:
        task = self.cycle.registry.get(job.task)
        try:
            result = task.handler(job)
        except BaseException as exc:  # a handler's failure is the job's, never the worker's
            return self._failed(job, exc)
        return self._completed(job, result)

    def _failed(self, job: Job, exc: BaseException) -> _Outcome:
        """The outcome of a handler that raised: retried unless PermanentFailure."""
        trace = "".join(traceback.format_exception(exc))
        again = not isinstance(exc, PermanentFailure)
        return job, self.cycle.fail_step(job, exc, trace, again, None)

    def _completed(self, job: Job, result: Any) -> _Outcome:
        """The outcome of a handler that returned (failed at once if its result is not JSON)."""
        try:
            return job, self.cycle.complete_step(job, result)
        except PayloadError as exc:
            return job, self.cycle.fail_step(job, exc, None, False, None)


def _average(current: float, sample: float) -> float:
    """An exponential moving average that starts at the first sample."""
    return sample if current <= 0.0 else current * 0.9 + sample * 0.1


def _expected_parent() -> int | None:
    value = os.environ.get(PARENT_PID_ENV)
    if value is None or not value.isdigit():
        return None
    return int(value)
