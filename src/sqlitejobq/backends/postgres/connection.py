"""PostgreSQL connections: a pool per process, the one transaction path, the retry policy,
and what the server's errors mean.

Every write runs in one transaction on a connection from the pool, retried as a whole by
the engine's ``RetryPolicy`` on the faults that pass: a serialization failure, a deadlock,
a lock wait past ``lock_timeout``, a connection lost before the commit was sent. A server
that is down or refuses connections gives ``DatabaseUnavailable`` within the bound.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ... import validation
from ...errors import (
    DatabaseUnavailable,
    DiskFull,
    InvalidArgument,
    PayloadError,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
    StorageError,
)
from .. import redact_target
from ..base import LockMetrics, RetryPolicy, options_of
from . import queries as sql

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")

#: The options a PostgreSQL queue takes (``Queue(url, schema="jobs", pool_size=4)``).
OPTIONS = (
    "schema", "pool_size", "poll_only", "connect_timeout", "lock_timeout", "notify_debounce",
)  # fmt: skip
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: SQLSTATEs of faults that pass: retried as a whole transaction.
_RETRY_STATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57014",  # query_canceled (statement_timeout)
    "57P01", "57P02", "57P03",  # admin_shutdown, crash_shutdown, cannot_connect_now
    "53300",  # too_many_connections
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class PgSettings:
    """Connection and retry settings of one PostgreSQL queue."""

    schema: str = "public"
    pool_size: int = 8
    poll_only: bool = False
    connect_timeout: float = 5.0
    lock_timeout: float = 5.0
    notify_debounce: float = 0.005
    retry_timeout: float = 30.0

    @classmethod
    def checked(cls, retry_timeout: float, options: dict[str, Any]) -> PgSettings:
        """The settings from the queue's PostgreSQL options, each validated."""
        options_of("PostgreSQL", options, OPTIONS)
        schema = options.get("schema", "public")
        if not isinstance(schema, str) or not _SCHEMA.match(schema):
            raise InvalidArgument(
                f"schema must be a lower-case SQL identifier (letters, digits, _), got {schema!r}"
            )
        return cls(
            schema=schema,
            pool_size=validation.integer(options.get("pool_size", 8), "pool_size", minimum=1),
            poll_only=bool(options.get("poll_only", False)),
            connect_timeout=validation.seconds(
                options.get("connect_timeout", 5.0), "connect_timeout", positive=True
            ),
            lock_timeout=validation.seconds(
                options.get("lock_timeout", 5.0), "lock_timeout", positive=True
            ),
            notify_debounce=validation.seconds(
                options.get("notify_debounce", 0.005), "notify_debounce"
            ),
            retry_timeout=retry_timeout,
        )


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without its ``schema`` query parameter (libpq does not know it), and the
    schema it names (None if it names none)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = [value for key, value in query if key == "schema"]
    if not schema:
        return url, None
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema[-1]


def redact(url: str) -> str:
    """The URL without its credentials, for messages and ``Queue.target``."""
    return redact_target(url)


def is_transient(exc: BaseException) -> bool:
    """True for a fault that passes: retry the whole transaction."""
    if isinstance(exc, _CommitUnknown):
        return False
    if isinstance(exc, PoolTimeout):
        return True
    state = getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    if state in _RETRY_STATES or (state or "").startswith("08"):  # connection exceptions
        return True
    # a connection that broke (server restart, pg_terminate_backend) has no SQLSTATE
    return isinstance(exc, psycopg.OperationalError) and state is None


class _CommitUnknown(psycopg.OperationalError):
    """The connection broke while the commit was in flight: it may or may not have happened."""


def server_error(exc: BaseException, target: str, what: str) -> SqliteJobQError:
    """The library error, with what to do about it, for an error psycopg raised."""
    if isinstance(exc, SqliteJobQError):
        return exc
    state = getattr(getattr(exc, "diag", None), "sqlstate", None) or ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, _CommitUnknown):
        return DatabaseUnavailable(
            f"{what}: the connection to {target} broke while the commit was in flight, so it "
            f"may or may not have been applied ({text}); check before doing it again"
        )
    if isinstance(exc, PoolTimeout) or (isinstance(exc, psycopg.OperationalError) and not state):
        return DatabaseUnavailable(
            f"{what}: cannot reach the PostgreSQL server at {target} ({text}); check that it "
            f"runs and accepts connections, and the URL"
        )
    if state == "53100":
        return DiskFull(
            f"{what}: disk full on the PostgreSQL server of {target} ({text}); nothing of this "
            f"write was stored. Free space and try again"
        )
    if state == "25006":
        return ReadOnlyDatabase(
            f"{what}: the PostgreSQL server of {target} is read-only ({text}); point at the "
            f"primary, not a standby"
        )
    if state in ("22021", "22P05", "54000"):  # bad encoding, untranslatable, too long
        return PayloadError(f"{what}: the server refused the text ({text})")
    if state.startswith("28") or state == "3D000":  # auth failed, no such database
        return DatabaseUnavailable(f"{what}: the server of {target} refused us ({text})")
    return StorageError(f"{what} failed on {target}: {text}")


