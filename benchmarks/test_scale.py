"""Costs that must not grow with the table: claim (beside a paused backlog too), stats()
and batch_progress()."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import QUICK, median, record, size, timed
from sqlitejobq import Queue

SIZES = (1_000, 10_000, 100_000) if QUICK else (1_000, 100_000, 1_000_000)
_built: dict[int, Path] = {}


def filled(tmp_path_factory: pytest.TempPathFactory, jobs: int) -> Path:
    """A database with ``jobs`` queued jobs (built once per size): a third in a batch."""
    if jobs not in _built:
        db = tmp_path_factory.mktemp(f"scale{jobs}") / "scale.db"
        with Queue(db) as queue:
            chunk = 50_000
            for start in range(0, jobs, chunk):
                count = min(chunk, jobs - start)
                payloads = [{"n": start + n} for n in range(count)]
                if start == 0:
                    queue.enqueue_batch("noop", payloads[: max(1, count // 3)], name="third")
                    queue.enqueue_many("noop", payloads[max(1, count // 3) :])
                else:
                    queue.enqueue_many("noop", payloads)
            queue.checkpoint()
        _built[jobs] = db
    return _built[jobs]


@pytest.mark.parametrize("jobs", SIZES)
def test_claim_cost_stays_flat(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    jobs: int,
) -> None:  # fmt: skip
    queue = Queue(filled(tmp_path_factory, jobs))

    def claim_and_release() -> None:
        [job] = queue.claim("bench", limit=1)
        assert queue.release([job]) == 1

    seconds = timed(benchmark, claim_and_release, rounds=size(300, 20), warmup_rounds=5)
    record(benchmark, request, jobs_in_table=jobs, claim_and_release_ms=median(seconds) * 1000)
    queue.close()


def paused_backlog(tmp_path_factory: pytest.TempPathFactory, jobs: int) -> Path:
    """A database whose ``jobs`` queued jobs wait in a paused queue, and one job elsewhere."""
    db = tmp_path_factory.mktemp(f"paused{jobs}") / "paused.db"
    with Queue(db) as queue:
        queue.pause("held")
        for start in range(0, jobs, 50_000):
            count = min(50_000, jobs - start)
            queue.enqueue_many("noop", [{"n": start + n} for n in range(count)], queue="held")
        queue.enqueue("noop", {}, queue="open")
        queue.checkpoint()
    return db


@pytest.mark.parametrize("jobs", SIZES)
def test_claim_cost_stays_flat_beside_a_paused_backlog(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    jobs: int,
) -> None:  # fmt: skip
    queue = Queue(paused_backlog(tmp_path_factory, jobs))

    def claim_and_release() -> None:
        [job] = queue.claim("bench", limit=1)  # from every queue: the paused one is left out
        assert job.queue == "open"
        assert queue.release([job]) == 1

    seconds = timed(benchmark, claim_and_release, rounds=size(300, 20), warmup_rounds=5)
    record(benchmark, request, paused_jobs_in_table=jobs,
           claim_and_release_ms=median(seconds) * 1000)  # fmt: skip
    queue.close()


@pytest.mark.parametrize("jobs", SIZES[-1:])
def test_stats_and_batch_progress_at_scale(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    jobs: int,
) -> None:  # fmt: skip
    queue = Queue(filled(tmp_path_factory, jobs))
    batch_id = queue.latest_batch_id()
    assert batch_id is not None
    progress = queue.batch_progress(batch_id)
    assert progress.total == max(1, min(50_000, jobs) // 3)
    assert queue.stats().total() == jobs
    timings = []
    for _ in range(size(50, 5)):
        started = time.perf_counter()
        queue.batch_progress(batch_id)
        timings.append(time.perf_counter() - started)
    seconds = timed(benchmark, queue.stats, rounds=size(50, 5))
    record(benchmark, request, jobs_in_table=jobs, stats_ms=median(seconds) * 1000,
           batch_progress_ms=median(timings) * 1000)  # fmt: skip
    queue.close()
