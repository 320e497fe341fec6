"""Storage faults on real SQLite files, real mounts and real processes.

Every fault reaches the API as a ``SqliteJobQError`` subclass whose message says what to do,
and the CLI as one line ``sqlitejobq: error: ...`` on stderr with exit status 1. A file the
library refuses is left exactly as it was: same bytes, no ``-wal``/``-shm`` file appeared,
same journal mode.

The full disk and the read-only mount are staged in a private mount namespace
(``unshare -rm``), so they need neither root nor a change to the machine's mounts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import (
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    MigrationError,
    NotAQueueDatabase,
    Queue,
)

from .conftest import ROOT, Engine

pytestmark = pytest.mark.timeout(120)

ERROR_PREFIX = "sqlitejobq: error: "


# --- what a file looks like from outside --------------------------------------------------


def fingerprint(path: str) -> dict[str, Any]:
    """The file's bytes (as a digest) and which of its companion files exist."""
    data = Path(path).read_bytes()
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "-wal": os.path.exists(path + "-wal"),
        "-shm": os.path.exists(path + "-shm"),
        "-journal": os.path.exists(path + "-journal"),
    }


def journal_mode(path: str) -> str:
    """The journal mode recorded in a rollback-journal database, read without writing."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def table_names(path: str) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    finally:
        conn.close()


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The CLI failed the documented way: exit 1, one stderr line, no traceback, no output."""
    output = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == 1, output
    assert "Traceback" not in result.stderr + result.stdout, output
    assert result.stdout == "", output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(ERROR_PREFIX), output
    for fragment in fragments:
        assert fragment in lines[0], output
    return lines[0]


