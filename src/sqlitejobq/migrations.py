"""Versioned, transactional, additive schema migrations for SQLite, per namespace.

The library's own tables are created with this module (namespace ``sqlitejobq``), and an
app versions its tables the same way:

    from sqlitejobq.migrations import Migration, migrate

    MIGRATIONS = [
        Migration(1, "results table", "CREATE TABLE analysis_results (...);"),
        Migration(2, "index results by symbol",
                  "CREATE INDEX IF NOT EXISTS results_symbol ON analysis_results(symbol);"),
    ]
    migrate("jobs.db", MIGRATIONS, namespace="stock_app")

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with its
bookkeeping row, retried while the database is busy: it is applied whole or not at all.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import validation
from .errors import InvalidArgument, InvalidArgumentType, MigrationError
from .storage import (
    BusyRetry,
    LockMetrics,
    TransactionConnection,
    connect,
    is_busy,
    is_storage_fault,
    run_write,
    split_statements,
)

__all__ = [
    "AppliedMigration",
    "Migration",
    "MigrationError",
    "TransactionConnection",
    "add_column_if_missing",
    "applied_migrations",
    "create_index_if_missing",
    "migrate",
    "pending_migrations",
    "split_statements",
]

log = logging.getLogger("sqlitejobq")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS sqlitejobq_migrations (
    namespace  TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at REAL    NOT NULL,
    PRIMARY KEY (namespace, version)
)
"""
_HAS_BOOKKEEPING = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlitejobq_migrations'"
)
_APPLIED = """
SELECT version, name, checksum, applied_at FROM sqlitejobq_migrations
WHERE namespace = ? ORDER BY version
"""
_IS_APPLIED = "SELECT checksum FROM sqlitejobq_migrations WHERE namespace = ? AND version = ?"
_RECORD = """
INSERT INTO sqlitejobq_migrations (namespace, version, name, checksum, applied_at)
VALUES (?, ?, ?, ?, ?)
"""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

MigrationBody = str | Callable[[TransactionConnection], None]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: a version, a name, and SQL text or a callable taking a connection.

    SQL text may hold several statements (triggers included); they run one by one inside
    the migration's transaction, never through ``executescript`` (which commits on its own).
    """

    version: int
    name: str
    sql: MigrationBody

    def __post_init__(self) -> None:
        validation.integer(self.version, "migration version", minimum=1)
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgument(
                f"migration {self.version} needs a non-empty name, got {self.name!r}"
            )
        if isinstance(self.sql, str):
            if not split_statements(self.sql):
                raise InvalidArgument(f"migration {self.version} ({self.name}) has no SQL")
        elif not callable(self.sql):
            raise InvalidArgumentType(
                f"migration {self.version} sql must be SQL text or a callable, "
                f"got {type(self.sql).__name__}"
            )

    @property
    def checksum(self) -> str:
        """A digest of the migration's text: an applied migration must never change."""
        if isinstance(self.sql, str):
            text = "\n".join(line.rstrip() for line in self.sql.strip().splitlines())
        else:
            try:
                text = inspect.getsource(self.sql)
            except (OSError, TypeError):
                text = f"{self.sql.__module__}.{self.sql.__qualname__}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A migration recorded as applied in the database."""

    version: int
    name: str
    checksum: str
    applied_at: float


def _check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise InvalidArgument(f"{what} must be a plain SQL identifier, got {value!r}")
    return value


def _quote(identifier: str) -> str:
    return '"' + identifier + '"'


def add_column_if_missing(conn: Any, table: str, column: str, definition: str) -> bool:
    """``ALTER TABLE table ADD COLUMN column definition`` unless the column exists.

    Safe to run twice. Returns True if the column was added.
    """
    _check_identifier(table, "table")
    _check_identifier(column, "column")
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")]
    if not columns:
        raise MigrationError(f"cannot add column {column!r}: table {table!r} does not exist")
    if column in columns:
        return False
    conn.execute(f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(column)} {definition}")
    return True


def create_index_if_missing(
    conn: Any,
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    unique: bool = False,
    where: str | None = None,
) -> bool:
    """Create an index unless one of that name exists. Returns True if it was created.

    ``columns`` are column names, optionally followed by ``ASC``/``DESC``.
    """
    _check_identifier(name, "index name")
    _check_identifier(table, "table")
    if not columns:
        raise InvalidArgument(f"index {name!r} needs at least one column")
    parts = []
    for column in columns:
        words = column.split()
        if len(words) == 2 and words[1].upper() in ("ASC", "DESC"):
            parts.append(f"{_quote(_check_identifier(words[0], 'column'))} {words[1].upper()}")
        elif len(words) == 1:
            parts.append(_quote(_check_identifier(words[0], "column")))
        else:
            raise InvalidArgument(f"index column must be 'name' or 'name ASC|DESC', got {column!r}")
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
    ).fetchone()
    if exists:
        return False
    kind = "UNIQUE INDEX" if unique else "INDEX"
    clause = f" WHERE {where}" if where else ""
    conn.execute(f"CREATE {kind} {_quote(name)} ON {_quote(table)} ({', '.join(parts)}){clause}")
    return True


def applied_migrations(db: str | os.PathLike[str] | sqlite3.Connection,
                       namespace: str = "app") -> list[AppliedMigration]:  # fmt: skip
    """The migrations recorded as applied in ``namespace``, oldest first."""
    validation.name(namespace, "namespace")
    with _Connection(db) as conn:
        return _applied(conn, namespace)


def _applied(conn: sqlite3.Connection, namespace: str) -> list[AppliedMigration]:
    if conn.execute(_HAS_BOOKKEEPING).fetchone() is None:
        return []
    return [AppliedMigration(*row) for row in conn.execute(_APPLIED, (namespace,))]


