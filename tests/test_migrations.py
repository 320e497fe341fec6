"""sqlitejobq.migrations on every engine: versioned, transactional, additive; the library's
own schema uses it."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from sqlitejobq import MigrationError, Queue
from sqlitejobq.backends import library_schema
from sqlitejobq.migrations import (
    Migration,
    TransactionConnection,
    add_column_if_missing,
    applied_migrations,
    create_index_if_missing,
    migrate,
    split_statements,
)

from .conftest import Database, only_on

RESULTS = Migration(
    1, "results", "CREATE TABLE results (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL);"
)
# A trigger (SQLite) or trigger function (PostgreSQL) whose body holds semicolons of its own:
# the text of a migration is applied whole, not split where a body would break.
AUDIT = {
    "sqlite": """
        CREATE TABLE audit (n INTEGER PRIMARY KEY, symbol TEXT);
        CREATE INDEX results_symbol ON results (symbol);
        -- a trigger body holds semicolons of its own
        CREATE TRIGGER results_audit AFTER INSERT ON results BEGIN
            INSERT INTO audit (symbol) VALUES (NEW.symbol);
            INSERT INTO audit (symbol) VALUES ('; not a split');
        END;
        """,
    "postgres": """
        CREATE TABLE audit (n SERIAL PRIMARY KEY, symbol TEXT);
        CREATE INDEX results_symbol ON results (symbol);
        -- a function body holds semicolons of its own
        CREATE FUNCTION results_audit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO audit (symbol) VALUES (NEW.symbol);
            INSERT INTO audit (symbol) VALUES ('; not a split');
            RETURN NEW;
        END $$;
        CREATE TRIGGER results_audit AFTER INSERT ON results
            FOR EACH ROW EXECUTE FUNCTION results_audit();
        """,
}


@pytest.fixture
def app(engine: str) -> list[Migration]:
    """An app's two migrations, in the engine's dialect."""
    return [RESULTS, Migration(2, "results symbol index and audit trigger", AUDIT[engine])]


@pytest.fixture
def options(database: Database) -> dict[str, str]:
    """What names the test's schema to migrate() when it is given a connection."""
    return database.options


def test_migrate_applies_in_order_once(
    target: str, database: Database, app: list[Migration]
) -> None:
    assert migrate(target, app, namespace="stock_app") == [1, 2]
    assert migrate(target, app, namespace="stock_app") == []
    assert {"results", "audit", "sqlitejobq_migrations"} <= database.tables()
    database.execute("INSERT INTO results (id, symbol) VALUES (1, 'TCS.NS')")
    assert database.rows("SELECT symbol FROM audit ORDER BY n") == [
        ("TCS.NS",),
        ("; not a split",),
    ]
    records = applied_migrations(target, "stock_app")
    assert [(r.version, r.name) for r in records] == [(1, "results"), (2, app[1].name)]
    assert all(len(r.checksum) == 64 for r in records)


def test_migrate_applies_only_the_missing_versions(target: str, app: list[Migration]) -> None:
    assert migrate(target, app[:1]) == [1]
    assert migrate(target, app) == [2]


def test_namespaces_are_versioned_independently(target: str, app: list[Migration]) -> None:
    migrate(target, app, namespace="one")
    other = [Migration(1, "other", "CREATE TABLE other_table (x INTEGER);")]
    assert migrate(target, other, namespace="two") == [1]
    assert [r.version for r in applied_migrations(target, "one")] == [1, 2]
    assert [r.version for r in applied_migrations(target, "two")] == [1]


def test_a_failing_migration_leaves_nothing_behind(
    target: str, database: Database, app: list[Migration]
) -> None:
    migrate(target, app[:1])
    broken = Migration(
        2,
        "half broken",
        "CREATE TABLE first_part (x INTEGER); INSERT INTO results (id, symbol) VALUES (1, 'A');"
        "INSERT INTO no_such_table VALUES (1);",
    )
    with pytest.raises(MigrationError, match=r"migration app:2 \(half broken\) failed: ") as e:
        migrate(target, [app[0], broken])
    assert "no_such_table" in str(e.value)
    assert "first_part" not in database.tables()
    assert database.rows("SELECT count(*) FROM results") == [(0,)]
    assert [r.version for r in applied_migrations(target)] == [1]


def test_a_changed_applied_migration_is_refused(target: str, app: list[Migration]) -> None:
    migrate(target, app)
    edited = [app[0], Migration(2, app[1].name, "CREATE TABLE audit2 (x INTEGER);")]
    with pytest.raises(MigrationError, match="was applied with different text"):
        migrate(target, edited)


def test_whitespace_at_line_ends_does_not_change_the_checksum() -> None:
    a = Migration(1, "a", "CREATE TABLE t (x);\n")
    b = Migration(1, "a", "  CREATE TABLE t (x);   \n\n")
    assert a.checksum == b.checksum


