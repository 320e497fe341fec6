"""The hot statements read indexes, never the whole table: their cost stays flat.

Checked on SQLite's own query plans, so it holds on any machine; the timings that go with
it are in benchmarks/test_scale.py. The listing of failed jobs is also checked on
PostgreSQL's planner, which picks its index on a populated table, in generic plans too.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import Queue
from sqlitejobq.backends.sqlite import queries as sql

from .conftest import Database, only_on

PARAMS = {"worker": "w", "lease_until": 1.0, "now": 1.0, "limit": 10, "q0": "a", "q1": "b", "id": 1,
          "attempts": 1,
          "q2": "c", "queue": "a", "error": "x", "cutoff": 1.0, "chunk": 10, "key": "t",
          "queues": None, "exclude": "[]", "ids": "[1]", "since": 0.0,
          "finished": "[[1, true]]", "status": "failed", "task": None, "batch_id": 1,
          "before": 900, "after": None, "scan": 1000, "until": 1.0}  # fmt: skip


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
        ("jobs of a batch", sql.BATCH_JOBS.replace(":batch_id", "1"), "sqlitejobq_jobs_batch"),
        ("limit keys holding jobs", sql.LIMITED_KEYS, "sqlitejobq_jobs_limited"),
        ("a limit key's best jobs", sql.LIMITED_CANDIDATES, "sqlitejobq_jobs_limited"),
        ("running jobs per limit key", sql.LIMITED_RUNNING, "sqlitejobq_jobs_lease"),
        ("next limited job due", sql.NEXT_LIMITED_RUN, "sqlitejobq_jobs_limited_due"),
        ("claim chosen limited jobs", sql.CLAIM_IDS, "PRIMARY KEY"),
        ("a key's recent starts", sql.RECENT_STARTS, "sqlitejobq_starts_key"),
        ("release dependents", sql.RELEASE_DEPENDENTS, "PRIMARY KEY"),
        (
            "failed jobs, newest first",
            sql.list_jobs(False, "finished_badly"),
            "sqlitejobq_jobs_finished_badly",
        ),
        (
            "failed jobs, oldest first",
            sql.list_jobs(True, "finished_badly"),
            "sqlitejobq_jobs_finished_badly",
        ),
        ("a page of failed ids to retry", sql.FAILED_IDS, "sqlitejobq_jobs_finished_badly"),
        ("a batch's jobs, a page", sql.list_jobs(False, "batch"), "sqlitejobq_jobs_batch"),
        ("jobs below a cursor", sql.list_jobs(False), "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        ("jobs above a cursor", sql.list_jobs(True), "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        ("what a job waits for", sql.WAITS_ON.replace(":id", "1"), "sqlitejobq_dependencies_job"),
        ("what waits for a job", sql.WAITED_ON_BY.replace(":id", "1"), "PRIMARY KEY"),
        ("a page of batches", sql.BATCHES, "INTEGER PRIMARY KEY"),
        ("throughput of the last minutes", sql.THROUGHPUT, "INTEGER PRIMARY KEY"),
        ("expired jobs", sql.EXPIRE_DUE.replace(":status", "'queued'"), "sqlitejobq_jobs_expiry"),
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


def _steps(conn: sqlite3.Connection, statement: str, params: dict[str, Any]) -> int:
    """The virtual machine instructions (in tens) SQLite runs for a statement: its cost,
    counted the same on any machine."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 10)
    try:
        conn.execute(statement, params).fetchall()
    finally:
        conn.set_progress_handler(None, 0)
    return count[0]


