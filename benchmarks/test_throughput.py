"""Enqueue, the claim + complete cycle, and draining no-op jobs, at NORMAL and FULL."""

from __future__ import annotations

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
