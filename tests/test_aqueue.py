"""AsyncQueue on every engine: Queue's operations as coroutines that never block the event
loop, concurrent enqueues grouped into shared transactions, waits woken through the loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import (
    AsyncQueue,
    JobNotFound,
    JobStatus,
    PayloadError,
    Queue,
    QueueClosed,
    WaitTimeout,
)

from .conftest import only_on

ROOT = Path(__file__).resolve().parents[1]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_operations_as_coroutines(target: str) -> None:
    async def main() -> None:
        async with AsyncQueue(target) as queue:
            job_id = await queue.enqueue("t", {"n": 1}, priority=3, queue="q1")
            job = await queue.get(job_id)
            assert (job.payload, job.priority, job.queue) == ({"n": 1}, 3, "q1")
            ids = await queue.enqueue_many("t", [1, 2])
            batch = await queue.enqueue_batch("t", [3, 4], name="b")
            assert (await queue.batch_progress(batch.id)).total == 2
            assert [j.id for j in await queue.batch_jobs(batch.id)] == batch.job_ids
            assert (await queue.stats()).by_status["queued"] == 5
            assert await queue.cancel(ids[0])
            assert (await queue.get(ids[0])).status is JobStatus.CANCELLED
            assert await queue.retry(ids[0])
            assert len(await queue.jobs(status="queued", limit=10)) == 5
            with pytest.raises(JobNotFound):
                await queue.get(9999)
            with pytest.raises(PayloadError):
                await queue.enqueue("t", {1, 2})  # not JSON: refused before any write

    run(main())


def test_a_thousand_concurrent_enqueues_share_a_few_transactions(target: str) -> None:
    async def main() -> tuple[list[int], int]:
        async with AsyncQueue(target) as queue:
            writes = queue.queue.backend.metrics.writes
            ids = await asyncio.gather(*(queue.enqueue("t", n) for n in range(1000)))
            return list(ids), queue.queue.backend.metrics.writes - writes

    ids, writes = run(main())
    assert len(set(ids)) == 1000
    assert writes < 200  # grouped: without it, one transaction per job
    with Queue(target) as queue:
        stored = {job.id: job.payload for job in queue.jobs(limit=2000)}
    assert [stored[i] for i in ids] == list(range(1000))  # each id is its own job's


def test_one_bad_enqueue_fails_alone_in_its_group(target: str) -> None:
    async def main() -> list[Any]:
        async with AsyncQueue(target) as queue:
            real = await queue.enqueue("t", 0)
            calls = [queue.enqueue("t", n, depends_on=[real]) for n in range(5)]
            calls.insert(2, queue.enqueue("t", 99, depends_on=[123456]))
            return list(await asyncio.gather(*calls, return_exceptions=True))

    results = run(main())
    assert isinstance(results[2], JobNotFound)
    assert all(isinstance(r, int) for n, r in enumerate(results) if n != 2)


def test_wait_is_woken_through_the_loop(target: str) -> None:
    async def main() -> None:
        async with AsyncQueue(target) as queue:
            job_id = await queue.enqueue("t", 1)

            async def finish() -> None:
                await asyncio.sleep(0.2)
                with Queue(target) as other:
                    [job] = other.claim("w", limit=1)
                    other.complete(job, "ok")

            finisher = asyncio.create_task(finish())
            job = await queue.wait(job_id, timeout=30)
            await finisher
            assert job.result == "ok"
            with pytest.raises(WaitTimeout):
                await queue.wait(await queue.enqueue("t", 2), timeout=0.1)
            batch = await queue.enqueue_batch("t", [1])
            with pytest.raises(WaitTimeout, match=f"batch {batch.id}"):
                await queue.wait_batch(batch.id, timeout=0.1)

    run(main())


def test_a_closed_queue_refuses(target: str) -> None:
    async def main() -> None:
        queue = AsyncQueue(target)
        await queue.close()
        await queue.close()  # twice is fine
        with pytest.raises(QueueClosed):
            await queue.enqueue("t", 1)
        with pytest.raises(QueueClosed):
            await queue.get(1)

    run(main())


@only_on("sqlite", "the write lock held by another process is SQLite's")
def test_the_loop_keeps_ticking_while_another_process_holds_the_write_lock(
    target: str,
) -> None:
    """Another process holds the write lock for 2 s; the enqueue waits for it (on a thread)
    while a ticker coroutine keeps ticking every 10 ms."""
    Queue(target).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({target!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE')\n"
         "print('locked', flush=True)\n"
         "time.sleep(2.0)\n"
         "c.execute('COMMIT')\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

    async def main() -> tuple[float, list[float]]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        async with AsyncQueue(target, retry_timeout=30) as queue:
            started = time.monotonic()
            await queue.enqueue("t", 1)
            waited = time.monotonic() - started
        stop.set()
        await ticking
        return waited, gaps

    waited, gaps = run(main())
    holder.wait(30)
    assert waited >= 1.0  # the enqueue did wait for the lock
    assert len(gaps) >= 100 and max(gaps) < 0.25  # and the loop ran all along


@only_on("postgres", "an async connection of the caller is psycopg's")
def test_enqueue_inside_the_callers_async_transaction(target: str) -> None:
    import psycopg

    from sqlitejobq.backends.postgres.connection import split_schema

    url, schema = split_schema(target)

    async def main() -> tuple[int, int]:
        async with AsyncQueue(target) as queue:
            conn = await psycopg.AsyncConnection.connect(url)
            try:
                async with conn.transaction():
                    kept = await queue.enqueue("t", {"n": 1}, connection=conn)
                    assert (await queue.stats()).by_status["queued"] == 0  # not committed yet
                try:
                    async with conn.transaction():
                        await queue.enqueue("t", {"n": 2}, connection=conn)
                        raise RuntimeError("the caller's work failed")
                except RuntimeError:
                    pass
                for option in ({"unique_key": "k"}, {"expires": 60}):
                    with pytest.raises(TypeError, match="unique_key, depends_on and expires"):
                        async with conn.transaction():
                            await queue.enqueue("t", {}, connection=conn, **option)
            finally:
                await conn.close()
            return kept, (await queue.stats()).by_status["queued"]

    kept, queued = run(main())
    assert queued == 1  # the job of the committed transaction only
    with Queue(target) as queue:
        assert queue.get(kept).payload == {"n": 1}
    assert schema


def test_task_handles_have_async_variants_that_leave_the_loop_free(target: str) -> None:
    from sqlitejobq import Registry

    registry = Registry()

    @registry.task("square")
    def square(job: Any) -> int:
        return int(job.payload) ** 2

    async def main() -> None:
        with Queue(target, registry=registry) as queue:
            job_id = await square.aenqueue(3, priority=2)
            ids = await square.aenqueue_many([1, 2])
            batch = await square.aenqueue_batch([4, 5])
            assert (queue.get(job_id).payload, queue.get(job_id).priority) == (3, 2)
            assert len(ids) == 2 and len(batch.job_ids) == 2

    run(main())
