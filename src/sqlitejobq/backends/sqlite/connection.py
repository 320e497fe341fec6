"""SQLite connections: pragmas, the one write path, the busy-retry policy, and what its
errors mean.

Every write goes through ``run_write``: it opens ``BEGIN IMMEDIATE`` (a deferred
transaction that later upgrades to a write lock fails at once with ``database is
locked``, busy timeout or not), commits or rolls back, and is retried as a whole by
``BusyRetry`` while SQLite reports SQLITE_BUSY or SQLITE_LOCKED. Every other error becomes
the library error for its result code (``storage_error``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ...errors import (
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    DiskFull,
    NotAQueueDatabase,
    PayloadError,
    ReadOnlyDatabase,
    SqliteJobQError,
    StorageError,
)
from ..shared import LentConnection, LockMetrics, RetryPolicy

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
#: Primary result codes of a failing store (permission, memory, read-only, I/O, corrupt,
#: full, cannot open, lock protocol, no large files, not a database), not of bad SQL.
_FAULTS = frozenset({3, 7, 8, 10, 11, 13, 14, 15, 22, 26})
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite saying another connection holds the lock."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "database is locked" in text or "is busy" in text or "table is locked" in text


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_storage_fault(exc: BaseException) -> bool:
    """True when ``exc`` is the storage failing (full, read-only, I/O, corrupt, cannot open),
    as opposed to a statement being wrong: such a fault says nothing about the SQL."""
    return isinstance(exc, sqlite3.Error) and _primary_code(exc) in _FAULTS


def storage_error(exc: BaseException, path: str, what: str) -> SqliteJobQError:
    """The library error, with what to do about it, for an error the sqlite3 module raised.

    Every fault of the engine reaches callers as one of these, never as a bare sqlite3 error.
    """
    if isinstance(exc, SqliteJobQError):
        return exc
    if isinstance(exc, UnicodeError):
        return PayloadError(f"{what}: text is not valid Unicode and cannot be stored ({exc})")
    code = _primary_code(exc)
    text = str(exc)
    if code == _SQLITE_FULL or "disk is full" in text:
        return DiskFull(
            f"{what}: disk full: the file system holding {path} has no space left (or the "
            f"database reached its size limit); nothing of this write was stored. Free space "
            f"(purge finished jobs, checkpoint) and try again"
        )
    if code == _SQLITE_READONLY or "readonly database" in text:
        return ReadOnlyDatabase(
            f"{what}: database {path} is read-only ({text}); sqlitejobq writes the file, its "
            f"-wal and -shm files and their directory: check permissions and the mount"
        )
    if code == _SQLITE_NOTADB or "not a database" in text:
        return NotAQueueDatabase(
            f"{path} is not a SQLite database ({text}); point at the queue's own file"
        )
    if code == _SQLITE_CORRUPT or "malformed" in text:
        return CorruptDatabase(
            f"{what}: database {path} is corrupt ({text}); restore it from a backup, or "
            f"recover what is left with: sqlite3 {path} .recover"
        )
    if code == _SQLITE_CANTOPEN or "unable to open" in text:
        return DatabaseUnavailable(
            f"{what}: cannot open database {path} ({text}); check that its directory exists "
            f"and that this user may read and write there"
        )
    if code in _FAULTS:
        return DatabaseUnavailable(
            f"{what}: the database {path} failed ({text}); check the disk and the file system"
        )
    return StorageError(f"{what} failed on {path}: {text}")


class BusyRetry(RetryPolicy):
    """The SQLite retry policy: on busy/locked only, full-jitter exponential waits, bounded.

    When the bound is spent the caller gets DatabaseBusy within ``timeout`` of the call:
    given the connection, SQLite's own busy wait of each retry is cut to the time left.
    """

    def __init__(self, timeout: float, metrics: LockMetrics, label: str = "the database") -> None:
        super().__init__(
            timeout,
            metrics,
            transient=is_busy,
            translate=lambda exc, what: storage_error(exc, label, what),
            engine_errors=(sqlite3.Error, UnicodeError),
            exhausted="the database stayed locked by other connections",
        )
        self.label = label

    def waits_for(
        self, conn: sqlite3.Connection | None
    ) -> tuple[Callable[[float], None] | None, Callable[[], None] | None]:
        """Cut SQLite's busy wait on ``conn`` to the time left, and restore it after."""
        if conn is None:
            return None, None
        configured: list[int] = []

        def cut_busy_wait(left: float) -> None:
            if not configured:
                configured.append(conn.execute("PRAGMA busy_timeout").fetchone()[0])
            if left < self.timeout:
                conn.execute(f"PRAGMA busy_timeout = {max(0, int(left * 1000))}")

        def restore() -> None:
            if configured:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA busy_timeout = {int(configured[0])}")

        return cut_busy_wait, restore


