"""The queue for asyncio code: the same operations as ``Queue``, as coroutines that never
block the event loop.

Every database call runs on threads of the queue's own, never on the loop: a wait for
SQLite's write lock or a PostgreSQL round trip holds a thread, not the loop. Enqueues from
many coroutines at once are grouped: one writer thread takes every enqueue waiting for it
and writes them in one transaction (a group commit), so a thousand concurrent ``enqueue``
calls cost a few transactions, not a thousand. Waits (``wait``, ``wait_batch``) are woken
by the engine's notification path through the loop, holding no thread while they sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, Unpack

from . import validation
from .backends.base import FINISHED_STATUSES, NewJob
from .errors import JobFailed, JobNotFound, QueueClosed, WaitTimeout
from .job import Batch, BatchProgress, Job, JobEvent, JobStatus, QueueStats, ThroughputPoint
from .options import BatchKwargs, EnqueueKwargs, EnqueueOptions
from .queue import Queue
from .registry import Registry

T = TypeVar("T")

#: A waiter looks this often even without a wake-up (the safety net, as for Queue.wait).
_WAIT_LOOK = 1.0


class _LoopEvent(threading.Event):
    """A threading.Event whose ``set`` also wakes a coroutine waiting on the loop: what the
    engine's waker (which sets threading events) needs to reach asyncio code."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.woken = asyncio.Event()

    def set(self) -> None:
        super().set()
        with contextlib.suppress(RuntimeError):  # the loop closed
            self._loop.call_soon_threadsafe(self.woken.set)


