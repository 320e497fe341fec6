"""Applying migrations to a SQLite database: each in its own ``BEGIN IMMEDIATE`` transaction
with its bookkeeping row, retried while the file is busy, so it is applied whole or not at
all, once, whichever process gets there first."""

from __future__ import annotations

import logging
import os
import sqlite3
import time

from ...errors import InvalidArgumentType, MigrationError
from ...migrations.values import (
    AppliedMigration,
    Migration,
    applied_meanwhile,
    pending,
    run_pending,
)
from ..shared import LockMetrics
from .connection import (
    BusyRetry,
    TransactionConnection,
    connect,
    is_busy,
    is_storage_fault,
    run_write,
)

log = logging.getLogger("sqlitejobq")

BOOKKEEPING = """
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


def applied(conn: sqlite3.Connection, namespace: str) -> list[AppliedMigration]:
    """The migrations recorded as applied in ``namespace``, oldest first; reads only."""
    if conn.execute(_HAS_BOOKKEEPING).fetchone() is None:
        return []
    return [AppliedMigration(*row) for row in conn.execute(_APPLIED, (namespace,))]


class SqliteMigrationRunner:
    """Applies migrations to one SQLite database: the caller's connection, or one opened on
    a path for the runner's life."""

    def __init__(self, db: str | os.PathLike[str] | sqlite3.Connection, retry_timeout: float):
        if isinstance(db, sqlite3.Connection):
            self._conn, self._owned = db, False
        elif isinstance(db, str | os.PathLike):
            self._conn, self._owned = connect(os.fspath(db)), True
        else:
            raise InvalidArgumentType(
                f"db must be a path or a sqlite3.Connection, got {type(db).__name__}"
            )
        self._retry = BusyRetry(retry_timeout, LockMetrics(), _database_name(self._conn))

    def applied(self, namespace: str) -> list[AppliedMigration]:
        """The migrations recorded as applied in ``namespace``, oldest first."""
        return self._retry(lambda: applied(self._conn, namespace), "migrations", self._conn)

    def apply(
        self, migrations: list[Migration], namespace: str, *, dry_run: bool, backup: str | None
    ) -> list[int]:
        """Apply the missing migrations in order; the versions applied (or that would be)."""
        conn = self._conn
        if conn.in_transaction:
            raise MigrationError(
                "migrate() needs a connection with no open transaction; commit or roll back first"
            )
        todo = pending(migrations, self.applied(namespace), namespace)

        def prepare() -> None:
            if backup is not None:
                _backup(conn, backup)
            run_write(conn, lambda c: c.execute(BOOKKEEPING), retry=self._retry, what="migrate")

        def apply(migration: Migration) -> bool:
            ran: bool = run_write(
                conn,
                lambda c: _apply(c, migration, namespace),
                retry=self._retry,
                what=f"migration {namespace}:{migration.version}",
            )
            return ran

        return run_pending(todo, namespace, dry_run=dry_run, apply=apply, before=prepare)

    def close(self) -> None:
        """Close the connection the runner opened (never the caller's)."""
        if self._owned:
            self._conn.close()


def _apply(conn: sqlite3.Connection, migration: Migration, namespace: str) -> bool:
    row = conn.execute(_IS_APPLIED, (namespace, migration.version)).fetchone()
    if applied_meanwhile(None if row is None else row[0], migration, namespace):
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
