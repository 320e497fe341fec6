"""sqlitejobq on PostgreSQL directly and through PgBouncer (session and transaction
pooling): what a pooler costs per enqueue, per batched enqueue and per drained job.

Each measurement runs on a schema of its own on the server named by ``$SQLITEJOBQ_PG_DSN``,
through a PgBouncer started for the module (``tests/pgbouncer.py``; Debian's package). A
drain is one process with four handler threads (``Worker(queue, concurrency=4)``, burst),
and every job must end completed, once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import Any

import pytest

from benchmarks.conftest import postgres_dsn, record, size, timed
from sqlitejobq import Queue, Worker
from tests.pgbouncer import PgBouncer

ENQUEUES = size(2_000, 100)
JOBS = size(10_000, 200)
ROUTES = ("direct", "session", "transaction")

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def bouncers() -> Iterator[dict[str, PgBouncer]]:
    dsn = postgres_dsn()
    started: dict[str, PgBouncer] = {}
    try:
        for mode in ("session", "transaction"):
            folder = Path(f"/tmp/sqjq-bench-pgb-{mode}-{uuid.uuid4().hex[:6]}")
            started[mode] = PgBouncer.start(dsn, mode, folder, pool_size=20)
        yield started
    finally:
        for bouncer in started.values():
            bouncer.stop()


@contextlib.contextmanager
def queue_by(route: str, bouncers: dict[str, PgBouncer]) -> Iterator[Queue]:
    dsn = postgres_dsn()
    schema = f"b_{uuid.uuid4().hex[:12]}"
    base = dsn if route == "direct" else bouncers[route].url(dsn)
    pooler = "&pooler=transaction" if route == "transaction" else ""
    queue = Queue(f"{base}?schema={schema}{pooler}", strict_tasks=False)
    try:
        yield queue
    finally:
        queue.close()
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("route", ROUTES)
def test_enqueue_one_call_each_through_pgbouncer(
    benchmark: Any, request: pytest.FixtureRequest, bouncers: dict[str, PgBouncer], route: str
) -> None:
    with queue_by(route, bouncers) as queue:

        def run() -> None:
            for i in range(ENQUEUES):
                queue.enqueue("noop", {"i": i})

        [seconds] = timed(benchmark, run, rounds=1)
        assert queue.stats().by_status["queued"] == ENQUEUES
    record(benchmark, request, jobs=ENQUEUES, jobs_per_s=round(ENQUEUES / seconds))


@pytest.mark.parametrize("route", ROUTES)
def test_enqueue_many_and_drain_through_pgbouncer(
    benchmark: Any, request: pytest.FixtureRequest, bouncers: dict[str, PgBouncer], route: str
) -> None:
    with queue_by(route, bouncers) as queue:
        queue.task("noop")(lambda job: None)
        [enqueued] = timed(
            benchmark,
            lambda: queue.enqueue_many("noop", [{"i": i} for i in range(JOBS)]),
            rounds=1,
        )
        worker = Worker(queue, concurrency=4)
        started = perf_counter()
        worker.run(burst=True)
        drained = perf_counter() - started
        jobs = queue.jobs(status="completed", limit=JOBS + 1)
        assert len(jobs) == JOBS
        assert {job.attempts for job in jobs} == {1}
    record(
        benchmark, request, jobs=JOBS, enqueue_many_jobs_per_s=round(JOBS / enqueued),
        drain_jobs_per_s=round(JOBS / drained),
    )  # fmt: skip
