"""Applying migrations on PostgreSQL: each in its own transaction with its bookkeeping row,
under an advisory lock of the schema, so that processes starting at once apply each
migration once; retried like every write."""

from __future__ import annotations

from typing import Any

import psycopg

from ...errors import InvalidArgumentType, MigrationError
from ...migrations.values import (
    AppliedMigration,
    Migration,
    applied_meanwhile,
    pending,
    run_pending,
)
from ..shared import LockMetrics
from . import queries as sql
from .connection import (
    PgSettings,
    TransactionConnection,
    is_transient,
    open_connection,
    redact,
    retry_policy,
    server_error,
    transaction_control,
    with_url_options,
)


def applied(conn: psycopg.Connection[Any], namespace: str) -> list[AppliedMigration]:
    """The migrations recorded as applied in ``namespace`` (in the search path's schema),
    oldest first; reads only."""
    exists = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename = 'sqlitejobq_migrations'"
    ).fetchone()
    if exists is None:
        return []
    rows = conn.execute(sql.APPLIED_MIGRATIONS, {"namespace": namespace}).fetchall()
    return [AppliedMigration(int(v), n, c, float(a)) for v, n, c, a in rows]


def apply_one(
    conn: psycopg.Connection[Any], schema: str, migration: Migration, namespace: str
) -> bool:
    """Inside an open transaction: take the schema's migration lock, then apply the
    migration unless another process did; True if it ran here."""
    conn.execute(sql.MIGRATION_LOCK, {"key": sql.migrate_lock_key(schema)})
    conn.execute(sql.create_schema(schema))
    conn.execute(sql.SET_SEARCH_PATH, {"schema": schema, "is_local": True})
    conn.execute(sql.MIGRATIONS_TABLE)
    row = conn.execute(
        "SELECT checksum FROM sqlitejobq_migrations WHERE namespace = %s AND version = %s",
        (namespace, migration.version),
    ).fetchone()
    if applied_meanwhile(None if row is None else row[0], migration, namespace):
        return False
    wrapped = TransactionConnection(conn, MigrationError, "a migration")
    if isinstance(migration.sql, str):
        keyword = transaction_control(migration.sql)
        if keyword:
            raise MigrationError(
                f"{keyword} is not allowed in a migration: it already runs in a transaction "
                f"of its own (migration {namespace}:{migration.version})"
            )
    try:
        with conn.transaction():  # a savepoint: a failing migration leaves nothing behind
            if isinstance(migration.sql, str):
                conn.execute(migration.sql.encode())  # the simple protocol: many statements
            else:
                migration.sql(wrapped)
    except MigrationError:
        raise
    except psycopg.Error as exc:
        if is_transient(exc) or isinstance(exc, psycopg.OperationalError):
            raise
        raise MigrationError(
            f"migration {namespace}:{migration.version} ({migration.name}) failed: "
            f"{str(exc).strip()}"
        ) from exc
    conn.execute(
        sql.RECORD_MIGRATION,
        {
            "namespace": namespace,
            "version": migration.version,
            "name": migration.name,
            "checksum": migration.checksum,
            "now": None,
        },
    )
    return True


class PostgresMigrationRunner:
    """Applies migrations to one PostgreSQL schema: through the caller's connection, or one
    opened on a URL for the runner's life."""

    def __init__(self, db: Any, *, retry_timeout: float, options: dict[str, Any]) -> None:
        if isinstance(db, str):  # the URL may name the schema and pooler, as a queue's does
            db, options = with_url_options(db, options, MigrationError)
        settings = PgSettings.checked(retry_timeout, options)
        self.schema = settings.schema
        if isinstance(db, str):
            self.target = redact(db)
            try:
                self._conn = open_connection(db, settings)
            except psycopg.Error as exc:
                raise server_error(exc, self.target, "migrate") from exc
            self._owned = True
        elif isinstance(db, psycopg.Connection):
            self.target = "the caller's connection"
            self._conn, self._owned = db, False
        else:
            raise InvalidArgumentType(
                f"db must be a postgresql:// URL or a psycopg connection, got {type(db).__name__}"
            )
        self._retry = retry_policy(retry_timeout, LockMetrics(), self.target)

    def applied(self, namespace: str) -> list[AppliedMigration]:
        """The migrations recorded as applied in ``namespace``, oldest first."""

        def read() -> list[AppliedMigration]:
            with self._conn.transaction():
                self._conn.execute(sql.SET_SEARCH_PATH, {"schema": self.schema, "is_local": True})
                return applied(self._conn, namespace)

        return self._retry(read, "migrations")

    def apply(
        self, migrations: list[Migration], namespace: str, *, dry_run: bool, backup: str | None
    ) -> list[int]:
        """Apply the missing migrations in order; the versions applied (or that would be)."""
        if backup is not None:
            raise MigrationError(
                "backup= copies SQLite files; back a PostgreSQL database up with pg_dump"
            )
        if self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise MigrationError(
                "migrate() needs a connection with no open transaction; commit or roll back first"
            )
        todo = pending(migrations, self.applied(namespace), namespace)

        def apply(migration: Migration) -> bool:
            def run() -> bool:
                with self._conn.transaction():
                    return apply_one(self._conn, self.schema, migration, namespace)

            ran: bool = self._retry(run, f"migration {namespace}:{migration.version}")
            return ran

        return run_pending(todo, namespace, dry_run=dry_run, apply=apply)

    def close(self) -> None:
        """Close the connection the runner opened (never the caller's)."""
        if self._owned:
            self._conn.close()
