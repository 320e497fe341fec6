"""The fault suite: what every engine must survive, written once, run on each engine.

A test takes the ``engine`` fixture: it opens queues on a fresh database of that engine,
starts real worker processes on it, and stages the engine's faults (another process holding
the write lock, a full disk, a read-only mount, ...). A fault that only one engine can have
is marked ``@pytest.mark.engines("sqlite")``; the others say so when they skip it.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import Queue

from . import apps

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.apps:registry"
ENGINES = ("sqlite", "postgres")


class Engine(ABC):
    """One engine under test: where its database is, and how to stage its faults."""

    name = "engine"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.run_log = tmp_path / "runs.log"
        self.target = ""
        self._outputs = 0
        self._processes: list[subprocess.Popen[str]] = []

    def open(self, **options: Any) -> Queue:
        """A queue on this test's database (with the fault suite's handlers, unless given)."""
        options.setdefault("registry", apps.registry)
        options.setdefault("strict_tasks", False)  # the fault tests enqueue any task name
        return Queue(self.target, **options)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the worker processes and CLI calls of a test."""
        return {
            **os.environ, "PYTHONPATH": str(ROOT), "SQLITEJOBQ_TEST_LOG": str(self.run_log),
            "SQLITEJOBQ_DB": self.target, **extra,
        }  # fmt: skip

    def worker(self, *args: str, app: str = APP, **env: str) -> subprocess.Popen[str]:
        """``sqlitejobq worker`` on this database, its output written to a file (a pipe
        nobody reads until the end would fill up and stop a chatty worker); killed at the
        end of the test if it is still running."""
        self._outputs += 1
        log = self.tmp_path / f"worker-{self._outputs}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sqlitejobq", "worker", "--db", self.target, "--app",
                 app, "--log-level", "INFO", *args],
                cwd=ROOT, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        _outputs[process.pid] = log
        self._processes.append(process)
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """One ``sqlitejobq`` command on this database."""
        return subprocess.run(
            [sys.executable, "-m", "sqlitejobq", *args, "--db", self.target],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    @abstractmethod
    def writes_blocked(self, seconds: float) -> AbstractContextManager[None]:
        """Another process holds the write lock of the jobs from entry for ``seconds``."""

    @abstractmethod
    def execute(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the test's database as another program would, bypassing
        the library (``?`` placeholders); its rows."""

    def close(self) -> None:
        """Stop the test's worker processes still running, and drop what the test created."""
        for process in self._processes:
            if process.poll() is None:  # a test that failed half-way: stop what it started
                process.terminate()  # a supervisor passes it on to its worker processes
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(30)

    @contextmanager
    def _hold_code(self, code: str, seconds: float) -> Iterator[None]:
        """Another process runs ``code`` (given the target and ``seconds``), which prints
        "locked" once it holds what it holds, for ``seconds``."""
        yield from self._hold(code, seconds)

    def _hold(self, code: str, seconds: float) -> Iterator[None]:
        holder = subprocess.Popen(
            [sys.executable, "-c", code, self.target, str(seconds)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked", "the lock holder did not start"
        try:
            yield
        finally:
            holder.wait(seconds + 30)
        assert holder.returncode == 0

    def runs(self) -> collections.Counter[int]:
        """How many times each job's handler started, from the handlers' log."""
        if not self.run_log.exists():
            return collections.Counter()
        lines = self.run_log.read_text().splitlines()
        return collections.Counter(int(line.split()[0]) for line in lines)


class SqliteEngine(Engine):
    """A SQLite file in the test's temporary directory."""

    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.target = str(tmp_path / "jobs.db")

    @contextmanager
    def writes_blocked(self, seconds: float) -> Iterator[None]:
        yield from self._hold(_HOLD_SQLITE_LOCK, seconds)

    def execute(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.target)
        try:
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()


class PostgresEngine(Engine):
    """A schema of its own in the PostgreSQL database the tests run against."""

    name = "postgres"

    def __init__(self, tmp_path: Path, dsn: str) -> None:
        super().__init__(tmp_path)
        self.dsn = dsn
        self.schema = f"f_{uuid.uuid4().hex[:16]}"
        self.target = f"{dsn}?schema={self.schema}"

    @contextmanager
    def writes_blocked(self, seconds: float) -> Iterator[None]:
        yield from self._hold(_HOLD_POSTGRES_LOCK, seconds)

    def execute(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"SET search_path = {self.schema}")
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        super().close()
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


_HOLD_POSTGRES_LOCK = """
import sys, time
import psycopg
from sqlitejobq.backends.postgres.connection import split_schema
url, schema = split_schema(sys.argv[1])
with psycopg.connect(url) as conn:
    conn.execute(f"SET search_path = {schema}")
    conn.execute("LOCK TABLE sqlitejobq_jobs IN EXCLUSIVE MODE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.rollback()
"""

_HOLD_SQLITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines(*names): the engines a fault test applies to")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    marker = request.node.get_closest_marker("engines")
    if marker is not None and request.param not in marker.args:
        pytest.skip(f"a fault of {', '.join(marker.args)} only")
    chosen: Engine
    if request.param == "postgres":
        chosen = PostgresEngine(tmp_path, request.getfixturevalue("pg_dsn"))
    else:
        chosen = SqliteEngine(tmp_path)
    try:
        yield chosen
    finally:
        chosen.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


#: Where each worker process of the suite writes its output, by pid.
_outputs: dict[int, Path] = {}


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a worker process to end; its output."""
    process.wait(timeout)
    return _outputs[process.pid].read_text()
