"""Faults of a PostgreSQL server: restarted mid-drain, connections killed, statements
timed out, connections refused. Nothing is lost, no outcome is dropped, and what reaches
the caller is a library error that says what happened.

These tests run on a server of their own (started for the module), since they stop it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlitejobq import DatabaseBusy, DatabaseUnavailable, JobStatus, Queue

from . import apps
from .conftest import ROOT, PostgresEngine, finish, wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.engines("postgres")]

SCRIPT = ROOT / ".ci" / "pg-server"


class Server:
    """A throwaway PostgreSQL server that the tests may stop, restart and reconfigure."""

    def __init__(self) -> None:
        self.dir = f"/tmp/sqlitejobq-faults-pg-{uuid.uuid4().hex[:8]}"
        started = subprocess.run([str(SCRIPT), "start", self.dir], capture_output=True,
                                 text=True, timeout=120, check=False)  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"cannot start a PostgreSQL server: {started.stderr}")
        self.dsn = started.stdout.strip()

    def control(self, action: str) -> None:
        subprocess.run([str(SCRIPT), action, self.dir], check=True, timeout=120)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def server(pg_dsn: str) -> Iterator[Server]:
    if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin")):
        pytest.skip("no PostgreSQL binaries to start a server of the tests' own")
    own = Server()
    try:
        yield own
    finally:
        subprocess.run([str(SCRIPT), "stop", own.dir], timeout=120, check=False)


@pytest.fixture
def engine_on_own_server(server: Server, tmp_path: Path) -> Iterator[PostgresEngine]:
    engine = PostgresEngine(tmp_path, server.dsn)
    try:
        yield engine
    finally:
        with contextlib.suppress(Exception):
            engine.close()


def assert_status_fails_in_one_line(target: str, saying: str) -> None:
    """``sqlitejobq status`` on ``target`` exits 1 with one line on stderr holding
    ``saying``, and no traceback."""
    cli = subprocess.run(
        [sys.executable, "-m", "sqlitejobq", "status", "--db", target],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert cli.returncode == 1
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and saying in lines[0], cli.stderr
    assert "Traceback" not in cli.stderr


def drain_is_exact(queue: Queue, ids: list[int], runs: collections.Counter[int]) -> None:
    jobs = [queue.get(i) for i in ids]
    assert [j.id for j in jobs if j.status is not JobStatus.COMPLETED] == []
    # each completed once: the stored result is from the attempt that completed it
    assert all(j.result == {"attempt": j.attempts} for j in jobs)
    assert all(runs[j.id] >= 1 for j in jobs)
    assert queue.stats().by_status == {"queued": 0, "processing": 0, "completed": len(ids),
                                       "failed": 0, "cancelled": 0, "waiting": 0}  # fmt: skip


def test_a_server_restart_mid_drain_loses_nothing_and_the_workers_carry_on(
    server: Server, engine_on_own_server: PostgresEngine
) -> None:
    engine = engine_on_own_server
    queue = engine.open()
    ids = queue.enqueue_many("sleep", [{"seconds": 0.01}] * 600, max_attempts=10)
    workers = [engine.worker("--concurrency", "4", "--lease", "10") for _ in range(2)]
    wait_until(lambda: queue.stats().by_status["completed"] >= 60, 60, "the drain to start")
    server.control("restart")  # every connection of every worker breaks
    wait_until(lambda: queue.stats().by_status["completed"] == len(ids), 120, "the drain")
    for process in workers:
        process.send_signal(signal.SIGTERM)
    outputs = [finish(process) for process in workers]
    drain_is_exact(queue, ids, engine.runs())
    assert all(process.returncode == 0 for process in workers), outputs
    # the broken connections were retried on new ones (counted in the workers' reports)
    assert sum(w.lock_retries for w in queue.workers()) >= 1, "the restart went unnoticed"
    queue.close()


def test_connections_killed_by_pg_terminate_backend_lose_nothing(
    server: Server, engine_on_own_server: PostgresEngine
) -> None:
    engine = engine_on_own_server
    queue = engine.open()
    ids = queue.enqueue_many("sleep", [{"seconds": 0.01}] * 400, max_attempts=10)
    worker = engine.worker("--concurrency", "4", "--lease", "10")
    killed = 0
    deadline = time.monotonic() + 90
    while queue.stats().by_status["completed"] < len(ids) and time.monotonic() < deadline:
        time.sleep(0.3)
        killed += len(server.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'sqlitejobq' AND pid <> pg_backend_pid()"
        ))  # fmt: skip
    wait_until(lambda: queue.stats().by_status["completed"] == len(ids), 60, "the drain")
    worker.send_signal(signal.SIGTERM)
    output = finish(worker)
    assert killed > 0
    drain_is_exact(queue, ids, engine.runs())
    assert worker.returncode == 0, output[-3000:]
    queue.close()


def test_statements_cancelled_by_statement_timeout_are_retried(
    server: Server, engine_on_own_server: PostgresEngine
) -> None:
    # every statement of the database is cut at 200 ms while another session holds the
    # jobs' lock for 1 s: the library's statements are cancelled, retried, and go through
    engine = engine_on_own_server
    queue = engine.open(lock_timeout=30.0)  # the statement timeout cuts the wait first
    database = server.dsn.rsplit("/", 1)[1]
    server.sql(f"ALTER DATABASE {database} SET statement_timeout = '200ms'")
    try:
        with engine.open(lock_timeout=30.0, retry_timeout=20.0) as fresh:
            with engine.writes_blocked(1.0):
                job_id = fresh.enqueue("sleep", {"seconds": 0})
            assert fresh.get(job_id).status is JobStatus.QUEUED
            assert fresh.stats().lock.lock_retries >= 1
    finally:
        server.sql(f"ALTER DATABASE {database} RESET statement_timeout")
    queue.close()


def test_a_server_refusing_connections_gives_a_clear_error_within_the_bound(
    server: Server, engine_on_own_server: PostgresEngine
) -> None:
    engine = engine_on_own_server
    engine.open().close()
    server.control("halt")
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot reach the PostgreSQL server"):
            Queue(engine.target, registry=apps.registry, retry_timeout=2.0, connect_timeout=1)
        assert time.monotonic() - started < 15  # the bound, not a hang
        assert_status_fails_in_one_line(engine.target, "sqlitejobq: error:")
    finally:
        server.control("resume")
    with engine.open() as queue:  # and once it is back, all is as it was
        assert queue.stats().total() == 0


def test_a_worker_rides_out_a_server_outage_and_keeps_its_outcomes(
    server: Server, engine_on_own_server: PostgresEngine
) -> None:
    # the handlers finish while the server is down: their outcomes are kept and written when
    # it is back, within the lease, so no job runs twice
    engine = engine_on_own_server
    queue = engine.open()
    ids = queue.enqueue_many("sleep", [{"seconds": 1.0}] * 4)
    worker = engine.worker("--concurrency", "4", "--lease", "30")
    wait_until(lambda: len(engine.runs()) == 4, 60, "the handlers to start")
    server.control("halt")
    time.sleep(2.5)
    server.control("resume")
    wait_until(lambda: queue.stats().by_status["completed"] == 4, 120, "the outcomes")
    worker.send_signal(signal.SIGTERM)
    output = finish(worker)
    assert [queue.get(i).attempts for i in ids] == [1] * 4, output[-3000:]
    assert engine.runs() == collections.Counter(dict.fromkeys(ids, 1))
    assert "0 lost" in output
    queue.close()


def test_connections_the_server_ended_while_idle_are_replaced_not_reported(
    server: Server, engine_on_own_server: PostgresEngine
) -> None:
    # nothing was sent on a connection ended while it sat in the pool: the next call gets
    # a live one, with no "may or may not have been applied"
    engine = engine_on_own_server
    queue = engine.open(retry_timeout=10.0)
    barrier = threading.Barrier(4)

    def busy() -> None:  # four connections in the pool at once
        barrier.wait(30)
        queue.enqueue_many("sleep", [{"seconds": 0}] * 5)

    threads = [threading.Thread(target=busy) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ours = "SELECT pid FROM pg_stat_activity WHERE application_name = 'sqlitejobq'"
    # ended as the call starts (the server's FATAL answers the statement), ended a while
    # before (the FATAL waits on the idle socket), and a restart of the server
    for end in ("terminate", "terminate and wait", "restart"):
        if end == "restart":
            server.control("restart")
        else:
            killed = server.sql(f"SELECT pg_terminate_backend(pid) FROM ({ours}) AS q")
            assert killed, "the queue had no connection to end"
        if end == "terminate and wait":
            wait_until(lambda: not server.sql(ours), 30, "the ended connections to go")
        one = queue.enqueue("sleep", {"seconds": 0})
        many = queue.enqueue_many("sleep", [{"seconds": 0}] * 3)
        assert queue.get(one).status is JobStatus.QUEUED
        assert [queue.get(i).status for i in many] == [JobStatus.QUEUED] * 3
    assert queue.stats().total() == 20 + 3 * 4
    queue.close()


_HOLD_EVERY_TABLE = """
import sys, time
import psycopg
from sqlitejobq.backends.postgres.connection import split_schema
url, schema = split_schema(sys.argv[1])
with psycopg.connect(url) as conn:
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
    conn.execute("LOCK TABLE " + ", ".join(f"{schema}.{t}" for t in tables)
                 + " IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.rollback()
"""


def test_reads_under_a_lock_give_up_within_retry_timeout(
    server: Server, engine_on_own_server: PostgresEngine
) -> None:
    # every table locked for 20 s: each read gives up after retry_timeout (1 s), saying so,
    # instead of waiting for the lock (or twice the server's lock wait)
    engine = engine_on_own_server
    queue = engine.open(retry_timeout=1.0)
    job_id = queue.enqueue("sleep", {"seconds": 0})
    reads = {
        "get": lambda: queue.get(job_id),
        "stats": queue.stats,
        "jobs": queue.jobs,
        "timeline": lambda: queue.timeline(job_id),
    }
    waited = {}
    with engine._hold_code(_HOLD_EVERY_TABLE, 20.0):
        for name, read in reads.items():
            started = time.monotonic()
            with pytest.raises(DatabaseBusy, match="for more than 1s"):
                read()
            waited[name] = time.monotonic() - started
    assert all(seconds < 4.0 for seconds in waited.values()), waited
    assert queue.get(job_id).status is JobStatus.QUEUED  # and all is as it was
    queue.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [("database", 'database "no_such_db" does not exist'),
     ("user", 'role "no_such_role" does not exist')],
)  # fmt: skip
def test_a_missing_database_or_role_is_named_at_once(
    server: Server, change: str, reason: str, tmp_path: Path
) -> None:
    base = server.dsn.rpartition("/")[0]
    url = f"{base}/no_such_db" if change == "database" else server.dsn
    if change == "user":
        url = url.replace("postgres@", "no_such_role@", 1)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=re.escape(reason)) as refused:
        Queue(url, registry=apps.registry, retry_timeout=30.0)
    # refused for good: said at once, not after the 30 s bound
    assert time.monotonic() - started < 10
    assert "cannot reach" not in str(refused.value)
    assert_status_fails_in_one_line(url, reason)
