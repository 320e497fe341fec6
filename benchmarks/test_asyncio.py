"""asyncio figures on a SQLite file: AsyncQueue's enqueue rate beside Queue's, and the drain
rate of async def handlers beside sync ones.

- ``enqueue_concurrent``: N coroutines each ``await queue.enqueue(...)`` at once (grouped
  into shared transactions by the writer thread);
- ``enqueue_sequential``: one coroutine awaiting N enqueues one after another (a
  transaction each, the latency of a thread hop added);
- ``queue_enqueue``: ``Queue.enqueue`` in a loop, for comparison;
- ``drain_async`` / ``drain_sync``: one worker, concurrency 16, N no-op handlers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import record, size, timed
from sqlitejobq import AsyncQueue, Job, Queue, Registry, Worker

JOBS = size(10_000, 500)


@pytest.mark.parametrize("mode", ["enqueue_concurrent", "enqueue_sequential", "queue_enqueue"])
def test_enqueue_rates(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path, mode: str
) -> None:
    rates: list[float] = []

    def run() -> None:
        path = tmp_path / f"{mode}-{len(rates)}.db"
        if mode == "queue_enqueue":
            with Queue(path) as queue:
                started = time.perf_counter()
                for n in range(JOBS):
                    queue.enqueue("noop", n)
                rates.append(JOBS / (time.perf_counter() - started))
            return

        async def main() -> None:
            async with AsyncQueue(path) as queue:
                started = time.perf_counter()
                if mode == "enqueue_concurrent":
                    await asyncio.gather(*(queue.enqueue("noop", n) for n in range(JOBS)))
                else:
                    for n in range(JOBS):
                        await queue.enqueue("noop", n)
                rates.append(JOBS / (time.perf_counter() - started))

        asyncio.run(main())

    timed(benchmark, run, rounds=size(3, 1))
    with Queue(tmp_path / f"{mode}-0.db") as queue:
        assert queue.stats().by_status["queued"] == JOBS
    record(benchmark, request, jobs_per_s=max(rates))


@pytest.mark.parametrize("kind", ["drain_async", "drain_sync"])
def test_drain_rates(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    registry = Registry()
    if kind == "drain_async":

        @registry.task("noop")
        async def noop_async(job: Job) -> None:
            return None

    else:

        @registry.task("noop")
        def noop(job: Job) -> None:
            return None

    rates: list[float] = []

    def run() -> None:
        with Queue(tmp_path / f"{kind}-{len(rates)}.db", registry=registry) as queue:
            queue.enqueue_many("noop", list(range(JOBS)))
            started = time.perf_counter()
            summary = Worker(queue, concurrency=16).run(burst=True)
            rates.append(JOBS / (time.perf_counter() - started))
            assert summary.completed == JOBS

    timed(benchmark, run, rounds=size(3, 1))
    record(benchmark, request, jobs_per_s=max(rates))