def run_write(
    conn: sqlite3.Connection,
    body: Callable[[sqlite3.Connection], T],
    *,
    retry: BusyRetry,
    lock: threading.Lock | None = None,
    what: str = "write",
) -> T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction, retried as a whole while busy.

    ``lock`` serializes the writers of one process so that its threads queue in Python
    instead of spinning in SQLite's busy handler. ``body`` may run more than once, so it
    must have no effect outside the transaction.
    """
    deadline = time.monotonic() + retry.timeout

    def attempt() -> T:
        if lock is not None and not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DatabaseBusy(
                f"{what}: other threads of this process held the write lock "
                f"for more than {retry.timeout:g}s"
            )
        try:
            started = time.perf_counter()
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                retry.metrics.record_write(time.perf_counter() - started)
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
            return result
        finally:
            if lock is not None:
                lock.release()

    return retry(attempt, what, conn)


def _roll_back(conn: sqlite3.Connection) -> None:
    """Undo an open transaction; an error here must not hide the one that caused it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed after an error: %s", exc)


def run_read(
    conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T], *, retry: BusyRetry
) -> T:
    """Run several reads in one snapshot (a deferred transaction that never writes)."""

    def attempt() -> T:
        conn.execute("BEGIN")
        try:
            return body(conn)
        finally:
            _roll_back(conn)

    return retry(attempt, "read", conn)


_COLUMNS = "SELECT name FROM pragma_table_info(?)"
_INDEX_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"
_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|COMMIT|END|ROLLBACK|VACUUM|ATTACH|DETACH)\b", re.IGNORECASE
)
_LEADING_COMMENTS = re.compile(r"^(\s*(--[^\n]*(\n|$)|/\*.*?\*/))*", re.DOTALL)


def split_statements(script: str) -> list[str]:
    """Split SQL text into complete statements (trigger bodies and strings kept whole)."""
    statements, start = [], 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statement = script[start : index + 1].strip()
            if _LEADING_COMMENTS.sub("", statement).strip(" \t\n;"):
                statements.append(statement)
            start = index + 1
    rest = script[start:].strip()
    if _LEADING_COMMENTS.sub("", rest).strip():
        statements.append(rest)
    return statements


class TransactionConnection(LentConnection):
    """A connection lent to code running inside sqlitejobq's transaction (a migration, an
    on_complete hook): it can read and write, but not end or escape the transaction.

    ``executescript`` runs its statements one by one inside the transaction (the sqlite3
    module's own would commit first); ``commit``, ``rollback`` and statements that open,
    end or leave the transaction are refused. Everything else is the sqlite3 connection's.
    """

    #: The SQL dialect, for code that serves more than one engine.
    dialect = "sqlite"

    _conn: sqlite3.Connection

    def column_names(self, table: str) -> list[str]:
        """The columns of ``table`` (empty if there is no such table)."""
        return [row[0] for row in self._conn.execute(_COLUMNS, (table,))]

    def index_exists(self, name: str) -> bool:
        """True if an index of that name exists."""
        return self._conn.execute(_INDEX_EXISTS, (name,)).fetchone() is not None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run one statement inside the transaction; transaction control is refused."""
        self._refuse_transaction_control(sql)
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        """Run one statement per parameter set inside the transaction."""
        self._refuse_transaction_control(sql)
        return self._conn.executemany(sql, parameters)

    def executescript(self, script: str, /) -> None:
        """Run the script's statements one by one, inside the transaction."""
        for statement in split_statements(script):
            self.execute(statement)

    def _refuse_transaction_control(self, statement: str) -> None:
        match = _TRANSACTION_CONTROL.match(_LEADING_COMMENTS.sub("", statement))
        if match:
            raise self._error(
                f"{match.group(1).upper()} is not allowed in {self._owner}: it already runs "
                f"in a transaction of its own"
            )


def connect(
    path: str,
    *,
    synchronous: str = "NORMAL",
    busy_timeout: float = 5.0,
    journal_size_limit: int = 64 * 1024 * 1024,
) -> sqlite3.Connection:
    """A connection in autocommit mode (no implicit transactions) with sqlitejobq's pragmas.

    None of the pragmas writes to the file: opening never changes a database.
    """
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA journal_size_limit = {int(journal_size_limit)}")
        conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.Error as exc:
        raise storage_error(exc, path, "open") from exc
    return conn
