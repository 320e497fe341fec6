"""The SQLite backend: one file in WAL mode, one connection per thread, every statement of
the engine, and the write path that retries while the file is busy."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ... import validation
from ...errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    InvalidArgumentType,
    NotAQueueDatabase,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
)
from ...migrations.values import pending
from ..base import Capabilities
from ..shared import LockMetrics, options_of
from ..store import Store
from . import queries as sql
from . import schema
from .connection import (
    SYNCHRONOUS_LEVELS,
    BusyRetry,
    connect,
    is_busy,
    run_read,
    run_write,
    storage_error,
)
from .filesystem import check_database_file, check_filesystem
from .migrate import SqliteMigrationRunner, applied
from .statements import SqliteStatements
from .wakeup import FileWaker, SqliteWaker, inotify_available

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """Connection and retry settings of one SQLite queue."""

    synchronous: str = "NORMAL"
    busy_timeout: float = 5.0
    retry_timeout: float = 30.0
    journal_size_limit: int = 64 * 1024 * 1024
    allow_network_filesystem: bool = False

    @classmethod
    def checked(cls, retry_timeout: float, options: dict[str, Any]) -> Settings:
        """The settings from the queue's SQLite options, each validated."""
        options_of("SQLite", options, OPTIONS)
        return cls(
            synchronous=validation.choice(
                options.get("synchronous", "NORMAL"), "synchronous", SYNCHRONOUS_LEVELS
            ),
            busy_timeout=validation.seconds(options.get("busy_timeout", 5.0), "busy_timeout"),
            retry_timeout=retry_timeout,
            journal_size_limit=validation.integer(
                options.get("journal_size_limit", 64 * 1024 * 1024),
                "journal_size_limit",
                minimum=-1,
            ),
            allow_network_filesystem=bool(options.get("allow_network_filesystem", False)),
        )


#: The options a SQLite queue takes (``Queue("jobs.db", synchronous="FULL")``).
OPTIONS = ("synchronous", "busy_timeout", "journal_size_limit", "allow_network_filesystem")

# --- one process's connections --------------------------------------------------------------

_fork_generation = 0
_inherited: list[Any] = []  # connections a forked child must never touch nor close


def _after_fork_in_child() -> None:
    global _fork_generation, _shared_lock
    _fork_generation += 1
    # a lock held by another thread at the fork stays held forever in the child: start anew
    _shared_lock = threading.Lock()
    _shared_by_file.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Shared:
    """What every queue on one file in this process shares: the writer lock, the waker."""

    def __init__(self, path: str) -> None:
        self.write_lock = threading.Lock()
        self.waker = FileWaker(path)


_shared_by_file: dict[str, _Shared] = {}
_shared_lock = threading.Lock()


def shared_for(path: str) -> _Shared:
    """What every queue of this process on the file at ``path`` shares."""
    key = os.path.realpath(path)
    with _shared_lock:
        shared = _shared_by_file.get(key)
        if shared is None:
            shared = _shared_by_file[key] = _Shared(key)
        return shared


class _Holder:
    """A connection held by one thread; a weak set of holders lets close() reach them all."""

    __slots__ = ("__weakref__", "conn", "generation")

    def __init__(self, conn: sqlite3.Connection, generation: int) -> None:
        self.conn = conn
        self.generation = generation