def migrate(
    db: str | os.PathLike[str] | sqlite3.Connection,
    migrations: Sequence[Migration],
    namespace: str = "app",
    *,
    dry_run: bool = False,
    backup: str | os.PathLike[str] | None = None,
    retry_timeout: float = 30.0,
) -> list[int]:
    """Apply the migrations of ``namespace`` that the database lacks, in version order.

    Returns the versions applied (with ``dry_run``, those that would be). An applied
    migration whose text changed, or an applied version this code does not know, is
    refused with MigrationError before anything runs. With ``backup``, the database is
    first copied there with SQLite's online backup API (only when something will run).
    """
    validation.name(namespace, "namespace")
    ordered = _check_migrations(migrations, namespace)
    with _Connection(db) as conn:
        if conn.in_transaction:
            raise MigrationError(
                "migrate() needs a connection with no open transaction; commit or roll back first"
            )
        retry = BusyRetry(retry_timeout, LockMetrics(), _database_name(conn))
        pending = retry(lambda: _pending(conn, ordered, namespace), "migrate", conn)
        if dry_run or not pending:
            for migration in pending:
                log.info("migration %s:%d %s would run", namespace, migration.version,
                         migration.name)  # fmt: skip
            return [m.version for m in pending]
        if backup is not None:
            _backup(conn, backup)
        run_write(conn, lambda c: c.execute(_BOOKKEEPING), retry=retry, what="migrate")
        applied = []
        for migration in pending:
            ran = run_write(
                conn,
                lambda c, m=migration: _apply(c, m, namespace),  # type: ignore[misc]
                retry=retry,
                what=f"migration {namespace}:{migration.version}",
            )
            if ran:
                applied.append(migration.version)
                log.info("migration %s:%d %s applied", namespace, migration.version,
                         migration.name)  # fmt: skip
        return applied


def _check_migrations(migrations: Sequence[Migration], namespace: str) -> list[Migration]:
    if isinstance(migrations, Migration) or not isinstance(migrations, Sequence | Iterable):
        raise InvalidArgumentType("migrations must be a list of Migration")
    ordered = list(migrations)
    for migration in ordered:
        if not isinstance(migration, Migration):
            raise InvalidArgumentType(
                f"migrations must be Migration values, got {type(migration).__name__}"
            )
    versions = [m.version for m in ordered]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise MigrationError(f"namespace {namespace!r} lists version(s) {duplicates} twice")
    return sorted(ordered, key=lambda m: m.version)


def pending_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Migration], namespace: str
) -> list[Migration]:
    """The migrations of ``namespace`` the database lacks, in order; reads only.

    MigrationError if the database records a version this code does not know, or one whose
    text changed: such a database is refused before anything is written to it.
    """
    return _pending(conn, _check_migrations(migrations, namespace), namespace)


def _pending(conn: sqlite3.Connection, ordered: list[Migration], namespace: str) -> list[Migration]:
    known = {m.version: m for m in ordered}
    applied = _applied(conn, namespace)
    for record in applied:
        migration = known.get(record.version)
        if migration is None:
            raise MigrationError(
                f"database has migration {namespace}:{record.version} ({record.name}) applied, "
                f"which this code does not know (known: {sorted(known) or 'none'}); is the "
                f"database newer than the code?"
            )
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"migration {namespace}:{record.version} ({record.name}) was applied with "
                f"different text; applied migrations must not change — add a new version instead"
            )
    done = {record.version for record in applied}
    return [m for m in ordered if m.version not in done]


def _apply(conn: sqlite3.Connection, migration: Migration, namespace: str) -> bool:
    row = conn.execute(_IS_APPLIED, (namespace, migration.version)).fetchone()
    if row is not None:
        if row[0] != migration.checksum:
            raise MigrationError(
                f"migration {namespace}:{migration.version} was applied concurrently with "
                f"different text"
            )
        return False
    wrapped = TransactionConnection(conn, MigrationError, "a migration")
    try:
        if isinstance(migration.sql, str):
            wrapped.executescript(migration.sql)
        else:
            migration.sql(wrapped)
    except MigrationError:
        raise
    except sqlite3.Error as exc:
        if is_busy(exc) or is_storage_fault(exc):
            raise
        raise MigrationError(
            f"migration {namespace}:{migration.version} ({migration.name}) failed: {exc}"
        ) from exc
    if not conn.in_transaction:
        raise MigrationError(f"migration {namespace}:{migration.version} ended its own transaction")
    conn.execute(
        _RECORD, (namespace, migration.version, migration.name, migration.checksum, time.time())
    )
    return True


def _database_name(conn: sqlite3.Connection) -> str:
    main = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    return main[0] if main and main[0] else "the database"


def _backup(conn: sqlite3.Connection, target: str | os.PathLike[str]) -> None:
    path = os.fspath(target)
    main = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    if main and main[0] and os.path.exists(path) and os.path.samefile(main[0], path):
        raise MigrationError(f"backup path {path!r} is the database itself")
    destination = sqlite3.connect(path)
    try:
        conn.backup(destination)
    finally:
        destination.close()
    log.info("database backed up to %s before migrating", path)


class _Connection:
    """A connection for the duration of a call: the caller's own, or one opened on a path."""

    def __init__(self, db: str | os.PathLike[str] | sqlite3.Connection) -> None:
        self._given = db if isinstance(db, sqlite3.Connection) else None
        if self._given is None:
            if not isinstance(db, str | os.PathLike):
                raise InvalidArgumentType(
                    f"db must be a path or a sqlite3.Connection, got {type(db).__name__}"
                )
            self._path = os.fspath(db)
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        if self._given is not None:
            return self._given
        self._conn = connect(self._path)
        return self._conn

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
