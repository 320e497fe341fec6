"""Shared fixtures: one contract suite, every engine.

A test that takes ``engine`` (directly, or through ``target``, ``db_path``, ``database``,
``queue`` or ``clocked_queue``) runs once per engine: ``test_x[sqlite]`` on a SQLite file
in its own temporary directory, ``test_x[postgres]`` on a schema of its own
(``?schema=t_<hex>``, created by the first open, dropped at teardown) in the session's
PostgreSQL database. A behaviour that is one engine's own is marked ``@only_on(engine,
why)``; a module about one engine overrides the ``engine`` fixture.

PostgreSQL: ``$SQLITEJOBQ_PG_DSN`` if set (it must work), else a throwaway server started
with ``.ci/pg-server`` for the session. Without either, PostgreSQL tests skip saying why,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import Queue, Registry

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("sqlite", "postgres")
PG_DSN_ENV = "SQLITEJOBQ_PG_DSN"
PG_SERVER = ROOT / ".ci" / "pg-server"


class Clock:
    """A clock the test moves by hand, so leases and delays expire when the test says."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def only_on(engine: str, why: str) -> pytest.MarkDecorator:
    """Run a test on one engine only; ``why`` says what makes the behaviour that engine's."""
    assert engine in ENGINES and why.strip(), "say which engine and why"
    return pytest.mark.parametrize("engine", [engine], indirect=True)


# --- PostgreSQL: one server (or DSN) per session ---------------------------------------------


def with_schema(dsn: str, schema: str) -> str:
    """The DSN naming ``schema`` (the queue creates it on first open)."""
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


class PgServer:
    """The session's PostgreSQL database: hands out schemas and drops them."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._admin = self._connect()
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        conn.execute("SET lock_timeout = '10s'")
        return conn

    def new_schema(self) -> str:
        return f"t_{uuid.uuid4().hex}"

    def drop(self, schema: str) -> None:
        from psycopg import sql

        try:
            with self._lock:
                if self._admin.closed or self._admin.broken:  # the server went away a while
                    self._admin = self._connect()
                self._admin.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
        except Exception as exc:  # a connection a test left open in a transaction
            warnings.warn(f"schema {schema} not dropped: {exc}", stacklevel=1)

    def close(self) -> None:
        self._admin.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required when CI=true: {reason}", pytrace=False)
    pytest.skip(
        f"no PostgreSQL: {reason} (set ${PG_DSN_ENV}, or install PostgreSQL for .ci/pg-server)"
    )


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL DSN for the session: $SQLITEJOBQ_PG_DSN, or a server of its own."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'sqlitejobq[postgres]')")
        raise
    given = os.environ.get(PG_DSN_ENV)
    if given:
        try:
            psycopg.connect(given, connect_timeout=10).close()
        except psycopg.Error as exc:
            pytest.fail(f"${PG_DSN_ENV}={given} does not connect: {exc}", pytrace=False)
        yield given
        return
    if shutil.which("bash") is None or not PG_SERVER.exists():
        _unavailable(f"{PG_SERVER} cannot run here")
    directory = tempfile.mkdtemp(prefix="sqjq-pg-", dir="/tmp")  # short: the socket is inside
    os.rmdir(directory)  # the script makes it, and removes it again if the start fails
    try:
        started = subprocess.run(
            ["bash", str(PG_SERVER), "start", directory],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        started = None
    if started is None or started.returncode != 0 or not started.stdout.strip():
        err = "timed out" if started is None else " / ".join(started.stderr.splitlines()[-3:])
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["bash", str(PG_SERVER), "stop", directory], capture_output=True,
                           timeout=120, check=False)  # fmt: skip
        _unavailable(f".ci/pg-server start failed: {err}")
    assert started is not None
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(PG_SERVER), "stop", directory], capture_output=True,
                       timeout=120, check=False)  # fmt: skip


@pytest.fixture(scope="session")
def pg_server(pg_dsn: str) -> Iterator[PgServer]:
    server = PgServer(pg_dsn)
    yield server
    server.close()


# --- one fresh database per test, on each engine ----------------------------------------------


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The engine under test: the test runs once per engine."""
    return str(request.param)


