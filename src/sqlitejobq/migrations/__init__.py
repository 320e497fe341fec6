"""Versioned, transactional, additive schema migrations, per namespace, on either engine.

The library's own tables are created with the same machinery (namespace ``sqlitejobq``),
and an app versions its tables the same way:

    from sqlitejobq.migrations import Migration, migrate

    MIGRATIONS = [
        Migration(1, "results table", "CREATE TABLE analysis_results (...);"),
        Migration(2, "index results by symbol",
                  "CREATE INDEX IF NOT EXISTS results_symbol ON analysis_results(symbol);"),
    ]
    migrate("jobs.db", MIGRATIONS, namespace="stock_app")          # a SQLite file
    migrate("postgresql://app@db/app", MIGRATIONS, namespace="stock_app")   # or PostgreSQL

Each migration runs in its own transaction together with its bookkeeping row, serialized
between processes (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock) and retried
while the database is busy: it is applied whole or not at all, once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import backends, validation
from ..errors import InvalidArgument, MigrationError
from .values import AppliedMigration, Migration, MigrationBody, checked_migrations

if TYPE_CHECKING:
    from ..backends import TransactionConnection, split_statements

__all__ = [
    "AppliedMigration",
    "Migration",
    "MigrationBody",
    "MigrationError",
    "TransactionConnection",
    "add_column_if_missing",
    "applied_migrations",
    "create_index_if_missing",
    "migrate",
    "split_statements",
]


def __getattr__(name: str) -> Any:
    # the SQLite connection adapter and statement splitter, named here since before the
    # engines had a package of their own; read from it when asked, so that importing this
    # module never waits on the engines' (which import the migration values above)
    if name in ("TransactionConnection", "split_statements"):
        return getattr(backends, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def migrate(
    db: Any,
    migrations: Sequence[Migration],
    namespace: str = "app",
    *,
    dry_run: bool = False,
    backup: str | None = None,
    retry_timeout: float = 30.0,
    **engine_options: Any,
) -> list[int]:
    """Apply the migrations of ``namespace`` that the database lacks, in version order.

    ``db`` is a SQLite path or ``sqlite3.Connection``, or a ``postgresql://`` URL or psycopg
    connection (``schema=`` names the PostgreSQL schema, as for ``Queue``). Returns the
    versions applied (with ``dry_run``, those that would be). An applied migration whose
    text changed, or an applied version this code does not know, is refused with
    MigrationError before anything runs. With ``backup`` (SQLite), the database is first
    copied there with SQLite's online backup API (only when something will run).
    """
    validation.name(namespace, "namespace")
    ordered = checked_migrations(migrations, namespace)
    runner = backends.migration_runner(db, retry_timeout=retry_timeout, options=engine_options)
    try:
        return runner.apply(ordered, namespace, dry_run=dry_run, backup=backup)
    finally:
        runner.close()


def applied_migrations(
    db: Any, namespace: str = "app", **engine_options: Any
) -> list[AppliedMigration]:
    """The migrations recorded as applied in ``namespace``, oldest first."""
    validation.name(namespace, "namespace")
    runner = backends.migration_runner(db, retry_timeout=30.0, options=engine_options)
    try:
        return runner.applied(namespace)
    finally:
        runner.close()


def _check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise InvalidArgument(f"{what} must be a plain SQL identifier, got {value!r}")
    return value


def _quote(identifier: str) -> str:
    return '"' + identifier + '"'


def _inspector(conn: Any) -> Any:
    """The connection a migration got (either engine's), or a plain connection of either."""
    if hasattr(conn, "column_names"):
        return conn
    return backends.engine_for(conn).transaction_connection(conn, MigrationError, "a migration")


def add_column_if_missing(conn: Any, table: str, column: str, definition: str) -> bool:
    """``ALTER TABLE table ADD COLUMN column definition`` unless the column exists.

    Safe to run twice, on either engine. Returns True if the column was added.
    """
    _check_identifier(table, "table")
    _check_identifier(column, "column")
    columns = _inspector(conn).column_names(table)
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
    if _inspector(conn).index_exists(name):
        return False
    kind = "UNIQUE INDEX" if unique else "INDEX"
    clause = f" WHERE {where}" if where else ""
    conn.execute(f"CREATE {kind} {_quote(name)} ON {_quote(table)} ({', '.join(parts)}){clause}")
    return True
