"""The app's own tables, versioned with sqlitejobq.migrations in the queue's SQLite file."""

from __future__ import annotations

import os
import sqlite3

from sqlitejobq.migrations import (
    Migration,
    TransactionConnection,
    add_column_if_missing,
    create_index_if_missing,
    migrate,
)

NAMESPACE = "stock_analyzer"


def _index_by_symbol(conn: TransactionConnection) -> None:
    create_index_if_missing(
        conn, "analysis_results_symbol", "analysis_results", ["symbol", "analyzed_at DESC"]
    )


def _record_source(conn: TransactionConnection) -> None:
    add_column_if_missing(conn, "analysis_results", "source", "TEXT NOT NULL DEFAULT 'sample'")


MIGRATIONS = [
    Migration(
        1,
        "analysis results",
        """
        CREATE TABLE analysis_results (
            id          INTEGER PRIMARY KEY,
            job_id      INTEGER NOT NULL UNIQUE,
            batch_id    INTEGER,
            symbol      TEXT    NOT NULL,
            as_of       TEXT    NOT NULL,
            signal      TEXT    NOT NULL,
            score       INTEGER NOT NULL,
            last_close  REAL,
            result      TEXT    NOT NULL,
            analyzed_at REAL    NOT NULL
        );
        """,
    ),
    Migration(2, "index results by symbol, newest first", _index_by_symbol),
    Migration(3, "record where the prices came from", _record_source),
]


def migrate_app(db: str | os.PathLike[str] | sqlite3.Connection) -> list[int]:
    """Bring the app's tables up to date; returns the versions applied."""
    return migrate(db, MIGRATIONS, namespace=NAMESPACE)