def test_a_database_newer_than_the_code_is_refused(target: str, app: list[Migration]) -> None:
    migrate(target, app)
    with pytest.raises(MigrationError, match="which this code does not know"):
        migrate(target, app[:1])


def test_dry_run_reports_and_changes_nothing(
    target: str, database: Database, app: list[Migration]
) -> None:
    assert migrate(target, app, dry_run=True) == [1, 2]
    assert database.tables() == set()
    migrate(target, app[:1])
    assert migrate(target, app, dry_run=True) == [2]
    assert "audit" not in database.tables()


@only_on("sqlite", "backup= copies the file with SQLite's online backup API")
def test_backup_copies_the_database_first(
    target: str, database: Database, tmp_path: Path, app: list[Migration]
) -> None:
    migrate(target, app[:1])
    database.execute("INSERT INTO results (symbol) VALUES ('INFY.NS')")
    backup = Database("sqlite", str(tmp_path / "before-v2.db"))
    assert migrate(target, app, backup=backup.target) == [2]
    assert backup.tables() >= {"results"} and "audit" not in backup.tables()
    assert backup.rows("SELECT symbol FROM results") == [("INFY.NS",)]
    with pytest.raises(MigrationError, match="is the database itself"):
        migrate(target, [*app, Migration(3, "x", "CREATE TABLE x (y);")], backup=target)


@only_on("postgres", "a PostgreSQL database is backed up with pg_dump, not by migrate()")
def test_backup_is_refused_on_postgres(
    target: str, database: Database, tmp_path: Path, app: list[Migration]
) -> None:
    with pytest.raises(MigrationError, match="back a PostgreSQL database up with pg_dump"):
        migrate(target, app, backup=str(tmp_path / "b.db"))
    assert database.tables() == set()


def test_callable_migrations_run_inside_the_transaction(target: str, database: Database) -> None:
    seeded: list[int] = []

    def seed(conn: TransactionConnection) -> None:
        conn.executescript("CREATE TABLE symbols (s TEXT); INSERT INTO symbols VALUES ('A');")
        conn.executemany(database.sql("INSERT INTO symbols VALUES (?)"), [("B",), ("C",)])
        seeded.append(conn.execute("SELECT count(*) FROM symbols").fetchone()[0])
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        migrate(target, [Migration(1, "seed", seed)])
    assert seeded == [3]  # written, then undone with the migration
    assert "symbols" not in database.tables()
    assert applied_migrations(target) == []


def test_a_migration_cannot_commit_or_open_its_own_transaction(
    target: str, database: Database
) -> None:
    def commits(conn: TransactionConnection) -> None:
        conn.execute("CREATE TABLE a (x INTEGER)")
        conn.commit()

    def commits_in_sql(conn: TransactionConnection) -> None:
        conn.execute("CREATE TABLE a (x INTEGER); COMMIT")

    with pytest.raises(MigrationError, match="must not commit"):
        migrate(target, [Migration(1, "commits", commits)])
    with pytest.raises(MigrationError, match="COMMIT is not allowed in a migration"):
        migrate(target, [Migration(1, "sql commit", "CREATE TABLE a (x INTEGER); COMMIT;")])
    with pytest.raises(MigrationError, match="BEGIN is not allowed"):
        migrate(target, [Migration(1, "sql begin", "/* c */ BEGIN; CREATE TABLE a (x INTEGER);")])
    # sqlite3 runs one statement per execute; psycopg sends both, so it looks for a COMMIT
    refused = r"COMMIT is not allowed in a migration|only execute one statement at a time"
    with pytest.raises(MigrationError, match=refused):
        migrate(target, [Migration(1, "execute commit", commits_in_sql)])
    assert "a" not in database.tables()
    assert applied_migrations(target) == []


