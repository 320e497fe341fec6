"""Faults of a PostgreSQL server: restarted mid-drain, connections killed, statements
timed out, connections refused. Nothing is lost, no outcome is dropped, and what reaches
the caller is a library error that says what happened.

These tests run on a server of their own (started for the module), since they stop it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlitejobq import DatabaseUnavailable, JobStatus, Queue

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
        cli = subprocess.run(
            [sys.executable, "-m", "sqlitejobq", "status", "--db", engine.target],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        assert cli.returncode == 1
        lines = cli.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sqlitejobq: error:"), cli.stderr
        assert "Traceback" not in cli.stderr
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