@pytest.fixture
def target(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for this test: a SQLite file, or a PostgreSQL URL naming a schema
    of its own (created lazily by the first open, dropped with everything in it after)."""
    if engine == "sqlite":
        yield str(tmp_path / "jobs.db")
        return
    server: PgServer = request.getfixturevalue("pg_server")
    schema = server.new_schema()
    yield with_schema(server.dsn, schema)
    server.drop(schema)


@pytest.fixture
def db_path(target: str) -> str:
    """The older name of ``target``: a file path on SQLite, a URL on PostgreSQL."""
    return target


class Database:
    """Plain SQL on a test's database, whatever its engine, for what the API does not show.

    Queries are written with ``?`` placeholders (``%s`` on PostgreSQL, where they run in
    the test's schema); every call commits on its own.
    """

    def __init__(self, engine: str, target: str) -> None:
        self.engine = engine
        self.target = target
        self.dsn = target
        self.schema: str | None = None
        if engine == "postgres":
            from sqlitejobq.backends.postgres.connection import split_schema

            self.dsn, self.schema = split_schema(target)

    @property
    def options(self) -> dict[str, Any]:
        """The engine options that name this database's schema (for ``migrate``)."""
        return {} if self.schema is None else {"schema": self.schema}

    @property
    def begin(self) -> str:
        """The statement that opens a write transaction."""
        return "BEGIN IMMEDIATE" if self.engine == "sqlite" else "BEGIN"

    def sql(self, text: str) -> str:
        """``text`` with the engine's placeholders."""
        return text if self.engine == "sqlite" else text.replace("?", "%s")

    def connect(self, *, autocommit: bool = True) -> Any:
        """A new connection of the engine's driver to this database (and schema). Without
        autocommit, the first write opens a transaction that the caller ends."""
        if self.engine == "sqlite":
            return sqlite3.connect(self.target, isolation_level=None if autocommit else "")
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(self.dsn, autocommit=True)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        conn.execute("SELECT set_config('search_path', %s, false)", (self.schema,))
        conn.autocommit = autocommit
        return conn

    def execute(self, text: str, params: tuple[Any, ...] = ()) -> None:
        conn = self.connect()
        try:
            conn.execute(self.sql(text), params)
        finally:
            conn.close()

    def rows(self, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return [tuple(row) for row in conn.execute(self.sql(text), params).fetchall()]
        finally:
            conn.close()

    def value(self, text: str, params: tuple[Any, ...] = ()) -> Any:
        [(value,)] = self.rows(text, params)
        return value

    def tables(self) -> set[str]:
        """The tables of the database (of the test's schema on PostgreSQL)."""
        if self.engine == "sqlite":
            if not Path(self.target).exists():
                return set()
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
            return {str(row[0]) for row in self.rows(query)}
        query = "SELECT tablename FROM pg_tables WHERE schemaname = ?"
        return {str(row[0]) for row in self.rows(query, (self.schema,))}

    def columns(self, table: str) -> list[str]:
        if self.engine == "sqlite":
            return [str(row[1]) for row in self.rows(f"PRAGMA table_info({table})")]
        query = ("SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
                 "AND table_name = ? ORDER BY ordinal_position")  # fmt: skip
        return [str(row[0]) for row in self.rows(query, (self.schema, table))]

    def indexes(self, table: str | None = None) -> dict[str, bool]:
        """Index names (of ``table``, or every one) and whether each is unique."""
        if self.engine == "sqlite":
            if table is not None:
                return {str(r[1]): bool(r[2]) for r in self.rows(f"PRAGMA index_list({table})")}
            names = self.rows("SELECT name FROM sqlite_master WHERE type = 'index'")
            return {str(r[0]): False for r in names}
        query = (
            "SELECT c.relname, i.indisunique FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = ? "
            "AND (?::text IS NULL OR t.relname = ?) AND NOT i.indisprimary"
        )
        return {str(r[0]): bool(r[1]) for r in self.rows(query, (self.schema, table, table))}


@pytest.fixture
def database(engine: str, target: str) -> Database:
    return Database(engine, target)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def queue(target: str, registry: Registry) -> Iterator[Queue]:
    q = Queue(target, registry=registry, retry_backoff=0.0)
    yield q
    q.close()


@pytest.fixture
def clocked_queue(target: str, registry: Registry, clock: Clock) -> Iterator[Queue]:
    q = Queue(target, registry=registry, clock=clock, retry_backoff=1.0, retry_backoff_max=60.0)
    yield q
    q.close()
