"""The SQLite backend: pragmas, the write path and its busy-retry policy, fork safety,
unsafe filesystems."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from sqlitejobq import (
    DatabaseBusy,
    InvalidArgument,
    Queue,
    SqliteJobQError,
    StorageError,
    UnsafeFilesystem,
)
from sqlitejobq.backends.shared import LockMetrics
from sqlitejobq.backends.sqlite import filesystem
from sqlitejobq.backends.sqlite.connection import BusyRetry, is_busy, run_write
from sqlitejobq.backends.sqlite.filesystem import NETWORK_FILESYSTEMS, filesystem_type


@pytest.fixture
def engine() -> str:
    """Every test here is about the SQLite engine itself: its file, pragmas and locks."""
    return "sqlite"


def hold_write_lock(path: str, seconds: float, ready: multiprocessing.synchronize.Event) -> None:
    """In another process: take the write lock and keep it for ``seconds``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO sqlitejobq_batches (name, created_at) VALUES ('holder', 0)")
    ready.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def start_holder(path: str, seconds: float) -> multiprocessing.Process:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=hold_write_lock, args=(str(path), seconds, ready))
    proc.start()
    assert ready.wait(30), "lock holder did not start"
    return proc


def test_connections_use_wal_autocommit_and_the_chosen_pragmas(db_path: str) -> None:
    with Queue(db_path, synchronous="FULL", busy_timeout=2.5) as q:
        conn = q.backend.connection()
        assert conn.isolation_level is None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == 64 * 1024 * 1024
    with Queue(db_path) as q:
        assert q.backend.connection().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_each_thread_has_its_own_connection(queue: Queue) -> None:
    seen: list[sqlite3.Connection] = []

    def grab() -> None:
        seen.append(queue.backend.connection())  # held: an id is not reused while in use
        queue.enqueue("t")

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len({id(conn) for conn in seen}) == 4
    assert queue.stats().total() == 4


def test_is_busy_uses_the_sqlite_error_code() -> None:
    busy = sqlite3.OperationalError("anything")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    snapshot = sqlite3.OperationalError("anything")
    snapshot.sqlite_errorcode = 517  # type: ignore[attr-defined]  # SQLITE_BUSY_SNAPSHOT
    locked = sqlite3.OperationalError("anything")
    locked.sqlite_errorcode = 6  # type: ignore[attr-defined]
    other = sqlite3.OperationalError("database is locked")
    other.sqlite_errorcode = 1  # type: ignore[attr-defined]
    assert is_busy(busy) and is_busy(snapshot) and is_busy(locked)
    assert not is_busy(other)
    assert not is_busy(ValueError("database is locked"))


def test_a_real_lock_error_from_sqlite_is_recognised(db_path: str) -> None:
    a = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    b = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    a.execute("CREATE TABLE t (x)")
    a.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as caught:
        b.execute("BEGIN IMMEDIATE")
    assert is_busy(caught.value)
    a.execute("ROLLBACK")
    a.close()
    b.close()


def test_a_write_waits_for_a_lock_held_two_seconds_and_succeeds(db_path: str) -> None:
    with Queue(db_path, busy_timeout=0.2, retry_timeout=20.0) as q:
        holder = start_holder(db_path, 2.0)
        started = time.monotonic()
        jid = q.enqueue("t", {"after": "wait"})
        waited = time.monotonic() - started
        holder.join(30)
        assert q.get(jid).payload == {"after": "wait"}
        assert waited >= 0.5  # it really waited for the other process
        stats = q.stats().lock
        assert stats.lock_retries >= 1 and stats.busy_errors == 0
        assert stats.lock_wait_seconds >= 0.5


def test_a_lock_held_past_the_bound_raises_database_busy_and_writes_nothing(db_path: str) -> None:
    with Queue(db_path, busy_timeout=0.1, retry_timeout=1.0) as q:
        q.enqueue("t", "before")
        holder = start_holder(db_path, 4.0)
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match="stayed locked by other connections"):
            q.enqueue_many("t", ["a", "b", "c"])
        assert time.monotonic() - started < 3.5
        holder.join(30)
        assert [j.payload for j in q.jobs()] == ["before"]
        assert q.stats().lock.busy_errors == 1
        # the lock is free again: writes go on
        q.enqueue("t", "after")
        assert q.stats().total() == 2