def test_helpers_are_safe_to_run_twice(target: str, database: Database) -> None:
    def additive(conn: TransactionConnection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS prices (symbol TEXT, close REAL)")
        add_column_if_missing(conn, "prices", "volume", "INTEGER NOT NULL DEFAULT 0")
        add_column_if_missing(conn, "prices", "volume", "INTEGER NOT NULL DEFAULT 0")
        create_index_if_missing(conn, "prices_symbol", "prices", ["symbol", "close DESC"])
        create_index_if_missing(conn, "prices_symbol", "prices", ["symbol"])
        create_index_if_missing(
            conn, "prices_unique", "prices", ["symbol"], unique=True, where="close IS NOT NULL"
        )

    def again(conn: TransactionConnection) -> None:
        assert add_column_if_missing(conn, "prices", "volume", "INTEGER") is False
        assert create_index_if_missing(conn, "prices_symbol", "prices", ["symbol"]) is False

    assert migrate(target, [Migration(1, "additive", additive)]) == [1]
    assert migrate(target, [Migration(1, "additive", additive), Migration(2, "again", again)]) == [
        2
    ]
    assert database.columns("prices") == ["symbol", "close", "volume"]
    assert database.indexes("prices") == {"prices_symbol": False, "prices_unique": True}


@only_on("sqlite", "the helpers on a plain sqlite3 connection, outside any migration")
def test_helpers_work_on_a_plain_sqlite_connection(db_path: str) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE prices (symbol TEXT)")
        assert add_column_if_missing(conn, "prices", "volume", "INTEGER") is True
        assert add_column_if_missing(conn, "prices", "volume", "INTEGER") is False
        assert create_index_if_missing(conn, "prices_symbol", "prices", ["symbol"]) is True
        assert create_index_if_missing(conn, "prices_symbol", "prices", ["symbol"]) is False


@only_on("postgres", "the helpers given a plain psycopg connection")
def test_helpers_work_on_a_plain_psycopg_connection(database: Database) -> None:
    with database.connect() as conn:
        conn.execute("CREATE TABLE prices (symbol TEXT)")
        assert add_column_if_missing(conn, "prices", "volume", "INTEGER") is True
        assert database.columns("prices") == ["symbol", "volume"]


@only_on("sqlite", "a plain sqlite3 connection checks the table outside any migration")
def test_helpers_refuse_bad_identifiers(db_path: str) -> None:
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


def test_the_one_off_add_constraints_script_becomes_versioned_migrations(
    target: str, database: Database
) -> None:
    """An app whose tables predate migrations: additive helpers bring any copy up to date."""
    database.execute("CREATE TABLE stock_jobs (id INTEGER PRIMARY KEY, status TEXT)")
    database.execute("CREATE INDEX idx_stock_jobs_status ON stock_jobs (status)")  # hand-made
    steps = [
        Migration(1, "baseline", lambda c: c.execute(
            "CREATE TABLE IF NOT EXISTS stock_jobs (id INTEGER PRIMARY KEY, status TEXT)")),
        Migration(2, "status index", lambda c: create_index_if_missing(
            c, "idx_stock_jobs_status", "stock_jobs", ["status"])),
        Migration(3, "progress column", lambda c: add_column_if_missing(
            c, "stock_jobs", "progress", "REAL NOT NULL DEFAULT 0")),
    ]  # fmt: skip
    assert migrate(target, steps, namespace="legacy") == [1, 2, 3]
    assert database.columns("stock_jobs") == ["id", "status", "progress"]


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


def test_duplicate_versions_are_refused(target: str, database: Database) -> None:
    with pytest.raises(MigrationError, match=r"lists version\(s\) \[1\] twice"):
        migrate(target, [RESULTS, Migration(1, "again", "CREATE TABLE b (x INTEGER);")])
    assert database.tables() == set()


def test_migrate_refuses_a_connection_inside_a_transaction(
    database: Database, app: list[Migration], options: dict[str, str]
) -> None:
    database.execute("CREATE TABLE x (y INTEGER)")
    conn = database.connect(autocommit=False)
    conn.execute("INSERT INTO x VALUES (1)")
    with pytest.raises(MigrationError, match="no open transaction"):
        migrate(conn, app, **options)
    conn.rollback()
    assert migrate(conn, app, **options) == [1, 2]
    assert [r.version for r in applied_migrations(conn, **options)] == [1, 2]
    conn.close()
    assert {"results", "audit"} <= database.tables()


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


def test_the_library_schema_is_recorded_as_migrations(
    target: str, engine: str, database: Database
) -> None:
    Queue(target).close()
    namespace, migrations = library_schema(target)
    versions = [r.version for r in applied_migrations(target, namespace)]
    assert versions == [m.version for m in migrations]
    assert (
        versions == {"sqlite": [1, 2, 3, 4, 5, 6, 7, 8], "postgres": [1, 2, 3, 4, 5, 6, 7]}[engine]
    )
    assert {
        "sqlitejobq_jobs_claim", "sqlitejobq_jobs_lease", "sqlitejobq_jobs_unique",
        "sqlitejobq_jobs_finished_badly", "sqlitejobq_dependencies_job",
    } <= set(database.indexes())  # fmt: skip
    assert "sqlitejobq_throughput" in database.tables()
    assert "history" in database.columns("sqlitejobq_jobs")


def _open_queue(target: str) -> None:
    Queue(target).close()


def test_processes_opening_a_new_database_at_once_migrate_it_once(target: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_queue, args=(target,)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    namespace, migrations = library_schema(target)
    applied = applied_migrations(target, namespace)
    assert [r.version for r in applied] == [m.version for m in migrations]
