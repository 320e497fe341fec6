"""Runners: where a worker's handlers run, one per execution model.

Plain handlers run in a pool of threads, ``async def`` handlers on one event loop in a
thread of its own. Both take their runs from the worker's ``Slots`` (``concurrency`` runs
at a time in all) and hand their outcomes back to the dispatcher, the only thread that
talks to the database.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

from .errors import JobTimeout, PayloadError, PermanentFailure, Snooze
from .job import AsyncJob, Job, as_async

if TYPE_CHECKING:
    from .lifecycle import JobLifecycle, Outcome

log = logging.getLogger("sqlitejobq")

#: One run of one job: its id and attempt number.
Run = tuple[int, int]


def moving_average(current: float, sample: float) -> float:
    """An exponential moving average that starts at the first sample."""
    return sample if current <= 0.0 else current * 0.9 + sample * 0.1


class Slots:
    """A worker's ``concurrency`` slots: the jobs waiting for one, the runs in flight and
    the outcomes not yet recorded, under one lock that the dispatcher and runners share."""

    def __init__(
        self,
        lifecycle: JobLifecycle,
        concurrency: int,
        wake: threading.Event,
        stopping: threading.Event,
    ) -> None:
        self.concurrency = concurrency
        self.lock = threading.Lock()
        self.wake = wake  # set when an outcome is handed over: the dispatcher records it
        self.running: dict[Run, Job] = {}
        self.outcomes: list[Outcome] = []
        self.run_time = 0.0  # moving average (seconds) of a handler's run
        self.timeouts = False  # whether any job taken so far has a timeout
        self.threads = ThreadRunner(lifecycle, self, stopping)
        self.loop = AsyncRunner(lifecycle, self)

    def submit(self, jobs: list[Job]) -> None:
        """Hand claimed jobs to the runner of their handlers."""
        on_loop = [job for job in jobs if self.loop.handles(job.task)]
        if on_loop:
            jobs = [job for job in jobs if not self.loop.handles(job.task)]
        self.threads.submit(jobs)
        if on_loop:
            self.loop.submit(on_loop)

    def start(self, job: Job) -> Run:
        """Count ``job`` as running from now (the caller holds the lock)."""
        run = (job.id, job.attempts)
        if job._claim is not None:
            job._claim.started = time.monotonic()
        self.running[run] = job
        return run

    def hand_over(self, run: Run, outcome: Outcome, elapsed: float) -> bool:
        """Give a finished run's outcome to the dispatcher; False when the run had been
        ended without it (overdue past its timeout, or a hard stop: its attempt is
        recorded already) and the outcome is discarded."""
        job = outcome[0]
        with self.lock:
            self.run_time = moving_average(self.run_time, elapsed)
            if self.running.pop(run, None) is None:
                log.warning(
                    "job %d %s: handler returned after its run was ended; its outcome is discarded",
                    job.id,
                    job.task,
                )
                return False
            self.outcomes.append(outcome)
        self.wake.set()
        return True

    def add(self, outcomes: list[Outcome]) -> None:
        """Outcomes the dispatcher made itself, recorded with the next round."""
        with self.lock:
            self.outcomes.extend(outcomes)

    def take_outcomes(self) -> list[Outcome]:
        """The outcomes to record now."""
        with self.lock:
            outcomes, self.outcomes = self.outcomes, []
        return outcomes

    def keep(self, outcomes: list[Outcome]) -> None:
        """Put outcomes that were not recorded back in front, to be recorded next round."""
        if outcomes:
            with self.lock:
                self.outcomes[:0] = outcomes

    def free(self, ahead: int) -> int:
        """Slots to claim for: those neither running nor waiting, plus ``ahead``."""
        with self.lock:
            taken = len(self.running) + len(self.threads.waiting) + len(self.loop.waiting)
            return self.concurrency + ahead - taken

    def idle(self) -> bool:
        """True when no job is waiting, running, or waiting to be recorded."""
        with self.lock:
            waiting = self.threads.waiting or self.loop.waiting
            return not (self.running or waiting or self.outcomes)

    def held(self, now: float) -> list[Job]:
        """The jobs whose leases the worker renews: running (and not past their timeout),
        claimed but not started, and finished with an outcome not yet recorded."""
        with self.lock:
            running = [
                job
                for job in self.running.values()
                if job._claim is not None and not job._claim.timed_out(now)
            ]
            finished = [job for job, _ in self.outcomes]
            return [*running, *self.threads.waiting, *self.loop.waiting, *finished]

    def shortest_lease(self, lease: float) -> float:
        """The shortest of ``lease`` and the leases of the running jobs."""
        with self.lock:
            leases = [j._claim.lease for j in self.running.values() if j._claim is not None]
        return min([lease, *leases])

    def withdraw(self) -> tuple[list[Job], list[Job]]:
        """Take back the jobs that did not start; returns them and the running ones."""
        with self.lock:
            unstarted = [*self.threads.waiting, *self.loop.waiting]
            self.threads.waiting.clear()
            self.loop.waiting.clear()
            return unstarted, list(self.running.values())

    def put_back(self, jobs: list[Job]) -> None:
        """Return withdrawn jobs to the front of their runners' waiting lines."""
        on_loop = [job for job in jobs if self.loop.handles(job.task)]
        in_threads = [job for job in jobs if not self.loop.handles(job.task)]
        with self.lock:
            self.threads.waiting.extendleft(reversed(in_threads))
            self.loop.waiting.extendleft(reversed(on_loop))

    def overdue(self, now: float, grace: float) -> tuple[list[Job], float | None]:
        """Cancel the async runs past their timeout, and take out the thread runs still
        running ``grace`` past theirs (a thread cannot be stopped); returns those, and when
        the next such end is due."""
        if not self.timeouts:
            return [], None
        overdue: list[Job] = []
        soonest: float | None = None
        with self.lock:
            for run, job in list(self.running.items()):
                claim = job._claim
                if claim is None or claim.timeout is None or claim.started is None:
                    continue
                on_loop = isinstance(job, AsyncJob)
                ends = claim.started + claim.timeout + (0.0 if on_loop else grace)
                if now < ends:
                    soonest = ends if soonest is None else min(soonest, ends)
                elif on_loop:
                    self.loop.cancel([run])
                else:
                    del self.running[run]
                    overdue.append(job)
        return overdue, soonest

    def abandon(self, jobs: list[Job]) -> None:
        """Stop counting these runs, and cancel those on the loop."""
        with self.lock:
            for job in jobs:
                self.running.pop((job.id, job.attempts), None)
        self.loop.cancel([(job.id, job.attempts) for job in jobs if isinstance(job, AsyncJob)])