def test_run_write_rolls_back_when_the_body_fails(db_path: str) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    retry = BusyRetry(5.0, LockMetrics())

    def body(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        run_write(conn, body, retry=retry)
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    conn.close()


def test_a_non_busy_error_is_not_retried(db_path: str) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    metrics = LockMetrics()
    calls = []

    def body(c: sqlite3.Connection) -> None:
        calls.append(1)
        c.execute("INSERT INTO missing_table VALUES (1)")

    with pytest.raises(StorageError, match="no such table") as raised:
        run_write(conn, body, retry=BusyRetry(5.0, metrics))
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert len(calls) == 1 and metrics.retries == 0
    conn.close()


def _child_uses_queue(queue: Queue, out: multiprocessing.queues.Queue[object]) -> None:
    try:
        conn = queue.backend.connection()
        jid = queue.enqueue("t", {"from": "child"})
        out.put((id(conn), jid, os.getpid()))
    except BaseException as exc:
        out.put(repr(exc))


def test_a_forked_child_opens_its_own_connection(queue: Queue) -> None:
    parent_conn = queue.backend.connection()
    queue.enqueue("t", {"from": "parent"})
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.queues.Queue[object] = ctx.Queue()
    child = ctx.Process(target=_child_uses_queue, args=(queue, out))
    child.start()
    result = out.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0, result
    assert isinstance(result, tuple)
    assert result[2] != os.getpid()
    # the parent's connection still works and sees the child's job
    assert queue.backend.connection() is parent_conn
    assert {j.payload["from"] for j in queue.jobs()} == {"parent", "child"}


MOUNTS = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /mnt/shared rw,relatime - nfs4 server:/export rw,vers=4.2
41 27 0:51 / /mnt/win\\040drive rw,relatime - 9p drvfs rw
42 40 0:52 / /mnt/shared/local rw,relatime - ext4 /dev/vdb rw
"""


def test_filesystem_type_reads_the_mount_table(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTS)
    assert filesystem_type("/mnt/shared/jobs.db", str(table)) == "nfs4"
    assert filesystem_type("/mnt/shared/local/jobs.db", str(table)) == "ext4"
    assert filesystem_type("/mnt/win drive/x/jobs.db", str(table)) == "9p"
    assert filesystem_type("/home/app/jobs.db", str(table)) == "ext4"
    assert filesystem_type("/x", str(tmp_path / "absent")) is None


def test_a_database_on_a_network_filesystem_is_refused_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(f"27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                     f"50 27 0:60 / {tmp_path} rw - nfs4 server:/x rw\n")  # fmt: skip
    monkeypatch.setattr(filesystem, "MOUNTINFO", str(table))
    with pytest.raises(UnsafeFilesystem, match="on a nfs4 filesystem"):
        Queue(tmp_path / "jobs.db")
    assert not (tmp_path / "jobs.db").exists()
    with Queue(tmp_path / "jobs.db", allow_network_filesystem=True) as q:
        assert q.get(q.enqueue("t")).task == "t"


def test_the_real_mount_table_accepts_this_local_disk(db_path: str) -> None:
    assert filesystem_type(str(db_path)) not in NETWORK_FILESYSTEMS
    Queue(db_path).close()


def test_checkpoint_truncates_the_wal(queue: Queue, db_path: str) -> None:
    queue.enqueue_many("t", [{"pad": "x" * 500} for _ in range(500)])
    wal = Path(str(db_path) + "-wal")
    assert wal.stat().st_size > 0
    busy, _, _ = queue.checkpoint()
    assert busy == 0
    assert wal.stat().st_size == 0
    assert queue.stats().total() == 500


def test_queue_accepts_pathlike_and_refuses_bad_settings(tmp_path: Path) -> None:
    with Queue(tmp_path / "a.db") as q:
        assert q.path.endswith("a.db")
    with pytest.raises(InvalidArgument, match="synchronous must be one of"):
        Queue(tmp_path / "b.db", synchronous="SOMETIMES")
    with pytest.raises(SqliteJobQError, match="needs a database file"):
        Queue(":memory:")
    with pytest.raises(SqliteJobQError, match="does not exist"):
        Queue(tmp_path / "missing" / "c.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db"]
