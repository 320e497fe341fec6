"""sqlitejobq.migrations: versioned, transactional, additive; the library's own schema uses it."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from sqlitejobq import MigrationError, Queue
from sqlitejobq.backends.sqlite.schema import MIGRATIONS as LIBRARY_MIGRATIONS
from sqlitejobq.migrations import (
    Migration,
    TransactionConnection,
    add_column_if_missing,
    applied_migrations,
    create_index_if_missing,
    migrate,
    split_statements,
)

APP = [
    Migration(1, "results", "CREATE TABLE results (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL);"),
    Migration(
        2,
        "results symbol index and audit trigger",
        """
        CREATE TABLE audit (symbol TEXT);
        CREATE INDEX results_symbol ON results (symbol);
        -- a trigger body holds semicolons of its own
        CREATE TRIGGER results_audit AFTER INSERT ON results BEGIN
            INSERT INTO audit (symbol) VALUES (NEW.symbol);
            INSERT INTO audit (symbol) VALUES ('; not a split');
        END;
        """,
    ),
]


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migrate_applies_in_order_once(db_path: Path) -> None:
    assert migrate(db_path, APP, namespace="stock_app") == [1, 2]
    assert migrate(db_path, APP, namespace="stock_app") == []
    assert {"results", "audit", "sqlitejobq_migrations"} <= tables(db_path)
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO results (symbol) VALUES ('TCS.NS')")
        assert conn.execute("SELECT symbol FROM audit ORDER BY rowid").fetchall() == [
            ("TCS.NS",),
            ("; not a split",),
        ]
    records = applied_migrations(db_path, "stock_app")
    assert [(r.version, r.name) for r in records] == [(1, "results"), (2, APP[1].name)]
    assert all(len(r.checksum) == 64 for r in records)


def test_migrate_applies_only_the_missing_versions(db_path: Path) -> None:
    assert migrate(db_path, APP[:1]) == [1]
    assert migrate(db_path, APP) == [2]


def test_namespaces_are_versioned_independently(db_path: Path) -> None:
    migrate(db_path, APP, namespace="one")
    other = [Migration(1, "other", "CREATE TABLE other_table (x);")]
    assert migrate(db_path, other, namespace="two") == [1]
    assert [r.version for r in applied_migrations(db_path, "one")] == [1, 2]
    assert [r.version for r in applied_migrations(db_path, "two")] == [1]


def test_a_failing_migration_leaves_nothing_behind(db_path: Path) -> None:
    migrate(db_path, APP[:1])
    broken = Migration(
        2,
        "half broken",
        "CREATE TABLE first_part (x); INSERT INTO results (symbol) VALUES ('A');"
        "INSERT INTO no_such_table VALUES (1);",
    )
    with pytest.raises(MigrationError, match=r"migration app:2 \(half broken\) failed: no such"):
        migrate(db_path, [APP[0], broken])
    assert "first_part" not in tables(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone() == (0,)
    assert [r.version for r in applied_migrations(db_path)] == [1]


def test_a_changed_applied_migration_is_refused(db_path: Path) -> None:
    migrate(db_path, APP)
    edited = [APP[0], Migration(2, APP[1].name, "CREATE TABLE audit2 (x);")]
    with pytest.raises(MigrationError, match="was applied with different text"):
        migrate(db_path, edited)


def test_whitespace_at_line_ends_does_not_change_the_checksum() -> None:
    a = Migration(1, "a", "CREATE TABLE t (x);\n")
    b = Migration(1, "a", "  CREATE TABLE t (x);   \n\n")
    assert a.checksum == b.checksum


def test_a_database_newer_than_the_code_is_refused(db_path: Path) -> None:
    migrate(db_path, APP)
    with pytest.raises(MigrationError, match="which this code does not know"):
        migrate(db_path, APP[:1])


def test_dry_run_reports_and_changes_nothing(db_path: Path) -> None:
    assert migrate(db_path, APP, dry_run=True) == [1, 2]
    assert tables(db_path) == set()
    migrate(db_path, APP[:1])
    assert migrate(db_path, APP, dry_run=True) == [2]
    assert "audit" not in tables(db_path)


def test_backup_copies_the_database_first(db_path: Path, tmp_path: Path) -> None:
    migrate(db_path, APP[:1])
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO results (symbol) VALUES ('INFY.NS')")
    backup = tmp_path / "before-v2.db"
    assert migrate(db_path, APP, backup=backup) == [2]
    assert tables(backup) >= {"results"} and "audit" not in tables(backup)
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT symbol FROM results").fetchall() == [("INFY.NS",)]
    with pytest.raises(MigrationError, match="is the database itself"):
        migrate(db_path, [*APP, Migration(3, "x", "CREATE TABLE x (y);")], backup=db_path)


def test_callable_migrations_run_inside_the_transaction(db_path: Path) -> None:
    def seed(conn: TransactionConnection) -> None:
        conn.executescript("CREATE TABLE symbols (s TEXT); INSERT INTO symbols VALUES ('A');")
        conn.executemany("INSERT INTO symbols VALUES (?)", [("B",), ("C",)])
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        migrate(db_path, [Migration(1, "seed", seed)])
    assert "symbols" not in tables(db_path)


def test_a_migration_cannot_commit_or_open_its_own_transaction(db_path: Path) -> None:
    def commits(conn: TransactionConnection) -> None:
        conn.execute("CREATE TABLE a (x)")
        conn.commit()

    with pytest.raises(MigrationError, match="must not commit"):
        migrate(db_path, [Migration(1, "commits", commits)])
    with pytest.raises(MigrationError, match="COMMIT is not allowed in a migration"):
        migrate(db_path, [Migration(1, "sql commit", "CREATE TABLE a (x); COMMIT;")])
    with pytest.raises(MigrationError, match="BEGIN is not allowed"):
        migrate(db_path, [Migration(1, "sql begin", "/* c */ BEGIN; CREATE TABLE a (x);")])
    assert "a" not in tables(db_path)


def test_helpers_are_safe_to_run_twice(db_path: Path) -> None:
    def additive(conn: TransactionConnection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS prices (symbol TEXT, close REAL)")
        add_column_if_missing(conn, "prices", "volume", "INTEGER NOT NULL DEFAULT 0")
        add_column_if_missing(conn, "prices", "volume", "INTEGER NOT NULL DEFAULT 0")
        create_index_if_missing(conn, "prices_symbol", "prices", ["symbol", "close DESC"])
        create_index_if_missing(conn, "prices_symbol", "prices", ["symbol"])
        create_index_if_missing(
            conn, "prices_unique", "prices", ["symbol"], unique=True, where="close IS NOT NULL"
        )

    assert migrate(db_path, [Migration(1, "additive", additive)]) == [1]
    with sqlite3.connect(db_path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(prices)")]
        assert columns == ["symbol", "close", "volume"]
        assert add_column_if_missing(conn, "prices", "volume", "INTEGER") is False
        assert create_index_if_missing(conn, "prices_symbol", "prices", ["symbol"]) is False
        indexes = {r[1]: r[2] for r in conn.execute("PRAGMA index_list(prices)")}
        assert indexes == {"prices_symbol": 0, "prices_unique": 1}


def test_helpers_refuse_bad_identifiers(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE t (x)")
        with pytest.raises(ValueError, match="plain SQL identifier"):
            add_column_if_missing(conn, "t; DROP TABLE t", "y", "TEXT")
        with pytest.raises(ValueError, match=r"index column must be 'name' or 'name ASC\|DESC'"):
            create_index_if_missing(conn, "i", "t", ["x); DROP TABLE t; --"])
        with pytest.raises(ValueError, match="plain SQL identifier"):
            create_index_if_missing(conn, "i", "t", ["x;"])
        with pytest.raises(MigrationError, match="table 'nope' does not exist"):
            add_column_if_missing(conn, "nope", "y", "TEXT")


def test_the_one_off_add_constraints_script_becomes_versioned_migrations(db_path: Path) -> None:
    """An app whose tables predate migrations: additive helpers bring any copy up to date."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE stock_jobs (id INTEGER PRIMARY KEY, status TEXT)")
        conn.execute("CREATE INDEX idx_stock_jobs_status ON stock_jobs (status)")  # hand-made
    steps = [
        Migration(1, "baseline", lambda c: c.execute(
            "CREATE TABLE IF NOT EXISTS stock_jobs (id INTEGER PRIMARY KEY, status TEXT)")),
        Migration(2, "status index", lambda c: create_index_if_missing(
            c, "idx_stock_jobs_status", "stock_jobs", ["status"])),
        Migration(3, "progress column", lambda c: add_column_if_missing(
            c, "stock_jobs", "progress", "REAL NOT NULL DEFAULT 0")),
    ]  # fmt: skip
    assert migrate(db_path, steps, namespace="legacy") == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, "zero", "CREATE TABLE a (x);"), "migration version must be >= 1"),
        ((1, "", "CREATE TABLE a (x);"), "needs a non-empty name"),
        ((1, "empty", "  -- nothing\n"), "has no SQL"),
        ((1, "number", 42), "must be SQL text or a callable"),
    ],
)
def test_bad_migrations_are_refused_when_declared(args: tuple[object, ...], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Migration(*args)  # type: ignore[arg-type]


def test_duplicate_versions_are_refused(db_path: Path) -> None:
    with pytest.raises(MigrationError, match=r"lists version\(s\) \[1\] twice"):
        migrate(db_path, [APP[0], Migration(1, "again", "CREATE TABLE b (x);")])


def test_migrate_refuses_a_connection_inside_a_transaction(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE x (y)")
    conn.execute("INSERT INTO x VALUES (1)")
    assert conn.in_transaction
    with pytest.raises(MigrationError, match="no open transaction"):
        migrate(conn, APP)
    conn.rollback()
    assert migrate(conn, APP) == [1, 2]
    conn.close()


def test_split_statements_keeps_strings_comments_and_triggers_whole() -> None:
    script = """
    -- leading comment; with a semicolon
    INSERT INTO t VALUES ('a;b');  /* block; comment */
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;
    SELECT 3
    """
    parts = split_statements(script)
    assert len(parts) == 3
    assert parts[0].endswith("INSERT INTO t VALUES ('a;b');")
    assert parts[1].startswith("/* block; comment */")
    assert parts[2].strip() == "SELECT 3"


def test_the_library_schema_is_recorded_as_migrations(db_path: Path) -> None:
    Queue(db_path).close()
    versions = [r.version for r in applied_migrations(db_path, "sqlitejobq")]
    assert versions == [m.version for m in LIBRARY_MIGRATIONS] == [1, 2, 3, 4]
    with sqlite3.connect(db_path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"sqlitejobq_jobs_claim", "sqlitejobq_jobs_lease", "sqlitejobq_jobs_unique"} <= indexes


def _open_queue(path: str) -> None:
    Queue(path).close()


def test_processes_opening_a_new_file_at_once_migrate_it_once(db_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_queue, args=(str(db_path),)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    assert [r.version for r in applied_migrations(db_path, "sqlitejobq")] == [
        m.version for m in LIBRARY_MIGRATIONS
    ]
