"""What limits cost the claim, at 100,000 queued jobs (10,000 at quick sizes), on a SQLite
file and on PostgreSQL (``$SQLITEJOBQ_PG_DSN``; skipped without it, except under CI):

- ``off``: no limit declared; the plain claim, as before limits existed;
- ``held``: a worker that declares a limit claims a plain job while every limited job
  (all the others) is held back by its limit: the limited jobs must cost it nothing;
- ``limited``: every job is of a limited task with room to run (limit 1,000), one key;
- ``per_key_100``: the same jobs spread over 100 keys of ``limit_key`` (limit 5 each).

Each round claims one job and releases it (the release is part of the figure, as in
``test_scale.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import engine_target, median, record, size, timed
from sqlitejobq import Queue, Registry

JOBS = size(100_000, 10_000)
SCENARIOS = ("off", "held", "limited", "per_key_100")

pytestmark = pytest.mark.timeout(900)


def _registry(scenario: str) -> Registry:
    registry = Registry()
    registry.task("plain")(lambda job: None)
    if scenario == "held":
        registry.task("quote", limit=1)(lambda job: None)
    elif scenario == "limited":
        registry.task("quote", limit=1000)(lambda job: None)
    elif scenario == "per_key_100":
        registry.task("quote", limit=5, limit_key="key")(lambda job: None)
    else:
        registry.task("quote")(lambda job: None)
    return registry


def _fill(queue: Queue, scenario: str) -> None:
    chunk = 20_000
    for start in range(0, JOBS, chunk):
        payloads = [{"key": f"k{n % 100}", "n": n} for n in range(start, min(JOBS, start + chunk))]
        queue.enqueue_many("quote", payloads)
    if scenario == "held":
        queue.claim("holder", limit=1)  # the one slot taken: every other quote is held
        queue.enqueue_many("plain", [{"n": n} for n in range(100)])


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with engine_target(request.param, tmp_path, "limits") as found:
        yield found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_claim_cost_with_limits(
    benchmark: Any, request: pytest.FixtureRequest, target: str, scenario: str
) -> None:
    queue = Queue(target, registry=_registry(scenario))
    try:
        _fill(queue, scenario)
        want = "plain" if scenario == "held" else "quote"

        def claim_and_release() -> None:
            [job] = queue.claim("bench", limit=1)
            assert job.task == want
            assert queue.release([job]) == 1

        seconds = timed(benchmark, claim_and_release, rounds=size(300, 20), warmup_rounds=5)
        record(benchmark, request, jobs_in_table=JOBS, claim_and_release_ms=median(seconds) * 1000)
    finally:
        queue.close()