class Runner:
    """What both runners share: the slots, a line of jobs waiting to start, and how a
    handler's end becomes an outcome."""

    def __init__(self, lifecycle: JobLifecycle, slots: Slots) -> None:
        self.lifecycle = lifecycle
        self.slots = slots
        self.waiting: deque[Job] = deque()  # claimed, not started; under the slots' lock

    def _failed(self, job: Job, exc: BaseException) -> Outcome:
        """The outcome of a handler that raised: retried unless PermanentFailure; put off,
        the attempt not counted, for Snooze."""
        if isinstance(exc, Snooze):
            return job, self.lifecycle.snooze_step(job, exc.seconds)
        trace = "".join(traceback.format_exception(exc))
        again = not isinstance(exc, PermanentFailure)
        return job, self.lifecycle.fail_step(job, exc, trace, again, None)

    def _completed(self, job: Job, result: Any) -> Outcome:
        """The outcome of a handler that returned (failed at once if its result is not JSON)."""
        try:
            return job, self.lifecycle.complete_step(job, result)
        except PayloadError as exc:
            return job, self.lifecycle.fail_step(job, exc, None, False, None)


class ThreadRunner(Runner):
    """Runs plain handlers, one at a time in each of ``concurrency`` threads."""

    def __init__(self, lifecycle: JobLifecycle, slots: Slots, stopping: threading.Event) -> None:
        super().__init__(lifecycle, slots)
        self._stopping = stopping  # once set, idle threads return
        self._ready = threading.Condition(slots.lock)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one thread per slot."""
        self._threads = []
        for _ in range(self.slots.concurrency):
            self.add_thread()

    def add_thread(self) -> None:
        """Start one more thread (in place of one left behind by a stuck handler)."""
        thread = threading.Thread(
            target=self._serve, name=f"sqlitejobq-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs for the threads, waking one per job."""
        with self._ready:
            self.waiting.extend(jobs)
            self._ready.notify(len(jobs))

    def wake_idle(self) -> None:
        """Wake the idle threads, so that they see the worker stopping."""
        with self._ready:
            self._ready.notify_all()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for each thread; a handler still running is left behind."""
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self.waiting and not self._stopping.is_set():
                    self._ready.wait()
                if self._stopping.is_set():
                    return  # claimed jobs not yet started go back to the queue
                job = self.waiting.popleft()
                run = self.slots.start(job)
            started = time.perf_counter()
            outcome = self._execute(job)
            if not self.slots.hand_over(run, outcome, time.perf_counter() - started):
                return  # another thread took this one's place

    def _execute(self, job: Job) -> Outcome:
        task = self.lifecycle.registry.get(job.task)
        try:
            result = task.handler(job)
        except BaseException as exc:  # a handler's failure is the job's, never the worker's
            return self._failed(job, exc)
        return self._completed(job, result)


class AsyncRunner(Runner):
    """Runs ``async def`` handlers on one event loop, in a thread started on first use: a
    run takes a slot but no thread, and a timeout or cancel reaches it as CancelledError."""

    def __init__(self, lifecycle: JobLifecycle, slots: Slots) -> None:
        super().__init__(lifecycle, slots)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[Run, asyncio.Task[None]] = {}  # touched on the loop only
        self._async: dict[str, bool] = {}  # task name: its handler is async

    @property
    def busy(self) -> bool:
        """True while any handler runs on the loop."""
        return bool(self._tasks)

    def handles(self, task: str) -> bool:
        """True if the handler of ``task`` is an ``async def``."""
        known = self._async.get(task)
        if known is None:
            handler = self.lifecycle.registry.get(task).handler
            known = self._async[task] = inspect.iscoroutinefunction(handler)
        return known

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs for the loop, starting those that a free slot allows."""
        with self.slots.lock:
            self.waiting.extend(jobs)
        self._pump()

    def cancel(self, runs: list[Run]) -> None:
        """Deliver CancelledError to these runs (from any thread)."""
        loop = self._loop
        if loop is None or not runs:
            return

        def cancel() -> None:
            for run in runs:
                task = self._tasks.get(run)
                if task is not None:
                    task.cancel()

        loop.call_soon_threadsafe(cancel)

    def cancel_asked(self, jobs: list[Job]) -> None:
        """Cancel the runs among ``jobs`` whose cancel was asked for."""
        if self._tasks:
            self.cancel(
                [
                    (job.id, job.attempts)
                    for job in jobs
                    if isinstance(job, AsyncJob) and job._claim is not None and job._claim.cancelled
                ]
            )

    def close(self) -> None:
        """Cancel what still runs, stop the loop and its thread."""
        loop, thread = self._loop, self._thread
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
        self._loop = self._thread = None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="sqlitejobq-loop", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def _pump(self) -> None:
        """Start waiting jobs on the loop while slots are free."""
        started: list[tuple[Run, AsyncJob]] = []
        with self.slots.lock:
            while self.waiting and len(self.slots.running) < self.slots.concurrency:
                handle = as_async(self.waiting.popleft())
                started.append((self.slots.start(handle), handle))
        if not started:
            return
        loop = self._event_loop()

        def spawn() -> None:
            for run, handle in started:
                self._tasks[run] = loop.create_task(self._run(handle, run))

        loop.call_soon_threadsafe(spawn)

    async def _run(self, job: AsyncJob, run: Run) -> None:
        started = time.perf_counter()
        try:
            outcome = await self._execute(job)
        finally:
            self._tasks.pop(run, None)
        self.slots.hand_over(run, outcome, time.perf_counter() - started)
        self._pump()

    async def _execute(self, job: AsyncJob) -> Outcome:
        lifecycle = self.lifecycle
        task = lifecycle.registry.get(job.task)
        claim = job._claim
        try:
            result = await task.handler(job)
        except asyncio.CancelledError as exc:
            if claim is not None and claim.timed_out():
                timeout = JobTimeout(f"timed out after {claim.timeout:g}s (cancelled)")
                return job, lifecycle.fail_step(job, timeout, None, True, None)
            reason = "cancelled" if claim is not None and claim.cancelled else "interrupted"
            trace = "".join(traceback.format_exception(exc))
            return job, lifecycle.fail_step(job, f"CancelledError: {reason}", trace, False, None)
        except Exception as exc:  # a handler's failure is the job's, never the worker's
            return self._failed(job, exc)
        return self._completed(job, result)