class AsyncQueue:
    """A job queue for asyncio code: ``Queue``'s operations as coroutines, on either engine.

    ``AsyncQueue(target, **options)`` takes what ``Queue`` takes (or ``AsyncQueue(queue=q)``
    wraps an open ``Queue``). Use ``async with AsyncQueue(...) as queue:`` or ``await
    queue.close()``. ``threads`` bounds the threads that run its reads.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | None = None,
        *,
        queue: Queue | None = None,
        threads: int = 4,
        **options: Any,
    ) -> None:
        if (target is None) == (queue is None):
            raise TypeError("AsyncQueue takes a target (as Queue does) or queue=, not both")
        self.queue: Queue = queue if queue is not None else Queue(target, **options)  # type: ignore[arg-type]
        self._owned = queue is None
        self._readers = ThreadPoolExecutor(
            validation.integer(threads, "threads", minimum=1), thread_name_prefix="sqlitejobq-aio"
        )
        self._pending: list[tuple[NewJob, asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self._pending_lock = threading.Lock()
        self._have_work = threading.Event()
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, name="sqlitejobq-aio-writer", daemon=True
        )
        self._writer.start()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The registry of the queue underneath."""
        return self.queue.registry

    async def close(self) -> None:
        """Finish the enqueues under way, then close (the queue too, if this opened it)."""
        if self._closed:
            return
        self._closed = True
        self._have_work.set()
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        self._readers.shutdown(wait=True)
        if self._owned:
            self.queue.close()

    async def __aenter__(self) -> AsyncQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncQueue({self.queue.target!r})"

    # --- enqueue: grouped into shared transactions ------------------------------------

    async def enqueue(
        self, task: str, payload: Any = None, **options: Unpack[EnqueueKwargs]
    ) -> int:
        """Add one job (options as ``Queue.enqueue``); its id. Concurrent calls share
        transactions. ``connection=`` (the caller's own transaction) runs on a thread."""
        connection = options.get("connection")
        if connection is not None and hasattr(connection, "__aenter__"):
            return await self._enqueue_in_async_transaction(
                task, payload, EnqueueOptions.of(options)
            )
        if "connection" in options:
            return await self._run(self.queue.enqueue, task, payload, **options)
        return await self._submit(self.queue.new_job(task, payload, EnqueueOptions.of(options)))

    async def _enqueue_in_async_transaction(
        self, task: str, payload: Any, options: EnqueueOptions
    ) -> int:
        """One job written on the caller's async connection, in its open transaction (the
        PostgreSQL engine: a psycopg AsyncConnection)."""
        job = self.queue.new_job(task, payload, options)
        backend = self.queue.backend
        job_id: int = await backend.insert_in_async_transaction(options.connection, job)
        return job_id

    async def enqueue_many(
        self, task: str, payloads: Iterable[Any], **options: Unpack[EnqueueKwargs]
    ) -> list[int]:
        """Add one job per payload in one transaction (options as ``Queue.enqueue_many``)."""
        payloads = list(payloads)
        return await self._run(self.queue.enqueue_many, task, payloads, **options)

    async def enqueue_batch(
        self, task: str, payloads: Iterable[Any], **options: Unpack[BatchKwargs]
    ) -> Batch:
        """Add jobs as one batch (options as ``Queue.enqueue_batch``)."""
        payloads = list(payloads)
        return await self._run(self.queue.enqueue_batch, task, payloads, **options)

    async def _submit(self, job: NewJob) -> int:
        if self._closed:
            raise QueueClosed("the AsyncQueue was closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._pending_lock:
            self._pending.append((job, loop, future))
        self._have_work.set()
        return await future

    def _write_loop(self) -> None:
        """The writer thread: every enqueue waiting, in one transaction; one at a time if
        that fails, so that each caller gets its own job's error."""
        while True:
            self._have_work.wait()
            with self._pending_lock:
                taken, self._pending = self._pending, []
                self._have_work.clear()
            if taken:
                self._write(taken)
            elif self._closed:
                return

    def _write(self, taken: list[tuple[NewJob, asyncio.AbstractEventLoop, Any]]) -> None:
        backend = self.queue.backend
        try:
            _, ids = backend.insert_jobs(
                [job for job, _, _ in taken], batch_name=None, make_batch=False
            )
        except Exception as exc:
            if len(taken) == 1:
                _, loop, future = taken[0]
                _settle(loop, future, error=exc)
                return
            for one in taken:
                self._write([one])
            return
        for (_, loop, future), job_id in zip(taken, ids, strict=True):
            _settle(loop, future, value=job_id)

    # --- everything else: on the queue's threads ------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise QueueClosed("the AsyncQueue was closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(*args, **kwargs))

    async def get(self, job_id: int) -> Job:
        """The job with this id (JobNotFound if none)."""
        return await self._run(self.queue.get, job_id)

    async def jobs(self, **filters: Any) -> list[Job]:
        """Jobs matching the filters (as ``Queue.jobs``)."""
        return await self._run(self.queue.jobs, **filters)

    async def batch_progress(self, batch_id: int) -> BatchProgress:
        """The batch's counts by status."""
        return await self._run(self.queue.batch_progress, batch_id)

    async def batch_jobs(self, batch_id: int) -> list[Job]:
        """The batch's jobs in enqueue order."""
        return await self._run(self.queue.batch_jobs, batch_id)

    async def stats(self) -> QueueStats:
        """Counts by queue and status, backlog age, lock waits (as ``Queue.stats``)."""
        return await self._run(self.queue.stats)

    async def cancel(self, job_id: int) -> bool:
        """Cancel a queued or waiting job, or ask a running one to stop."""
        return await self._run(self.queue.cancel, job_id)

    async def update(self, job_id: int, **changes: Any) -> Job:
        """Change a job that has not started (see ``Queue.update``)."""
        return await self._run(self.queue.update, job_id, **changes)

    async def retry(self, job_id: int) -> bool:
        """Queue a failed or cancelled job again with fresh attempts."""
        return await self._run(self.queue.retry, job_id)

    async def retry_failed(self, **filters: Any) -> list[int]:
        """Retry the failed jobs matching the filters (as ``Queue.retry_failed``)."""
        return await self._run(self.queue.retry_failed, **filters)

    async def timeline(self, job_id: int) -> list[JobEvent]:
        """The job's life in time order (as ``Queue.timeline``)."""
        return await self._run(self.queue.timeline, job_id)

    async def dependencies(self, job_id: int) -> tuple[list[int], list[int]]:
        """What the job still waits for, and what still waits for it."""
        return await self._run(self.queue.dependencies, job_id)

    async def batches(self, limit: int = 50, before: int | None = None) -> list[BatchProgress]:
        """Batches newest first, below ``before`` (as ``Queue.batches``)."""
        return await self._run(self.queue.batches, limit, before)

    async def throughput(self, minutes: int = 60) -> list[ThroughputPoint]:
        """Jobs completed and failed per minute (as ``Queue.throughput``)."""
        return await self._run(self.queue.throughput, minutes)

    async def max_job_id(self) -> int | None:
        """The newest job's id (None: no job yet)."""
        return await self._run(self.queue.max_job_id)

    async def pause(self, name: str) -> bool:
        """Pause a queue: no worker claims its jobs until resumed (as ``Queue.pause``)."""
        return await self._run(self.queue.pause, name)

    async def resume(self, name: str) -> bool:
        """Let workers claim from a paused queue again (as ``Queue.resume``)."""
        return await self._run(self.queue.resume, name)

    async def paused(self) -> list[str]:
        """The names of the paused queues, sorted (as ``Queue.paused``)."""
        return await self._run(self.queue.paused)

    async def purge(self, older_than: float, **options: Any) -> int:
        """Delete jobs finished more than ``older_than`` seconds ago (as ``Queue.purge``)."""
        return await self._run(self.queue.purge, older_than, **options)

    # --- waiting: woken through the loop, no thread held ------------------------------------

    async def wait(
        self, job_id: int, timeout: float | None = None, *, raise_on_failure: bool = False
    ) -> Job:
        """The job once it has finished (as ``Queue.wait``), woken by the transaction that
        ends it; the loop stays free meanwhile."""
        validation.integer(job_id, "job_id")
        seconds = None if timeout is None else validation.seconds(timeout, "timeout")
        if await self._run(self.queue.backend.watch, job_id) is None:
            raise JobNotFound(f"no job with id {job_id}")

        async def finished() -> Job | None:
            job = await self.get(job_id)
            return job if job.status.value in FINISHED_STATUSES else None

        job = await self._wait_until(finished, seconds, f"job {job_id}")
        if raise_on_failure and job.status is not JobStatus.COMPLETED:
            raise JobFailed.of(job)
        return job

    async def wait_batch(self, batch_id: int, timeout: float | None = None) -> BatchProgress:
        """The batch's counts once none of its jobs is queued, processing or waiting."""
        validation.integer(batch_id, "batch_id")
        seconds = None if timeout is None else validation.seconds(timeout, "timeout")
        await self.batch_progress(batch_id)  # JobNotFound if there is no such batch
        await self._run(self.queue.backend.watch_batch, batch_id)

        async def done() -> BatchProgress | None:
            progress = await self.batch_progress(batch_id)
            return progress if progress.done else None

        return await self._wait_until(done, seconds, f"batch {batch_id}")

    async def _wait_until(
        self, look: Callable[[], Awaitable[T | None]], timeout: float | None, what: str
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waker = self.queue.backend.waker
        event = _LoopEvent(loop)
        waker.listen(event)
        waker.sleeping(True)
        try:
            while True:
                event.woken.clear()
                found = await look()
                if found is not None:
                    return found
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"{what} did not finish within {timeout:g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        event.woken.wait(), _WAIT_LOOK if left is None else min(_WAIT_LOOK, left)
                    )
        finally:
            waker.sleeping(False)
            waker.listen(event, False)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[int],
    value: int | None = None,
    error: BaseException | None = None,
) -> None:
    """Hand a result (or an error) to the coroutine that waits for it, on its own loop."""

    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody waits
        loop.call_soon_threadsafe(settle)
