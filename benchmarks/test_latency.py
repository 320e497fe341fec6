"""Enqueue-to-start latency with idle workers: in the same process, and across processes.

Latency is read from the job itself: ``started_at`` (stamped by the claim) minus
``created_at`` (stamped by the enqueue), both wall-clock times of this machine.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import percentile, record, size, start_workers, wait_for
from sqlitejobq import JobStatus, Queue, Worker

SAMPLES = size(300, 40)


def measure(queue: Queue, samples: int) -> list[float]:
    """Enqueue one job at a time, each once the last has run, after an idle pause."""
    rng = random.Random(7)
    latencies = []
    for n in range(samples):
        time.sleep(rng.uniform(0.01, 0.04))  # the workers go idle between jobs
        job_id = queue.enqueue("noop", {"n": n})
        wait_for(lambda j=job_id: queue.get(j).status is JobStatus.COMPLETED, 30, "a job")
        job = queue.get(job_id)
        assert job.started_at is not None
        latencies.append(job.started_at - job.created_at)
    return latencies


def test_enqueue_to_start_in_the_same_process(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    queue = Queue(tmp_path / "latency.db")
    queue.registry.register("noop", lambda job: None)
    worker = Worker(queue, concurrency=4)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: bool(queue.workers(alive_only=True)), 30, "the worker")
        latencies = benchmark.pedantic(measure, args=(queue, SAMPLES), rounds=1, iterations=1)
    finally:
        worker.stop()
        thread.join(30)
        queue.close()
    record(benchmark, request, p50_ms=percentile(latencies, 50) * 1000,
           p99_ms=percentile(latencies, 99) * 1000, samples=len(latencies))  # fmt: skip


def test_enqueue_to_start_across_processes(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db = tmp_path / "latency.db"
    queue = Queue(db)
    workers = start_workers(db, 2, 4)
    try:
        wait_for(lambda: len(queue.workers(alive_only=True)) == 2, 60, "the workers")
        latencies = benchmark.pedantic(measure, args=(queue, SAMPLES), rounds=1, iterations=1)
    finally:
        workers.terminate()
        output, _ = workers.communicate(timeout=60)
        queue.close()
    assert "database is locked" not in output
    record(benchmark, request, p50_ms=percentile(latencies, 50) * 1000,
           p99_ms=percentile(latencies, 99) * 1000, samples=len(latencies))  # fmt: skip