def cli_on(engine: Engine, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One ``sqlitejobq`` command on a database path of the test's choosing."""
    return subprocess.run(
        [sys.executable, "-m", "sqlitejobq", *args, "--db", db],
        cwd=ROOT, env=engine.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


# --- files the library must refuse ----------------------------------------------------------


def make_queue_with_jobs(path: str, count: int) -> None:
    """A real queue holding ``count`` jobs, checkpointed into the main file and closed."""
    with Queue(path) as queue:
        queue.enqueue_many("t", [{"n": n, "pad": "x" * 60} for n in range(count)])
        queue.checkpoint()
    assert not os.path.exists(path + "-wal")


def stage_not_a_database(path: str) -> None:
    Path(path).write_bytes(os.urandom(16 * 1024))


def stage_truncated(path: str) -> None:
    make_queue_with_jobs(path, 3000)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def stage_garbage_page(path: str, where: str) -> None:
    """A real queue whose page ``where`` is overwritten with garbage (same file size)."""
    make_queue_with_jobs(path, 3000)
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        if where == "schema page":
            page, skip = 1, 100  # keep the 100-byte file header: the rest of page 1 is schema
        elif where == "jobs table root page":
            page = conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = 'sqlitejobq_jobs'"
            ).fetchone()[0]
            skip = 0
        else:
            try:
                leaves = [row[0] for row in conn.execute(
                    "SELECT pageno FROM dbstat WHERE name = 'sqlitejobq_jobs' "
                    "AND pagetype = 'leaf' ORDER BY pageno"
                )]  # fmt: skip
            except sqlite3.OperationalError:
                pytest.skip("this SQLite has no dbstat table to find a leaf page with")
            assert len(leaves) > 10
            page, skip = leaves[len(leaves) // 2], 0
    finally:
        conn.close()
    with open(path, "r+b") as f:
        f.seek((page - 1) * page_size + skip)
        f.write(b"\xde\xad\xbe\xef" * ((page_size - skip) // 4))


def stage_foreign_table(path: str) -> None:
    """Another app's rollback-journal database with a table named like the library's."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sqlitejobq_jobs (x)")
    conn.executemany("INSERT INTO sqlitejobq_jobs VALUES (?)", [(1,), (2,)])
    conn.commit()
    conn.close()
    assert journal_mode(path) == "delete"


def stage_future_schema(path: str) -> None:
    """A real queue whose library schema is newer than this code, in rollback-journal mode."""
    make_queue_with_jobs(path, 3)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO sqlitejobq_migrations VALUES ('sqlitejobq', 99, 'future', 'x', 0)")
    assert conn.execute("PRAGMA journal_mode = delete").fetchone()[0] == "delete"
    conn.close()
    assert journal_mode(path) == "delete"


@pytest.mark.engines("sqlite")
def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(engine: Engine) -> None:
    stage_not_a_database(engine.target)
    before = fingerprint(engine.target)

    with pytest.raises(NotAQueueDatabase, match="not a SQLite database") as info:
        engine.open()
    assert "point at the queue's own file" in str(info.value)
    assert fingerprint(engine.target) == before


@pytest.mark.engines("sqlite")
def test_an_existing_empty_file_becomes_a_queue(engine: Engine) -> None:
    Path(engine.target).touch()
    with engine.open() as queue:
        job_id = queue.enqueue("t", {"n": 1})
        assert queue.get(job_id).payload == {"n": 1}
        assert queue.stats().total() == 1
    with engine.open() as queue:
        assert queue.stats().total() == 1


@pytest.mark.engines("sqlite")
def test_a_truncated_database_is_refused_as_corrupt_and_left_untouched(engine: Engine) -> None:
    stage_truncated(engine.target)
    before = fingerprint(engine.target)

    with pytest.raises(CorruptDatabase, match="truncated") as info:
        engine.open()
    assert "restore it from a backup" in str(info.value)
    assert fingerprint(engine.target) == before


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("where", ["schema page", "jobs table root page", "jobs table leaf page"])
def test_a_page_overwritten_with_garbage_raises_corrupt_database_at_open_or_first_read(
    engine: Engine, where: str
) -> None:
    stage_garbage_page(engine.target, where)
    before = fingerprint(engine.target)

    # a raw sqlite3 error would escape pytest.raises and fail the test
    with pytest.raises(CorruptDatabase, match="corrupt") as info, engine.open() as queue:
        queue.jobs(limit=10_000, oldest_first=True)
    assert "restore it from a backup" in str(info.value)
    assert fingerprint(engine.target)["sha256"] == before["sha256"]


@pytest.mark.engines("sqlite")
def test_another_apps_table_named_like_the_librarys_is_refused_and_the_file_left_as_it_was(
    engine: Engine,
) -> None:
    stage_foreign_table(engine.target)
    before = fingerprint(engine.target)

    with pytest.raises(NotAQueueDatabase, match="sqlitejobq_jobs") as info:
        engine.open()
    assert "did not create" in str(info.value)
    assert fingerprint(engine.target) == before
    assert journal_mode(engine.target) == "delete"
    assert table_names(engine.target) == ["sqlitejobq_jobs"]  # no sqlitejobq_migrations


@pytest.mark.engines("sqlite")
def test_an_apps_own_tables_are_accepted_and_keep_their_rows(engine: Engine) -> None:
    conn = sqlite3.connect(engine.target)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
    conn.executemany("INSERT INTO orders (item) VALUES (?)", [("apple",), ("pear",), ("fig",)])
    conn.commit()
    conn.close()

    with engine.open() as queue:
        ids = queue.enqueue_many("t", [{"n": 1}, {"n": 2}])
        assert [queue.get(i).payload for i in ids] == [{"n": 1}, {"n": 2}]
    conn = sqlite3.connect(engine.target)
    try:
        rows = conn.execute("SELECT id, item FROM orders ORDER BY id").fetchall()
    finally:
        conn.close()
    assert rows == [(1, "apple"), (2, "pear"), (3, "fig")]
    with engine.open() as queue:
        assert queue.stats().total() == 2


@pytest.mark.engines("sqlite")
def test_a_schema_newer_than_the_code_is_refused_and_the_file_left_as_it_was(
    engine: Engine,
) -> None:
    stage_future_schema(engine.target)
    before = fingerprint(engine.target)

    with pytest.raises(MigrationError, match="99") as info:
        engine.open()
    assert "newer than the code" in str(info.value)
    assert fingerprint(engine.target) == before
    assert journal_mode(engine.target) == "delete"


@pytest.mark.engines("sqlite")
def test_a_missing_directory_raises_database_unavailable_naming_it(engine: Engine) -> None:
    missing = Path(engine.tmp_path) / "no" / "such" / "dir"
    with pytest.raises(DatabaseUnavailable) as info:
        Queue(missing / "jobs.db")
    assert str(missing) in str(info.value)
    assert "create it first" in str(info.value)
    assert not missing.parent.exists()


# --- the CLI on each refused file -------------------------------------------------------


REFUSED_FILES: dict[str, tuple[Callable[[str], None], tuple[str, ...], tuple[str, ...]]] = {
    # case: (stage it at the path, the CLI command, what the one line says)
    "not a database": (stage_not_a_database, ("status",), ("not a SQLite database",)),
    "truncated": (stage_truncated, ("status",), ("truncated", "backup")),
    "garbage in the schema page": (
        lambda p: stage_garbage_page(p, "schema page"), ("status",), ("corrupt", "backup"),
    ),
    "garbage in the jobs table": (
        lambda p: stage_garbage_page(p, "jobs table root page"),
        ("jobs", "--limit", "10000", "--oldest-first"), ("corrupt", "backup"),
    ),
    "another app's table": (stage_foreign_table, ("status",), ("sqlitejobq_jobs",)),
    "newer schema": (stage_future_schema, ("status",), ("sqlitejobq:99",)),
}  # fmt: skip


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("case", list(REFUSED_FILES))
def test_the_cli_reports_a_refused_file_in_one_line_with_status_1_and_changes_nothing(
    engine: Engine, case: str
) -> None:
    stage, command, fragments = REFUSED_FILES[case]
    stage(engine.target)
    before = fingerprint(engine.target)
    mode = journal_mode(engine.target) if case in ("another app's table", "newer schema") else None

    assert_one_error_line(engine.cli(*command), *fragments)
    # a write command too: it is refused the same way, before it writes anything
    assert_one_error_line(engine.cli("enqueue", "t", '{"n": 1}'))

    after = fingerprint(engine.target)
    if case == "garbage in the jobs table":
        assert after["sha256"] == before["sha256"]
    else:
        assert after == before
    if mode is not None:
        assert journal_mode(engine.target) == mode


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("command", [("status",), ("enqueue", "t", "{}")])
def test_the_cli_reports_a_missing_directory_in_one_line_with_status_1(
    engine: Engine, command: tuple[str, ...]
) -> None:
    missing = Path(engine.tmp_path) / "no" / "such" / "dir"
    line = assert_one_error_line(cli_on(engine, str(missing / "jobs.db"), *command))
    assert str(missing) in line
    assert not missing.parent.exists()


# --- a busy database ----------------------------------------------------------------------


def test_database_busy_arrives_within_the_retry_bound_and_nothing_is_stored(
    engine: Engine,
) -> None:
    engine.open().close()  # the queue exists before another process locks it
    # the engine's own wait for the lock (1.9 s) nearly as long as the whole bound (2 s): a
    # retry that started just before the bound used to wait that long again (3.8 s in all)
    own_wait = {"busy_timeout": 1.9} if engine.name == "sqlite" else {"lock_timeout": 1.9}
    with (
        engine.writes_blocked(6),
        Queue(engine.target, retry_timeout=2.0, **own_wait) as queue,
    ):
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match=r"stayed (locked|busy)") as info:
            queue.enqueue("t", {"n": 1})
        elapsed = time.monotonic() - started
        # the bound is retry_timeout (plus one statement), not retry_timeout + busy_timeout
        assert elapsed < 3.0, f"DatabaseBusy after {elapsed:.2f}s; the bound is 2s"
        assert "2s" in str(info.value)
        with pytest.raises(DatabaseBusy):
            queue.enqueue_many("t", [{"n": 2}, {"n": 3}])
        assert queue.stats().total() == 0
        assert queue.stats().lock.busy_errors == 2
    with engine.open() as queue:
        assert queue.stats().total() == 0
        job_id = queue.enqueue("t", {"n": 4})
        assert queue.get(job_id).payload == {"n": 4}
        assert queue.stats().total() == 1


# --- a full disk and a read-only mount, in a private mount namespace ---------------------

TMPFS = 'mount -t tmpfs -o size=2m tmpfs "$1"'
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"'


@pytest.fixture(scope="module")
def private_mounts(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless this machine lets us mount a tmpfs and a read-only bind in a private
    mount namespace (``unshare -rm``: no root needed, nothing outside changes)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: cannot stage a full or read-only disk")
    probe = tmp_path_factory.mktemp("mount-probe")
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'{TMPFS} && {READ_ONLY} && ! touch "$1/x"', "sh",
         str(probe)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount in a private mount namespace here (unshare -rm: exit "
            f"{result.returncode}: {result.stderr.strip()[:300]})"
        )


def run_in_private_mount(
    engine: Engine, setup: str, directory: Path, script: str
) -> dict[str, Any]:
    """Run ``script`` (given the directory as argv[1]) after ``setup`` mounted something on
    the directory in a private mount namespace; the JSON its last line prints."""
    script_path = Path(engine.tmp_path) / f"script-{directory.name}.py"
    script_path.write_text(script)
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'{setup} && exec "$2" "$3" "$1"', "sh", str(directory),
         sys.executable, str(script_path)],
        cwd=ROOT, env=engine.env(), capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"stdout={result.stdout!r} stderr={result.stderr!r}"
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


DISK_FULL_SCRIPT = r"""
import json, os, sqlite3, sys
from sqlitejobq import Queue

directory = sys.argv[1]
db = os.path.join(directory, "jobs.db")
queue = Queue(db)
stored = len(queue.enqueue_many("t", [{"warm": n} for n in range(5)]))

# a ballast file leaves about 256 KiB free
ballast = os.path.join(directory, "ballast")
free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
with open(ballast, "wb") as f:
    f.write(b"\0" * max(0, free - 256 * 1024))

error = None
batches = 0
for n in range(10_000):
    try:
        ids = queue.enqueue_many("t", [{"batch": n, "pad": "x" * 500} for _ in range(20)])
    except Exception as exc:
        error = exc
        break
    stored += len(ids)
    batches += 1

after_failure = queue.stats().total()
conn = sqlite3.connect(db)
rows = conn.execute("SELECT count(*) FROM sqlitejobq_jobs").fetchone()[0]
integrity = conn.execute("PRAGMA integrity_check").fetchall()
conn.close()

os.remove(ballast)
more = queue.enqueue_many("t", [{"after": n, "pad": "x" * 500} for n in range(20)])
claimed = queue.claim("recovery", limit=1)
completed = queue.complete(claimed[0], {"done": True}) if claimed else False
stats = queue.stats()
queue.close()
print(json.dumps({
    "error_class": None if error is None else f"{type(error).__module__}.{type(error).__name__}",
    "error": str(error),
    "cause": None if error is None else type(error.__cause__).__module__,
    "batches": batches, "stored": stored, "after_failure": after_failure, "rows": rows,
    "integrity": [r[0] for r in integrity], "more": len(more), "claimed": len(claimed),
    "completed": completed, "total": stats.total(), "done": stats.total("completed"),
}))
"""


@pytest.mark.engines("sqlite")
def test_a_full_disk_raises_disk_full_stores_all_or_nothing_and_recovers_when_space_returns(
    engine: Engine, private_mounts: None
) -> None:
    disk = Path(engine.tmp_path) / "disk"
    disk.mkdir()
    out = run_in_private_mount(engine, TMPFS, disk, DISK_FULL_SCRIPT)

    assert out["error_class"] == "sqlitejobq.errors.DiskFull", out
    assert "disk full" in out["error"] and "Free space" in out["error"], out
    assert out["cause"] == "sqlite3", out  # translated from SQLite's own error
    assert out["batches"] >= 1, out  # writes succeeded until the disk filled
    # the batch that hit the full disk stored nothing: every job is one of a batch that returned
    assert out["after_failure"] == out["stored"] == out["rows"], out
    assert out["integrity"] == ["ok"], out
    # with space again, writes succeed
    assert out["more"] == 20, out
    assert out["claimed"] == 1 and out["completed"] is True, out
    assert out["total"] == out["stored"] + 20, out
    assert out["done"] == 1, out


CLI_DISK_FULL_SCRIPT = r"""
import errno, json, os, subprocess, sys
from sqlitejobq import Queue

directory = sys.argv[1]
db = os.path.join(directory, "jobs.db")
queue = Queue(db)  # stays open: its -wal and -shm files stay in place
queue.enqueue("t", {"first": True})
queue.checkpoint()  # the log is now empty: the next write needs new space

ballast = os.path.join(directory, "ballast")
with open(ballast, "wb", buffering=0) as f:
    for size in (65536, 4096, 512, 1):
        while True:
            try:
                f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break

def cli(*args):
    return subprocess.run([sys.executable, "-m", "sqlitejobq", *args, "--db", db],
                          capture_output=True, text=True, timeout=60)

payload = json.dumps({"pad": "x" * 50_000})
full = cli("enqueue", "t", payload)
jobs_when_full = queue.stats().total()
os.remove(ballast)
again = cli("enqueue", "t", payload)
total = queue.stats().total()
queue.close()
print(json.dumps({
    "full": [full.returncode, full.stdout, full.stderr],
    "jobs_when_full": jobs_when_full,
    "again": [again.returncode, again.stdout, again.stderr],
    "total": total,
}))
"""


@pytest.mark.engines("sqlite")
def test_the_cli_on_a_full_disk_prints_one_disk_full_line_and_exits_1(
    engine: Engine, private_mounts: None
) -> None:
    disk = Path(engine.tmp_path) / "disk"
    disk.mkdir()
    out = run_in_private_mount(engine, TMPFS, disk, CLI_DISK_FULL_SCRIPT)

    returncode, stdout, stderr = out["full"]
    line = assert_one_error_line(
        subprocess.CompletedProcess([], returncode, stdout, stderr), "disk full"
    )
    assert "Free space" in line
    assert out["jobs_when_full"] == 1
    returncode, stdout, stderr = out["again"]
    assert returncode == 0, out
    assert stdout.strip().isdigit(), out
    assert out["total"] == 2


READ_ONLY_SCRIPT = r"""
import json, os, subprocess, sys
from sqlitejobq import Queue

db = os.path.join(sys.argv[1], "jobs.db")
error = None
try:
    Queue(db).close()
except Exception as exc:
    error = exc
cli = subprocess.run([sys.executable, "-m", "sqlitejobq", "status", "--db", db],
                     capture_output=True, text=True, timeout=60)
print(json.dumps({
    "error_class": None if error is None else f"{type(error).__module__}.{type(error).__name__}",
    "error": str(error),
    "cli": [cli.returncode, cli.stdout, cli.stderr],
    "listing": sorted(os.listdir(sys.argv[1])),
}))
"""


@pytest.mark.engines("sqlite")
def test_a_read_only_mount_raises_read_only_database_and_leaves_the_queue_intact(
    engine: Engine, private_mounts: None
) -> None:
    directory = Path(engine.tmp_path) / "ro"
    directory.mkdir()
    db = str(directory / "jobs.db")
    make_queue_with_jobs(db, 3)
    before = fingerprint(db)

    out = run_in_private_mount(engine, READ_ONLY, directory, READ_ONLY_SCRIPT)

    assert out["error_class"] == "sqlitejobq.errors.ReadOnlyDatabase", out
    assert "read-only" in out["error"], out
    assert "permissions and the mount" in out["error"], out
    returncode, stdout, stderr = out["cli"]
    assert_one_error_line(subprocess.CompletedProcess([], returncode, stdout, stderr), "read-only")
    assert out["listing"] == ["jobs.db"]
    # outside the namespace: the file is as it was, and still a working queue
    assert fingerprint(db) == before
    with Queue(db) as queue:
        assert queue.stats().total() == 3
        job_id = queue.enqueue("t", {"n": "after"})
        assert queue.get(job_id).payload == {"n": "after"}
        assert queue.stats().total() == 4
