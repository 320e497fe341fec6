"""Enqueue, the claim + complete cycle, and draining no-op jobs, at NORMAL and FULL."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import SYNCHRONOUS, median, record, size, start_workers, timed, wait_for
from sqlitejobq import Queue, Worker

ENQUEUE_SINGLE = size(2000, 200)
ENQUEUE_MANY = size(10_000, 1000)
DRAIN = size(10_000, 1000)
ROUNDS = size(3, 1)


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_enqueue_one_call_each(
    benchmark: Any, request: pytest.FixtureRequest, fresh_queue: Callable[..., Queue],
    synchronous: str,
) -> None:  # fmt: skip
    def setup() -> tuple[tuple[Queue], dict[str, Any]]:
        return (fresh_queue(synchronous),), {}

    def run(queue: Queue) -> None:
        for n in range(ENQUEUE_SINGLE):
            queue.enqueue("noop", {"n": n})
        assert queue.stats().by_status["queued"] == ENQUEUE_SINGLE

    seconds = timed(benchmark, run, setup=setup, rounds=ROUNDS)
    record(benchmark, request, jobs_per_s=ENQUEUE_SINGLE / median(seconds))


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_enqueue_many_in_one_transaction(
    benchmark: Any, request: pytest.FixtureRequest, fresh_queue: Callable[..., Queue],
    synchronous: str,
) -> None:  # fmt: skip
    payloads = [{"n": n} for n in range(ENQUEUE_MANY)]

    def setup() -> tuple[tuple[Queue], dict[str, Any]]:
        return (fresh_queue(synchronous),), {}

    def run(queue: Queue) -> None:
        assert len(queue.enqueue_many("noop", payloads)) == ENQUEUE_MANY

    seconds = timed(benchmark, run, setup=setup, rounds=ROUNDS)
    record(benchmark, request, jobs_per_s=ENQUEUE_MANY / median(seconds))


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_claim_and_complete_one_job_per_transaction(
    benchmark: Any, request: pytest.FixtureRequest, fresh_queue: Callable[..., Queue],
    synchronous: str,
) -> None:  # fmt: skip
    """The low-level cycle a naive worker pays per job: two transactions."""
    queue = fresh_queue(synchronous)
    cycles = size(2000, 100)
    queue.enqueue_many("noop", [{"n": n} for n in range(cycles * (ROUNDS + 1))])

    def run() -> None:
        for _ in range(cycles):
            [job] = queue.claim("bench", limit=1)
            assert queue.complete(job, None)

    seconds = timed(benchmark, run, rounds=ROUNDS)
    record(benchmark, request, cycles_per_s=cycles / median(seconds))


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
@pytest.mark.parametrize("threads", [1, 4])
def test_drain_no_op_jobs_in_one_process(
    benchmark: Any, request: pytest.FixtureRequest, fresh_queue: Callable[..., Queue],
    synchronous: str, threads: int,
) -> None:  # fmt: skip
    def setup() -> tuple[tuple[Queue], dict[str, Any]]:
        queue = fresh_queue(synchronous)
        queue.registry.register("noop", lambda job: None)
        queue.enqueue_many("noop", [{"n": n} for n in range(DRAIN)])
        return (queue,), {}

    def run(queue: Queue) -> None:
        summary = Worker(queue, concurrency=threads).run(burst=True, handle_signals=False)
        assert summary.completed == DRAIN
        assert queue.stats().by_status["completed"] == DRAIN

    seconds = timed(benchmark, run, setup=setup, rounds=ROUNDS)
    record(benchmark, request, jobs_per_s=DRAIN / median(seconds))


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_drain_no_op_jobs_with_four_processes(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path, synchronous: str
) -> None:  # fmt: skip
    """4 worker processes x 4 threads, started idle; the clock runs from the enqueue of the
    whole backlog to its last completion, so process start-up is not counted."""
    rounds: list[float] = []

    def run() -> None:
        db = tmp_path / f"drain-{len(rounds)}.db"
        queue = Queue(db, synchronous=synchronous)
        workers = start_workers(db, 4, 4)
        try:
            wait_for(lambda: len(queue.workers(alive_only=True)) == 4, 60, "4 workers")
            started = time.perf_counter()
            queue.enqueue_many("noop", [{"n": n} for n in range(DRAIN)])
            wait_for(lambda: queue.stats().by_status["completed"] == DRAIN, 300, "the drain")
            rounds.append(time.perf_counter() - started)
        finally:
            workers.terminate()
            output, _ = workers.communicate(timeout=60)
            queue.close()
        assert "database is locked" not in output

    timed(benchmark, run, rounds=ROUNDS)
    record(benchmark, request, jobs_per_s=DRAIN / median(rounds))


def _cycle_process(path: str, ready: Any, go: Any, out: Any) -> None:
    """One process of the low-level cycle: claim one, complete it, until the queue is empty."""
    from sqlitejobq import DatabaseBusy

    queue = Queue(path)
    ready.release()
    go.wait(60)
    cycles = busy = 0
    while True:
        try:
            jobs = queue.claim(f"cycle-{os.getpid()}", limit=1)
            if not jobs:
                break
            assert queue.complete(jobs[0], None)
            cycles += 1
        except DatabaseBusy:
            busy += 1
    out.put((cycles, busy, queue.stats().lock.lock_retries, time.perf_counter()))
    queue.close()


@pytest.mark.parametrize("synchronous", SYNCHRONOUS)
def test_claim_and_complete_from_four_processes(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path, synchronous: str
) -> None:  # fmt: skip
    """Four processes each running the one-job-per-transaction cycle on one file; the clock
    starts once all four are up."""
    jobs = size(4000, 1000)
    results: list[tuple[int, int, int, float]] = []
    spans: list[float] = []

    def run() -> None:
        db = tmp_path / f"cycle-{len(spans)}.db"
        with Queue(db, synchronous=synchronous) as queue:
            queue.enqueue_many("noop", [{"n": n} for n in range(jobs)])
        ctx = multiprocessing.get_context("spawn")
        ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_cycle_process, args=(str(db), ready, go, out))
                 for _ in range(4)]  # fmt: skip
        for proc in procs:
            proc.start()
        for _ in procs:
            assert ready.acquire(timeout=60)
        started = time.perf_counter()
        go.set()
        done = [out.get(timeout=300) for _ in procs]
        spans.append(max(d[3] for d in done) - started)
        results.extend(done)
        for proc in procs:
            proc.join(60)

    timed(benchmark, run, rounds=ROUNDS)
    assert sum(r[0] for r in results) == jobs * len(spans)
    assert sum(r[1] for r in results) == 0  # no caller saw DatabaseBusy
    record(benchmark, request, cycles_per_s=jobs / median(spans),
           lock_retries=sum(r[2] for r in results))  # fmt: skip