class SqliteBackend(Store[sqlite3.Connection]):
    """The SQLite engine: one connection per thread, opened again after a fork."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: Settings,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise SqliteJobQError(
                f"a queue needs a database file shared by its workers, got {self.path!r}"
            )
        self.target = self.path
        self.settings = settings
        self.clock = clock or time.time
        self.capabilities = Capabilities(
            is_file=True, database_clock=False, listener=inotify_available()
        )
        parent = Path(self.path).resolve().parent
        if not parent.is_dir():
            raise DatabaseUnavailable(
                f"directory {parent} of database {self.path} does not exist; create it first"
            )
        check_filesystem(self.path, allow_network=settings.allow_network_filesystem)
        check_database_file(self.path)
        if not os.access(parent, os.W_OK) or (
            os.path.exists(self.path) and not os.access(self.path, os.W_OK)
        ):
            raise ReadOnlyDatabase(
                f"database {self.path} is read-only: sqlitejobq writes the file, its -wal and "
                f"-shm files and their directory {parent}; check permissions and the mount"
            )
        self.metrics = LockMetrics()
        self.busy_retry = BusyRetry(settings.retry_timeout, self.metrics, self.path)
        self._shared_of = (_fork_generation, shared_for(self.path))
        self._local = threading.local()
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._holders_lock = threading.Lock()
        self._closed = False
        self.waker = SqliteWaker(lambda: self._shared.waker, self.data_version)
        self.sql = SqliteStatements()

    @classmethod
    def create(
        cls,
        target: str | os.PathLike[str],
        *,
        retry_timeout: float,
        clock: Callable[[], float] | None,
        options: dict[str, Any],
    ) -> SqliteBackend:
        """The backend for a file path and the queue's SQLite options."""
        if not isinstance(target, str | os.PathLike):
            raise InvalidArgumentType(
                f"a queue's target must be a SQLite file path or a postgresql:// URL, got "
                f"{type(target).__name__}: {target!r}"
            )
        return cls(target, Settings.checked(retry_timeout, options), clock)

    @property
    def _shared(self) -> _Shared:
        generation, shared = self._shared_of
        if generation != _fork_generation:
            self._shared_of = (_fork_generation, shared := shared_for(self.path))
        return shared

    def now(self) -> float:
        """The time that stamps leases and due times: the queue's clock."""
        return self.clock()

    # --- connections ------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use and again after a fork."""
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is not None and holder.generation == _fork_generation:
            return holder.conn
        if self._closed:
            raise QueueClosed(f"the queue on {self.path} is closed")
        if holder is not None:
            _inherited.append(holder.conn)
        conn = connect(
            self.path,
            synchronous=self.settings.synchronous,
            busy_timeout=min(self.settings.busy_timeout, self.settings.retry_timeout),
            journal_size_limit=self.settings.journal_size_limit,
        )
        holder = _Holder(conn, _fork_generation)
        self._local.holder = holder
        with self._holders_lock:
            self._holders.add(holder)
        return conn

    def open(self) -> None:
        """Refuse a file that is not the library's (changing nothing), then switch it to WAL
        and create or update the library's own tables."""
        self._refuse_foreign_file()
        self._enable_wal()
        runner = SqliteMigrationRunner(self.connection(), self.settings.retry_timeout)
        runner.apply(schema.MIGRATIONS, schema.NAMESPACE, dry_run=False, backup=None)

    def _refuse_foreign_file(self) -> None:
        """Read the file's schema (and change nothing) before the first write: tables named
        like the library's that it did not create, or a library schema newer than this
        code, are refused while the file is still exactly as it was."""
        conn = self.connection()

        def inspect() -> None:
            foreign = foreign_tables(conn)
            if foreign:
                raise NotAQueueDatabase(
                    f"{self.path} holds table(s) {', '.join(foreign)} that sqlitejobq did not "
                    f"create (no migration of the library is recorded); use another file, or "
                    f"rename those tables"
                )
            pending(schema.MIGRATIONS, applied(conn, schema.NAMESPACE), schema.NAMESPACE)

        self.busy_retry(inspect, "open", conn)

    def _enable_wal(self) -> None:
        conn = self.connection()
        mode = self.busy_retry(
            lambda: str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]), "enable WAL", conn
        )
        if mode.lower() != "wal":
            raise SqliteJobQError(
                f"database {self.path} could not use WAL journaling (got {mode!r}); "
                f"sqlitejobq needs WAL for concurrent readers and writers"
            )

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def close(self) -> None:
        """Close every connection this queue opened in this process."""
        self._closed = True
        with self._holders_lock:
            holders = list(self._holders)
            self._holders.clear()
        for holder in holders:
            if holder.generation == _fork_generation:
                holder.conn.close()
        self._local = threading.local()

    # --- the write and read paths -------------------------------------------------------

    def write(self, body: Callable[[sqlite3.Connection], T], what: str = "write") -> T:
        """Run ``body`` in one BEGIN IMMEDIATE transaction, retried while the file is busy."""
        return run_write(
            self.connection(), body, retry=self.busy_retry, lock=self._shared.write_lock, what=what
        )

    def read(self, body: Callable[[sqlite3.Connection], T], what: str = "read") -> T:
        """Run several reads in one consistent snapshot."""
        return run_read(self.connection(), body, retry=self.busy_retry)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the file: a cheap "anything new?"."""
        conn = self.connection()
        row = self.busy_retry(lambda: conn.execute(sql.DATA_VERSION).fetchone(), "poll", conn)
        return int(row[0])

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database and truncate it, if no reader is in the way."""
        conn = self.connection()
        row = self.busy_retry(
            lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(), "checkpoint", conn
        )
        return int(row[0]), int(row[1]), int(row[2])

    # --- what the store runs its statements with -----------------------------------------

    def look(self, body: Callable[[sqlite3.Connection], T], what: str = "read") -> T:
        """Run reads in autocommit: each statement its own snapshot, no BEGIN to pay."""
        conn = self.connection()
        return self.busy_retry(lambda: body(conn), what, conn)

    def in_caller_transaction(self, conn: Any, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in the caller's open transaction on the queue's file."""
        return _in_caller_transaction(conn, self.path, body)

    def bound_now(self) -> float:
        """SQLite binds the queue's clock."""
        return self.clock()


# --- helpers ---------------------------------------------------------------------------------


def _in_caller_transaction(conn: Any, path: str, body: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``body`` on the caller's connection, inside the caller's own transaction.

    The caller owns the transaction, so it is not retried here: a busy error becomes
    DatabaseBusy and the caller decides whether to roll back and try again.
    """
    if not isinstance(conn, sqlite3.Connection):
        raise InvalidArgumentType(
            f"connection must be a sqlite3.Connection on the queue's file, got "
            f"{type(conn).__name__}"
        )
    if not conn.in_transaction and conn.isolation_level is None:
        raise SqliteJobQError(
            "connection is in autocommit mode with no open transaction: the job would be "
            "committed on its own; run BEGIN (or BEGIN IMMEDIATE) first"
        )
    files = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    if not files or not files[0] or not os.path.samefile(files[0], path):
        raise SqliteJobQError(
            f"connection is open on {files[0] if files else '?'!r}, not on the queue's "
            f"database {path!r}; a job can only join a transaction on the same file"
        )
    try:
        return body(conn)
    except (sqlite3.Error, UnicodeError) as exc:
        if is_busy(exc):
            raise DatabaseBusy(
                f"enqueue inside the caller's transaction: database locked ({exc}); "
                f"roll back and retry the transaction, or open it with BEGIN IMMEDIATE"
            ) from exc
        raise storage_error(exc, path, "enqueue inside the caller's transaction") from exc


_LIBRARY_TABLES = r"""
SELECT name FROM sqlite_master
WHERE type = 'table' AND name LIKE 'sqlitejobq\_%' ESCAPE '\' ORDER BY name
"""


def foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables named like the library's that the library did not create: they exist, but no
    migration of the library's namespace is recorded. Reads only."""
    names = [row[0] for row in conn.execute(_LIBRARY_TABLES)]
    own = [name for name in names if name != "sqlitejobq_migrations"]
    if not own:
        return []
    if "sqlitejobq_migrations" in names:
        try:
            recorded = conn.execute(
                "SELECT count(*) FROM sqlitejobq_migrations WHERE namespace = 'sqlitejobq'"
            ).fetchone()[0]
        except sqlite3.OperationalError:
            return names  # a table of that name with other columns: not ours either
        if recorded:
            return []
    return own