def test_a_paused_queue_s_backlog_costs_the_claim_nothing(tmp_path: Path) -> None:
    db = tmp_path / "plans.db"
    Queue(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    insert = (
        "INSERT INTO sqlitejobq_jobs (task, queue, payload, status, priority, run_at, "
        "created_at) VALUES ('t', ?, '{}', 'queued', ?, 0, 0)"
    )
    conn.executemany(insert, [("held", n % 3) for n in range(10)] + [("open", 0)] * 10)
    conn.execute("INSERT INTO sqlitejobq_queues (name, paused_at) VALUES ('held', 1.0)")
    params = {**PARAMS, "q0": "held", "queue": "held", "now": 1.0, "limit": 10}
    statements = {
        "claim from the paused queue": sql.claim_from_queues(1),
        "queues to claim from": sql.QUEUES_WITH_QUEUED_JOBS,
        "next run, the paused queue": sql.NEXT_RUN_IN_QUEUE,
        "next run, every queue": sql.NEXT_RUN_ANY_QUEUE,
    }
    conn.execute("BEGIN")
    small = {name: _steps(conn, text, params) for name, text in statements.items()}
    conn.execute("ROLLBACK")
    conn.execute("BEGIN")
    conn.executemany(insert, [("held", n % 3) for n in range(20_000)])
    large = {name: _steps(conn, text, params) for name, text in statements.items()}
    assert conn.execute(sql.claim_from_queues(1), params).fetchall() == []
    assert [row[0] for row in conn.execute(sql.QUEUES_WITH_QUEUED_JOBS)] == ["open"]
    assert conn.execute(sql.NEXT_RUN_IN_QUEUE, params).fetchone()[0] is None
    conn.execute("ROLLBACK")
    conn.close()
    for name in statements:
        assert large[name] <= small[name] + 2, f"{name}: {small[name]} -> {large[name]}"


def test_a_bare_status_filter_would_not_reach_the_partial_index(tmp_path: Path) -> None:
    # why the listings of failed jobs carry the index's own IN term
    db = tmp_path / "plans.db"
    Queue(db).close()
    bare = "SELECT id FROM sqlitejobq_jobs WHERE status = 'failed' ORDER BY id DESC LIMIT 50"
    assert plan(db, bare) == ["SCAN sqlitejobq_jobs"]
    steps = plan(db, sql.list_jobs(False, "finished_badly"))
    assert not [s for s in steps if "TEMP B-TREE" in s], steps


_NAMED_PARAMETER = re.compile(r"%\((\w+)\)s")


@contextlib.contextmanager
def _populated(target: str, database: Database, jobs: str) -> Iterator[Any]:
    """A connection to a fresh PostgreSQL queue once ``jobs`` (an INSERT) has filled its
    table and the table is analyzed: what the planner chooses on real data."""
    Queue(target).close()
    conn = database.connect()
    try:
        conn.execute(jobs)
        conn.execute("ANALYZE sqlitejobq_jobs")
        yield conn
    finally:
        conn.close()


def _postgres_plan(conn: Any, statement: str, params: dict[str, Any], generic: bool) -> str:
    """The plan of ``statement``: with its values (a custom plan), or as a prepared
    statement's plan made without them (a generic plan, what a statement run often gets)."""
    from psycopg import ClientCursor
    from psycopg import sql as pgsql

    if not generic:
        rows = ClientCursor(conn).execute("EXPLAIN " + statement, params).fetchall()
        return "\n".join(row[0] for row in rows)
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    conn.execute(f"PREPARE listing AS {_NAMED_PARAMETER.sub(number, statement)}")
    try:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        values = ", ".join(pgsql.Literal(params[n]).as_string(conn) for n in names)
        rows = conn.execute(f"EXPLAIN EXECUTE listing({values})").fetchall()
        return "\n".join(row[0] for row in rows)
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE listing")


@only_on("postgres", "the PostgreSQL planner's own choice on a populated table")
@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
def test_failed_jobs_are_listed_through_their_index_on_postgres(
    target: str, database: Database, generic: bool
) -> None:
    from sqlitejobq.backends.postgres import queries as pg

    with _populated(
        target,
        database,
        "INSERT INTO sqlitejobq_jobs (task, payload, status, run_at, created_at, error) "
        "SELECT 't', '{}', CASE g % 100 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' "
        "ELSE 'completed' END, 0, 0, 'Boom ' || g FROM generate_series(1, 50000) AS g",
    ) as conn:
        params = dict.fromkeys(("queue", "task", "batch_id", "error", "before", "scan"))
        params.update(status="failed", after=0, limit=50)
        for statement in (
            pg.list_jobs(False, "finished_badly"),
            pg.list_jobs(True, "finished_badly"),
            pg.FAILED_IDS,
        ):
            found = _postgres_plan(conn, statement, params, generic)
            assert "sqlitejobq_jobs_finished_badly" in found, found
            assert "Seq Scan on sqlitejobq_jobs" not in found, found
        bare = "SELECT id FROM sqlitejobq_jobs WHERE status = 'failed' ORDER BY id DESC LIMIT 50"
        assert "sqlitejobq_jobs_finished_badly" in _postgres_plan(conn, bare, {}, False)


def _postgres_blocks(
    conn: Any, statement: str, params: dict[str, Any], generic: bool
) -> tuple[str, int]:
    """The plan of a statement run (EXPLAIN ANALYZE, rolled back), custom or generic (as
    ``_postgres_plan``), and the blocks it read."""
    import json

    from psycopg import ClientCursor
    from psycopg import sql as pgsql

    explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
    with conn.transaction(force_rollback=True):
        if generic:
            names: list[str] = []

            def number(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            conn.execute(f"PREPARE measured AS {_NAMED_PARAMETER.sub(number, statement)}")
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            values = ", ".join(pgsql.Literal(params[n]).as_string(conn) for n in names)
            explained = conn.execute(f"{explain}EXECUTE measured({values})")
        else:
            explained = ClientCursor(conn).execute(explain + statement, params)
        [plan] = explained.fetchone()[0]
    if generic:
        conn.execute("DEALLOCATE measured")
    top = plan["Plan"]
    return json.dumps(plan), int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


@only_on("postgres", "the PostgreSQL planner's own choice on a populated table")
@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
def test_a_paused_queue_s_backlog_costs_the_claim_nothing_on_postgres(
    target: str, database: Database, generic: bool
) -> None:
    from sqlitejobq.backends.postgres import queries as pg

    with _populated(
        target,
        database,
        "INSERT INTO sqlitejobq_jobs (task, queue, payload, status, priority, run_at, "
        "created_at) SELECT 't', 'held', '{}', 'queued', g % 3, 0, 0 "
        "FROM generate_series(1, 50000) AS g",
    ) as conn:
        conn.execute("INSERT INTO sqlitejobq_queues (name, paused_at) VALUES ('held', 1)")
        claim = {"worker": "w", "lease": 30.0, "now": 1.0, "limit": 10, "exclude": []}
        for statement, params in (
            (pg.CLAIM_FROM_QUEUES, {**claim, "queues": ["held"]}),
            (pg.CLAIM_ANY_QUEUE, claim),
            (pg.NEXT_RUN_ANY_QUEUE, {"now": 1.0}),
            (pg.NEXT_RUN_IN_QUEUES, {"queues": ["held"], "now": 1.0}),
        ):
            plan, blocks = _postgres_blocks(conn, statement, params, generic)
            assert "Seq Scan on sqlitejobq_jobs" not in plan, plan
            assert blocks < 50, f"{blocks} blocks read for 50,000 paused jobs: {plan}"
        conn.execute("UPDATE sqlitejobq_queues SET paused_at = NULL")
        resumed = {**claim, "queues": ["held"]}
        plan, _ = _postgres_blocks(conn, pg.CLAIM_FROM_QUEUES, resumed, generic)
        assert '"Actual Rows": 10' in plan, plan  # resumed, it claims again


@only_on("postgres", "the PostgreSQL planner's own choice on a populated table")
@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
def test_finding_expired_jobs_reads_only_the_jobs_that_have_an_expiry_on_postgres(
    target: str, database: Database, generic: bool
) -> None:
    """The probe every claim makes: 50,000 queued jobs without an expiry cost it nothing."""
    from sqlitejobq.backends.postgres import queries as pg

    with _populated(
        target,
        database,
        "INSERT INTO sqlitejobq_jobs (task, queue, payload, status, priority, run_at, "
        "created_at) SELECT 't', 'q', '{}', 'queued', 0, 0, 0 "
        "FROM generate_series(1, 50000) AS g",
    ) as conn:
        plan, blocks = _postgres_blocks(
            conn, pg.EXPIRE_DUE, {"status": "queued", "now": 1.0}, generic
        )
        assert "Seq Scan on sqlitejobq_jobs" not in plan, plan
        assert blocks < 20, f"{blocks} blocks read for 50,000 jobs without expiry: {plan}"
