"""sqlitejobq on PostgreSQL beside procrastinate and pgqueuer, and beside itself on a SQLite
file: the workloads of ``benchmarks.peers_pg`` (enqueue one by one and batched, drain with 1
and 4 worker processes, enqueue-to-start latency) under pytest-benchmark.

Each measurement runs on a database of its own on the server named by
``$SQLITEJOBQ_PG_DSN`` (``.ci/run`` starts one; without it these skip, except under
``CI=true``, where they fail). Every drain checks that every job ran exactly once, in the
handlers' records and in the system's own tables; a peer that is not installed is skipped.
``python -m benchmarks.peers_pg`` runs the same code with repeats and writes the table of
docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.conftest import postgres_dsn, record, size, timed
from benchmarks.peers_pg import MEASUREMENTS, PEERS, run_workload

JOBS = size(10_000, 200)
SAMPLES = size(200, 20)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def dsn() -> str:
    return postgres_dsn()


@pytest.mark.parametrize("measurement", MEASUREMENTS, ids=[m[0] for m in MEASUREMENTS])
@pytest.mark.parametrize("peer", list(PEERS))
def test_postgres_workload(
    benchmark: Any,
    request: pytest.FixtureRequest,
    dsn: str,
    peer: str,
    measurement: tuple[str, str, int],
) -> None:
    reason = PEERS[peer].unavailable()
    if reason is not None:
        pytest.skip(f"{peer}: {reason}")
    _, workload, processes = measurement
    figures: dict[str, Any] = {}

    def run() -> None:
        # a lost, repeated or failed job, a crashed worker or a timeout raises here
        figures.update(run_workload(peer, workload, dsn, JOBS, processes, samples=SAMPLES))

    timed(benchmark, run, rounds=1)
    record(benchmark, request, **figures)
    if workload == "latency":
        assert figures["samples"] == SAMPLES
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    else:
        assert figures["jobs"] == JOBS
        assert figures["jobs_per_s"] > 0