def retry_policy(timeout: float, metrics: LockMetrics, target: str) -> RetryPolicy:
    """The PostgreSQL retry policy: serialization failures, deadlocks, lock timeouts and
    lost connections are retried, as a whole transaction, within ``timeout``."""
    return RetryPolicy(
        timeout,
        metrics,
        transient=is_transient,
        translate=lambda exc, what: server_error(exc, target, what),
        engine_errors=(psycopg.Error, PoolTimeout),
        exhausted="the database stayed busy (lock waits, conflicts or a lost connection)",
        unreachable=_unreachable,
    )


def _unreachable(exc: BaseException) -> bool:
    """No connection could be had: the server is down or refuses us."""
    if isinstance(exc, PoolTimeout):
        return True
    state = getattr(getattr(exc, "diag", None), "sqlstate", None)
    return isinstance(exc, psycopg.OperationalError) and not state


class Connections:
    """This process's pool of connections to one database, opened on first use and again
    after a fork (a child never touches its parent's connections, not even to close them)."""

    def __init__(self, url: str, settings: PgSettings, metrics: LockMetrics) -> None:
        self.url = url
        self.target = redact(url)
        self.settings = settings
        self.metrics = metrics
        self.retry = retry_policy(settings.retry_timeout, metrics, self.target)
        self._pool: ConnectionPool | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False

    def connect_kwargs(self) -> dict[str, Any]:
        """How every connection of the queue is opened (autocommit, timeouts)."""
        return {
            "autocommit": True,
            "connect_timeout": max(1, round(self.settings.connect_timeout)),
            "options": f"-c lock_timeout={int(self.settings.lock_timeout * 1000)} "
            f"-c search_path={self.settings.schema}",
            "application_name": "sqlitejobq",
        }

    def pool(self) -> ConnectionPool:
        """The pool of this process."""
        if self._closed:
            raise QueueClosed(f"the queue on {self.target} is closed")
        if self._pool is not None and self._pid == os.getpid():
            return self._pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                if self._pool is not None:
                    _inherited.append(self._pool)  # the parent's: never closed here
                self._pid = os.getpid()
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.settings.pool_size,
                    kwargs=self.connect_kwargs(),
                    open=True,
                    timeout=self.settings.retry_timeout,
                    name="sqlitejobq",
                )
            return self._pool

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool for the time of a block."""
        started = time.perf_counter()
        with self.pool().connection(timeout=timeout) as conn:
            self.metrics.record_write(time.perf_counter() - started)
            yield conn

    def write(self, body: Callable[[psycopg.Connection[Any]], T], what: str = "write") -> T:
        """Run ``body`` in one transaction, retried as a whole while the fault passes."""
        deadline = time.monotonic() + self.settings.retry_timeout

        def attempt() -> T:
            with self.connection(timeout=max(0.05, deadline - time.monotonic())) as conn:
                tx = conn.transaction()
                tx.__enter__()
                try:
                    left = deadline - time.monotonic()
                    if left < self.settings.lock_timeout:  # a retry near the bound: wait less
                        conn.execute(f"SET LOCAL lock_timeout = {max(1, int(left * 1000))}")
                    result = body(conn)
                except BaseException as exc:
                    tx.__exit__(type(exc), exc, exc.__traceback__)
                    raise
                try:
                    tx.__exit__(None, None, None)
                except psycopg.OperationalError as exc:
                    if conn.broken:
                        raise _CommitUnknown(str(exc)) from exc
                    raise
                return result

        return self.retry(attempt, what)

    def write_statement(
        self, statement: Any, params: dict[str, Any], what: str = "write"
    ) -> list[Any]:
        """Run one statement as its own transaction (one round trip, no BEGIN/COMMIT) and
        return its rows, retried while the fault passes."""
        deadline = time.monotonic() + self.settings.retry_timeout

        def attempt() -> list[Any]:
            with self.connection(timeout=max(0.05, deadline - time.monotonic())) as conn:
                left = deadline - time.monotonic()
                try:
                    if left < self.settings.lock_timeout:  # a retry near the bound: wait less
                        with conn.transaction():
                            conn.execute(f"SET LOCAL lock_timeout = {max(1, int(left * 1000))}")
                            return conn.execute(statement, params).fetchall()
                    return conn.execute(statement, params).fetchall()
                except psycopg.OperationalError as exc:
                    if conn.broken:  # the statement, its commit included, may have gone through
                        raise _CommitUnknown(str(exc)) from exc
                    raise

        return self.retry(attempt, what)

    def read(self, body: Callable[[psycopg.Connection[Any]], T], what: str = "read") -> T:
        """Run reads on one connection (autocommit: each statement its own snapshot)."""
        deadline = time.monotonic() + self.settings.retry_timeout

        def attempt() -> T:
            with self.connection(timeout=max(0.05, deadline - time.monotonic())) as conn:
                return body(conn)

        return self.retry(attempt, what)

    def read_one(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        """One row of one statement, or None."""
        return self.read(lambda conn: conn.execute(statement, params).fetchone())

    def read_all(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Every row of one statement."""
        return self.read(lambda conn: conn.execute(statement, params).fetchall())

    def close(self) -> None:
        """Close this process's pool (never a parent's)."""
        self._closed = True
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None


