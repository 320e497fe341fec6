"""Worker: runs handlers in a pool of threads, claiming in batches sized to free slots.

One dispatcher thread (the one that calls ``Worker.run``) talks to the database; the
handler threads only run handlers. Each round trip records the outcomes that finished since
the last one and claims jobs for the free slots in the same transaction, so a busy worker
pays one transaction for many jobs. While idle it only reads: ``PRAGMA data_version`` tells
it when another connection committed, an in-process enqueue wakes it at once, and a timer
wakes it when the next delayed job is due.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from . import validation
from .errors import (
    InvalidArgumentType,
    PayloadError,
    PermanentFailure,
    QueueClosed,
    SqliteJobQError,
    UnknownTask,
)
from .job import Job
from .queue import Queue
from .storage import Step, WorkerRecord, hostname

log = logging.getLogger("sqlitejobq")

#: Set by a supervisor: the worker stops gracefully when this process is orphaned.
PARENT_PID_ENV = "SQLITEJOBQ_PARENT_PID"
#: An idle worker still writes its row this often, so others can tell it is alive.
_ALIVE_EVERY = 30.0
#: The most jobs claimed ahead of free threads (only short jobs are claimed ahead).
_MAX_AHEAD = 256

_Outcome = tuple[Job, tuple[Step, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """What one run of a worker did."""

    completed: int
    failed: int
    retried: int
    lost: int
    seconds: float

    @property
    def processed(self) -> int:
        """Jobs whose handler ran to an outcome that was recorded."""
        return self.completed + self.failed + self.retried


class Worker:
    """Runs the handlers of a queue's registry in ``concurrency`` threads.

    ``queues`` limits the named queues it claims from (None: every queue). ``lease`` is how
    long a claim holds a job without a heartbeat; the worker renews the leases of its
    running jobs every third of it, so a long job keeps its lease while the worker lives.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int = 4,
        queues: Sequence[str] | None = None,
        lease: float = 30.0,
        grace: float = 30.0,
        poll_interval: float = 0.002,
        rescue_interval: float = 1.0,
        checkpoint_interval: float = 60.0,
        report_interval: float = 10.0,
        prefetch: int | None = None,
        worker_id: str | None = None,
    ) -> None:
        if not isinstance(queue, Queue):
            raise InvalidArgumentType(
                f"queue must be a sqlitejobq.Queue, got {type(queue).__name__}"
            )
        self.queue = queue
        self.concurrency = validation.integer(concurrency, "concurrency", minimum=1)
        self.queues = validation.names(queues, "queues")
        self.lease = validation.seconds(lease, "lease", positive=True)
        self.grace = validation.seconds(grace, "grace")
        self.poll_interval = validation.seconds(poll_interval, "poll_interval", positive=True)
        self.rescue_interval = validation.seconds(rescue_interval, "rescue_interval", positive=True)
        self.checkpoint_interval = validation.seconds(checkpoint_interval, "checkpoint_interval")
        self.report_interval = validation.seconds(report_interval, "report_interval", positive=True)
        self.prefetch = (
            None if prefetch is None else validation.integer(prefetch, "prefetch", minimum=0)
        )
        self.id = validation.name(
            worker_id or f"{hostname()}:{os.getpid()}:{secrets.token_hex(3)}", "worker_id"
        )
        self._lock = threading.Lock()
        self._jobs_ready = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._buffer: deque[Job] = deque()
        self._running: dict[int, Job] = {}
        self._outcomes: list[_Outcome] = []
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._stop_deadline: float | None = None
        self._threads: list[threading.Thread] = []
        self._counts = {"completed": 0, "failed": 0, "retried": 0, "lost": 0}
        self._reported: WorkerRecord | None = None
        # moving averages (seconds) of a handler's run and of a dispatch round trip
        self._run_time = 0.0
        self._round_trip = 0.0
        self._active = False

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
        started = time.monotonic()
        if handle_signals is None:
            handle_signals = threading.current_thread() is threading.main_thread()
        try:
            with self._signals(handle_signals):
                self._start_threads()
                self.queue._storage.listen(self._wake)
                try:
                    self._register()
                    self._loop(burst)
                finally:
                    self.queue._storage.listen(self._wake, active=False)
                    self._shut_down()
        finally:
            self._active = False
        return WorkerSummary(seconds=time.monotonic() - started, **self._counts)

    @contextlib.contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        if not install:
            yield
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stopping.is_set():
                log.warning("worker %s: second %s, stopping now", self.id, name)
            else:
                log.info("worker %s: %s, stopping gracefully (send again to stop now)",
                         self.id, name)  # fmt: skip
            self.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # --- the dispatcher -----------------------------------------------------------------

    def _loop(self, burst: bool) -> None:
        queue = self.queue
        now = time.monotonic()
        next_heartbeat = now + self._heartbeat_every()
        next_rescue = now  # rescue before the first claim: a dead worker's jobs are runnable
        next_checkpoint = now + self.checkpoint_interval
        next_report = now + self.report_interval
        next_due: float | None = None  # epoch time of the next delayed job we know of
        maybe_work = True  # there may be due jobs: try a claim
        look_ahead = False  # the queue looked drained or changed: read when work is next due
        seen_version = queue.data_version()
        seen_enqueued = queue._storage.enqueued_counter
        poll = self.poll_interval / 4
        parent = _expected_parent()
        error_backoff = 0.0
        while not self._hard_stop.is_set():
            try:
                now = time.monotonic()
                if self._stopping.is_set() and self._drain_for_stop(now):
                    return
                if now >= next_rescue:
                    next_rescue = now + self.rescue_interval
                    if queue.rescue_expired():
                        maybe_work = True
                    if parent is not None and os.getppid() != parent:
                        log.warning("worker %s: supervisor %d is gone, stopping", self.id, parent)
                        self.stop()
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + self._heartbeat_every()
                if now >= next_report:
                    self._report()
                    next_report = now + self.report_interval
                if next_due is not None and queue.clock() >= next_due:
                    maybe_work, next_due = True, None
                again, drained = self._exchange(maybe_work and not self._stopping.is_set())
                look_ahead = look_ahead or drained
                if again:
                    maybe_work = True  # a full claim or a recorded outcome: go round at once
                    poll = self.poll_interval / 4
                    error_backoff = 0.0
                    continue
                maybe_work = False
                if look_ahead:
                    look_ahead = False
                    next_due = queue.next_run_at(self.queues)
                    if next_due is not None and next_due <= queue.clock():
                        maybe_work, next_due = True, None
                        continue
                with self._lock:
                    idle = not self._running and not self._buffer and not self._outcomes
                if burst and idle and not self._stopping.is_set():
                    if self._nothing_runnable():
                        return
                    maybe_work = True
                    continue
                if idle and self.checkpoint_interval and now >= next_checkpoint:
                    next_checkpoint = now + self.checkpoint_interval
                    queue.checkpoint()
                # wait for a handler to finish, an enqueue in this process, or a poll tick
                timeout = poll if self._free_slots() else next_heartbeat - now
                if next_due is not None:
                    timeout = min(timeout, max(0.0, next_due - queue.clock()))
                self._wake.wait(max(0.0, min(timeout, next_rescue - now)))
                self._wake.clear()
                poll = min(poll * 2, self.poll_interval)
                enqueued = queue._storage.enqueued_counter
                version = queue.data_version()
                if enqueued != seen_enqueued or version != seen_version:
                    seen_enqueued, seen_version = enqueued, version
                    look_ahead = True
            except QueueClosed:
                log.warning("worker %s: the queue was closed, stopping", self.id)
                return
            except Exception:
                error_backoff = min(max(error_backoff * 2, 0.05), 5.0)
                log.exception("worker %s: error in the dispatch loop; retrying in %.2fs",
                              self.id, error_backoff)  # fmt: skip
                self._hard_stop.wait(error_backoff)
                maybe_work = True

    def _exchange(self, claim: bool) -> tuple[bool, bool]:
        """Record finished outcomes and claim for free slots in one transaction.

        Returns whether to go round again at once (outcomes recorded, or a full claim), and
        whether a claim came back short (the queue has no more due jobs for now).
        """
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        free = self._free_slots()
        if not outcomes and not (claim and free > 0):
            return False, False
        request = (
            self.queue.claim_request(self.id, self.queues, free, self.lease)
            if claim and free > 0 else None
        )  # fmt: skip
        started = time.perf_counter()
        owned, jobs = self.queue._settle(outcomes, request)
        self._round_trip = _average(self._round_trip, time.perf_counter() - started)
        self._count(outcomes, owned)
        if jobs:
            for job in jobs:
                options = self.queue.registry.options(job.task)
                if options.lease is not None and job._claim is not None:
                    job._claim.lease = options.lease
            with self._jobs_ready:
                self._buffer.extend(jobs)
                self._jobs_ready.notify(len(jobs))
        full = request is not None and len(jobs) == request.limit
        return bool(outcomes) or full, request is not None and not full

    def _count(self, outcomes: list[_Outcome], owned: list[bool]) -> None:
        for (_, (step, params)), ok in zip(outcomes, owned, strict=True):
            if not ok:
                self._counts["lost"] += 1
            elif step is Step.COMPLETE:
                self._counts["completed"] += 1
            elif params.get("status") == "queued":
                self._counts["retried"] += 1
            else:
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
            return self.concurrency + ahead - len(self._running) - len(self._buffer)

    def _nothing_runnable(self) -> bool:
        """Burst mode's end: nothing due in our queues and no lease left to rescue."""
        now = self.queue.clock()
        due = self.queue.next_run_at(self.queues)
        if due is not None and due <= now:
            return False
        expiry = self.queue.next_lease_expiry()
        if expiry is not None and expiry < now:
            return not self.queue.rescue_expired()
        return True

    def _heartbeat_every(self) -> float:
        with self._lock:
            leases = [j._claim.lease for j in self._running.values() if j._claim is not None]
        return min([self.lease, *leases]) / 3.0

    def _heartbeat(self) -> None:
        with self._lock:
            held = [*self._running.values(), *self._buffer]
        if not held:
            return
        for job, owned in zip(held, self.queue.heartbeat_many(held), strict=True):
            if not owned:
                log.warning("job %d %s: worker %s lost its lease (another worker may run it)",
                            job.id, job.task, self.id)  # fmt: skip

    def _drain_for_stop(self, now: float) -> bool:
        """While stopping: hand back unstarted jobs, wait for running ones. True when done."""
        with self._lock:
            unstarted = list(self._buffer)
            self._buffer.clear()
            running = list(self._running.values())
        if unstarted:
            released = self.queue.release(unstarted)
            log.info("worker %s: %d claimed jobs that had not started went back to the queue",
                     self.id, released)  # fmt: skip
        self._exchange(claim=False)
        if not running:
            return True
        if self._stop_deadline is not None and now >= self._stop_deadline:
            self._abandon(running, "interrupted: the worker stopped before the handler finished")
            return True
        return False

    def _abandon(self, jobs: list[Job], reason: str) -> None:
        with self._lock:
            for job in jobs:
                self._running.pop(job.id, None)
        if jobs:
            self.queue.abandon(jobs, reason)
            log.warning("worker %s: %d running jobs did not finish in time: %s", self.id,
                        len(jobs), ", ".join(str(j.id) for j in jobs))  # fmt: skip

    def _shut_down(self) -> None:
        with self._jobs_ready:
            self._stopping.set()
            self._jobs_ready.notify_all()
        try:
            with self._lock:
                unstarted = list(self._buffer)
                self._buffer.clear()
                running = list(self._running.values())
            if unstarted:
                self.queue.release(unstarted)
            self._exchange(claim=False)
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

    # --- bookkeeping ----------------------------------------------------------------------

    def _record(self, stopped: bool = False) -> WorkerRecord:
        now = self.queue.clock()
        return WorkerRecord(
            id=self.id,
            hostname=hostname(),
            pid=os.getpid(),
            queues=",".join(self.queues) if self.queues else "*",
            concurrency=self.concurrency,
            now=now,
            stopped_at=now if stopped else None,
            jobs_completed=self._counts["completed"],
            jobs_failed=self._counts["failed"],
            lock=self.queue._storage.metrics.snapshot(),
        )

    def _register(self) -> None:
        self.queue._storage.register_worker(self._record())
        self._reported = self._record()
        log.info("worker %s started: concurrency %d, queues %s, lease %gs", self.id,
                 self.concurrency, ",".join(self.queues) if self.queues else "all",
                 self.lease)  # fmt: skip

    def _report(self, stopped: bool = False) -> None:
        """Write the worker's row when its figures changed, or now and then to show it lives."""
        record = self._record(stopped)
        last = self._reported
        unchanged = (
            last is not None and (record.jobs_completed, record.jobs_failed, record.lock.writes)
            == (last.jobs_completed, last.jobs_failed, last.lock.writes)
        )  # fmt: skip
        if unchanged and not stopped and last is not None and record.now - last.now < _ALIVE_EVERY:
            return
        self.queue._storage.report_worker(record)
        self._reported = record

    # --- handler threads ----------------------------------------------------------------

    def _start_threads(self) -> None:
        self._threads = [
            threading.Thread(target=self._serve, name=f"sqlitejobq-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while True:
            with self._jobs_ready:
                while not self._buffer and not self._stopping.is_set():
                    self._jobs_ready.wait()
                if self._stopping.is_set():
                    return  # claimed jobs not yet started go back to the queue
                job = self._buffer.popleft()
                self._running[job.id] = job
            started = time.perf_counter()
            outcome = self._execute(job)
            elapsed = time.perf_counter() - started
            with self._lock:
                self._run_time = _average(self._run_time, elapsed)
                if self._running.pop(job.id, None) is not None:
                    self._outcomes.append(outcome)
            self._wake.set()

    def _execute(self, job: Job) -> _Outcome:
        queue = self.queue
        try:
            task = queue.registry.get(job.task)
        except UnknownTask as exc:
            error = f"UnknownTask: {exc}"
            return job, queue._fail_step(job, error, None, False, None, queue.clock())
        try:
            result = task.handler(job)
        except BaseException as exc:  # a handler's failure is the job's, never the worker's
            trace = "".join(traceback.format_exception(exc))
            again = not isinstance(exc, PermanentFailure)
            return job, queue._fail_step(job, exc, trace, again, None, queue.clock())
        try:
            return job, queue._complete_step(job, result, queue.clock())
        except PayloadError as exc:
            return job, queue._fail_step(job, exc, None, False, None, queue.clock())


def _average(current: float, sample: float) -> float:
    """An exponential moving average that starts at the first sample."""
    return sample if current <= 0.0 else current * 0.9 + sample * 0.1


def _expected_parent() -> int | None:
    value = os.environ.get(PARENT_PID_ENV)
    if value is None or not value.isdigit():
        return None
    return int(value)
