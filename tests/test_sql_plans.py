"""The hot statements read indexes, never the whole table: their cost stays flat.

Checked on SQLite's own query plans, so it holds on any machine; the timings that go with
it are in benchmarks/test_scale.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sqlitejobq import Queue
from sqlitejobq.backends.sqlite import queries as sql

PARAMS = {"worker": "w", "lease_until": 1.0, "now": 1.0, "limit": 10, "q0": "a", "q1": "b", "id": 1,
          "attempts": 1,
          "q2": "c", "queue": "a", "error": "x", "cutoff": 1.0, "chunk": 10, "key": "t",
          "queues": None, "exclude": "[]", "ids": "[1]", "since": 0.0,
          "finished": "[[1, true]]"}  # fmt: skip


def plan(db: Path, statement: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", PARAMS)]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("name", "statement", "index"),
    [
        ("claim from one queue", sql.claim_from_queues(1), "sqlitejobq_jobs_claim"),
        ("claim from three queues", sql.claim_from_queues(3), "sqlitejobq_jobs_claim"),
        ("queues holding jobs", sql.QUEUES_WITH_QUEUED_JOBS, "sqlitejobq_jobs_claim"),
        ("next run, one queue", sql.NEXT_RUN_IN_QUEUE, "sqlitejobq_jobs_claim"),
        ("next run, every queue", sql.NEXT_RUN_ANY_QUEUE, "sqlitejobq_jobs_claim"),
        ("rescue expired leases", sql.RESCUE_EXPIRED, "sqlitejobq_jobs_lease"),
        ("next lease expiry", sql.NEXT_LEASE_EXPIRY, "sqlitejobq_jobs_lease"),
        (
            "complete",
            sql.COMPLETE.replace(":result", "NULL").replace(":message", "NULL"),
            "PRIMARY KEY",
        ),
        ("jobs of a batch", sql.BATCH_JOBS.replace("?", "1"), "sqlitejobq_jobs_batch"),
        ("limit keys holding jobs", sql.LIMITED_KEYS, "sqlitejobq_jobs_limited"),
        ("a limit key's best jobs", sql.LIMITED_CANDIDATES, "sqlitejobq_jobs_limited"),
        ("running jobs per limit key", sql.LIMITED_RUNNING, "sqlitejobq_jobs_lease"),
        ("next limited job due", sql.NEXT_LIMITED_RUN, "sqlitejobq_jobs_limited_due"),
        ("claim chosen limited jobs", sql.CLAIM_IDS, "PRIMARY KEY"),
        ("a key's recent starts", sql.RECENT_STARTS, "sqlitejobq_starts_key"),
        ("release dependents", sql.RELEASE_DEPENDENTS, "PRIMARY KEY"),
    ],
)
def test_hot_statements_search_an_index(
    tmp_path: Path, name: str, statement: str, index: str
) -> None:
    db = tmp_path / "plans.db"
    Queue(db).close()
    steps = plan(db, statement)
    assert any(index in step for step in steps), f"{name}: {steps}"
    full_scans = [s for s in steps if s.startswith("SCAN sqlitejobq_jobs") and "INDEX" not in s]
    assert full_scans == [], f"{name} reads the whole table: {steps}"


def test_the_claim_of_one_queue_needs_no_sort(tmp_path: Path) -> None:
    db = tmp_path / "plans.db"
    Queue(db).close()
    assert not [s for s in plan(db, sql.claim_from_queues(1)) if "TEMP B-TREE" in s]
