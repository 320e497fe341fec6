"""sqlitejobq's Django backend beside django-tasks-db (``python -m benchmarks.django_vs_db``)
at a small size: sqlitejobq must run every task exactly once with 1 and with 4 worker
processes, meet no "database is locked" and run a SIGKILLed worker's task again to success.
django-tasks-db's run must complete; what it does is recorded, not asserted (its failures
are its own)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

pytest.importorskip("django_tasks_db")

from benchmarks.conftest import size
from benchmarks.django_vs_db import QUICK, Results, preamble, run, table

pytestmark = pytest.mark.timeout(300)

SIZES = dataclasses.replace(QUICK, tasks=size(600, QUICK.tasks))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Results]:
    started = time.perf_counter()
    measured = run(SIZES, Path(tmp_path_factory.mktemp("django-vs-db")))
    seconds = time.perf_counter() - started
    print("\n".join(["", *preamble(SIZES, False, seconds), "", *table(measured)]))
    return measured


def test_sqlitejobq_runs_every_task_exactly_once_with_1_and_4_processes(
    results: dict[str, Results],
) -> None:
    ours = results["sqlitejobq"]
    assert set(ours.drains) == {"1", "4", "4 supervised"}
    for drained in ours.drains.values():
        assert drained.tasks == SIZES.tasks
        assert drained.problems == [], drained.what
    assert ours.under_load_done is not None
    assert ours.under_load_done.tasks == SIZES.tasks
    assert ours.under_load_done.problems == []


def test_sqlitejobq_meets_no_locked_database_in_enqueue_loops_or_worker_logs(
    results: dict[str, Results],
) -> None:
    ours = results["sqlitejobq"]
    for enqueued in (ours.enqueue_autocommit, ours.enqueue_atomic, ours.under_load):
        assert enqueued is not None
        assert enqueued.tasks == SIZES.tasks
        assert enqueued.errors == {}
    assert ours.locks.enqueue == 0
    assert ours.locks.logged == 0


def test_sqlitejobq_runs_the_task_of_a_sigkilled_worker_again_to_success(
    results: dict[str, Results],
) -> None:
    killed = results["sqlitejobq"].killed
    assert killed is not None
    assert killed.status == "SUCCESSFUL"
    assert killed.worker_ids == 2
    assert (killed.starts, killed.finishes) == (2, 1)


def test_django_tasks_db_run_completes_and_is_recorded(results: dict[str, Results]) -> None:
    peer = results["django-tasks-db"]
    assert peer.enqueue_autocommit is not None
    assert peer.enqueue_atomic is not None
    assert set(peer.drains) == {"1", "4"}
    assert peer.killed is not None
    print(
        f"\ndjango-tasks-db: SIGKILLed task {peer.killed.status}, "
        f"{peer.killed.worker_ids} worker id(s); locked {peer.locks}; "
        f"problems {peer.problems() or 'none'}"
    )