_inherited: list[Any] = []  # pools a forked child must never use nor close


_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|START|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|PREPARE|ABORT)\b", re.IGNORECASE
)
# what a scan for statements skips: comments, quoted strings and names, dollar-quoted bodies
_NOT_CODE = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$(?:[A-Za-z_]\w*)?\$).*?\1",
    re.DOTALL,
)
_BEGIN_ATOMIC = re.compile(r"\bBEGIN\s+ATOMIC\b", re.IGNORECASE)


def transaction_control(text: str) -> str | None:
    """The keyword of the first statement of ``text`` that opens, ends or leaves a
    transaction, or None. Statements sent together run in the open transaction, and a
    COMMIT among them would commit it half done."""
    atomic = False
    for statement in _NOT_CODE.sub(" ", text).split(";"):
        if atomic:  # the body of a BEGIN ATOMIC function, up to its END
            atomic = statement.strip().upper() != "END"
            continue
        atomic = bool(_BEGIN_ATOMIC.search(statement))
        match = _TRANSACTION_CONTROL.match(statement)
        if match:
            return match.group(1).upper()
    return None


class TransactionConnection:
    """A PostgreSQL connection lent to code running inside sqlitejobq's transaction (a
    migration, an on_complete hook): it can read and write, but not end the transaction.

    ``execute`` takes psycopg's placeholders (``%s``, ``%(name)s``); ``commit``,
    ``rollback`` and statements that open or end a transaction are refused. Everything else
    is the psycopg connection's.
    """

    #: The SQL dialect, for code that serves more than one engine.
    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Any], error: type[Exception], owner: str) -> None:
        self._conn = conn
        self._error = error
        self._owner = owner

    def execute(self, statement: Any, parameters: Any = None, /) -> psycopg.Cursor[Any]:
        """Run one statement inside the transaction; transaction control is refused."""
        self._refuse_transaction_control(statement)
        return self._conn.execute(statement, parameters)

    def executemany(self, statement: Any, parameters: Any, /) -> None:
        """Run one statement per parameter set inside the transaction (as on SQLite)."""
        self._refuse_transaction_control(statement)
        with self._conn.cursor() as cursor:
            cursor.executemany(statement, parameters)

    def _refuse_transaction_control(self, statement: Any) -> None:
        keyword = transaction_control(statement) if isinstance(statement, str) else None
        if keyword:
            raise self._error(
                f"{keyword} is not allowed in {self._owner}: it already runs in a "
                f"transaction of its own"
            )

    def executescript(self, script: str, /) -> None:
        """Run several statements in one go, inside the transaction."""
        self.execute(script)

    def column_names(self, table: str) -> list[str]:
        """The columns of ``table`` in the queue's schema (empty if there is no such table)."""
        rows = self._conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [row[0] for row in rows]

    def index_exists(self, name: str) -> bool:
        """True if an index of that name exists in the queue's schema."""
        row = self._conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
            (name,),
        ).fetchone()
        return row is not None

    def commit(self) -> None:
        """Refused: the transaction is sqlitejobq's, which commits it."""
        raise self._error(f"{self._owner} must not commit: it runs inside one transaction")

    def rollback(self) -> None:
        """Refused: raise an exception to undo what was written instead."""
        raise self._error(f"{self._owner} must not roll back; raise an exception instead")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def database_now(conn: psycopg.Connection[Any]) -> float:
    """The server's clock."""
    return float(conn.execute(sql.DB_NOW).fetchone()[0])  # type: ignore[index]
