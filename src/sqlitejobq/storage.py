"""SQLite storage: connections and pragmas, the one write path, the busy-retry policy.

Every write in sqlitejobq goes through ``run_write``: it opens ``BEGIN IMMEDIATE`` (a
deferred transaction that later upgrades to a write lock fails at once with ``database is
locked``, busy timeout or not), commits or rolls back, and is retried as a whole by one
tenacity policy while SQLite reports SQLITE_BUSY or SQLITE_LOCKED.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from . import sql
from .errors import (
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    DiskFull,
    DuplicateJob,
    NotAQueueDatabase,
    PayloadError,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
    StorageError,
    UnsafeFilesystem,
)
from .job import LockStats
from .wakeup import Waker

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")
Row = tuple[Any, ...]

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
#: Primary result codes of a failing store (permission, memory, read-only, I/O, corrupt,
#: full, cannot open, lock protocol, no large files, not a database), not of bad SQL.
_FAULTS = frozenset({3, 7, 8, 10, 11, 13, 14, 15, 22, 26})
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Where the mount table is read from to recognise network filesystems.
MOUNTINFO = "/proc/self/mountinfo"

#: Filesystem types on which SQLite's POSIX locks or shared-memory WAL index are unreliable.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "v9fs",
        "drvfs", "fuse.sshfs", "sshfs", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph",
        "lustre", "gpfs", "beegfs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse", "davfs",
        "fuse.davfs2", "osxfs", "fuse.grpcfuse",
    }
)  # fmt: skip


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite saying another connection holds the lock."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "database is locked" in text or "is busy" in text or "table is locked" in text


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_storage_fault(exc: BaseException) -> bool:
    """True when ``exc`` is the storage failing (full, read-only, I/O, corrupt, cannot open),
    as opposed to a statement being wrong: such a fault says nothing about the SQL."""
    return isinstance(exc, sqlite3.Error) and _primary_code(exc) in _FAULTS


def storage_error(exc: BaseException, path: str, what: str) -> SqliteJobQError:
    """The library error, with what to do about it, for an error the sqlite3 module raised.

    Every fault of the engine reaches callers as one of these, never as a bare sqlite3 error.
    """
    if isinstance(exc, SqliteJobQError):
        return exc
    if isinstance(exc, UnicodeError):
        return PayloadError(f"{what}: text is not valid Unicode and cannot be stored ({exc})")
    code = _primary_code(exc)
    text = str(exc)
    if code == _SQLITE_FULL or "disk is full" in text:
        return DiskFull(
            f"{what}: disk full: the file system holding {path} has no space left (or the "
            f"database reached its size limit); nothing of this write was stored. Free space "
            f"(purge finished jobs, checkpoint) and try again"
        )
    if code == _SQLITE_READONLY or "readonly database" in text:
        return ReadOnlyDatabase(
            f"{what}: database {path} is read-only ({text}); sqlitejobq writes the file, its "
            f"-wal and -shm files and their directory: check permissions and the mount"
        )
    if code == _SQLITE_NOTADB or "not a database" in text:
        return NotAQueueDatabase(f"{path} is not a SQLite database ({text}); point at the "
                                 f"queue's own file")  # fmt: skip
    if code == _SQLITE_CORRUPT or "malformed" in text:
        return CorruptDatabase(
            f"{what}: database {path} is corrupt ({text}); restore it from a backup, or "
            f"recover what is left with: sqlite3 {path} .recover"
        )
    if code == _SQLITE_CANTOPEN or "unable to open" in text:
        return DatabaseUnavailable(
            f"{what}: cannot open database {path} ({text}); check that its directory exists "
            f"and that this user may read and write there"
        )
    if code in _FAULTS:
        return DatabaseUnavailable(f"{what}: the database {path} failed ({text}); check the "
                                   f"disk and the file system")  # fmt: skip
    return StorageError(f"{what} failed on {path}: {text}")


class LockMetrics:
    """Counters of waiting for the write lock, shared by every thread of one storage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes = 0
        self.wait = 0.0
        self.wait_max = 0.0
        self.retries = 0
        self.busy_errors = 0

    def record_write(self, waited: float) -> None:
        """Count one write transaction and how long it waited to begin."""
        with self._lock:
            self.writes += 1
            self.wait += waited
            if waited > self.wait_max:
                self.wait_max = waited

    def record_retry(self, state: RetryCallState) -> None:
        """Count one retry of a busy write and the wait before it (tenacity's before_sleep)."""
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        with self._lock:
            self.retries += 1
            self.wait += sleep
        log.debug("database busy, write retry %d in %.3fs", state.attempt_number, sleep)

    def record_first_busy(self) -> None:
        """Count the busy error that hands a write over to the retry policy."""
        with self._lock:
            self.retries += 1

    def record_busy_error(self) -> None:
        """Count a write that gave up: the database stayed busy past the time bound."""
        with self._lock:
            self.busy_errors += 1

    def snapshot(self) -> LockStats:
        """The counters so far, as one consistent value."""
        with self._lock:
            return LockStats(
                writes=self.writes,
                lock_wait_seconds=self.wait,
                lock_wait_max_seconds=self.wait_max,
                lock_retries=self.retries,
                busy_errors=self.busy_errors,
            )


class BusyRetry:
    """The one retry policy: on busy/locked only, full-jitter exponential waits, bounded.

    Calling it runs a function under the policy. When the bound is spent the caller gets
    DatabaseBusy, within ``timeout`` of the call plus one statement's time: the waits and
    SQLite's own busy handler are both cut to what is left of the bound. Every other error
    of the engine becomes the library error that names it (``storage_error``).
    """

    def __init__(self, timeout: float, metrics: LockMetrics, label: str = "the database") -> None:
        self.timeout = timeout
        self.metrics = metrics
        self.label = label
        self._retrying = Retrying(
            retry=retry_if_exception(is_busy),
            wait=wait_random_exponential(multiplier=0.002, max=0.5),
            before_sleep=metrics.record_retry,
        )

    def __call__(self, fn: Callable[[], T], what: str, conn: sqlite3.Connection | None = None) -> T:
        """Run ``fn`` under the policy; ``what`` names the operation in error messages.

        With ``conn`` (the connection ``fn`` uses), SQLite's busy wait of each retry is cut
        to the time left, so the bound holds whatever the connection's busy timeout.
        """
        # The uncontended case pays for one plain call; the policy takes over at the
        # first busy error, with what is left of the time bound.
        deadline = time.monotonic() + self.timeout
        try:
            return fn()
        except (sqlite3.Error, UnicodeError) as exc:
            if not is_busy(exc):
                raise storage_error(exc, self.label, what) from exc
            self.metrics.record_first_busy()
        wait = self._retrying.wait

        def until_deadline(state: RetryCallState) -> float:
            return max(0.0, min(wait(state), deadline - time.monotonic()))

        def cut_busy_wait(state: RetryCallState) -> None:
            left = deadline - time.monotonic()
            if conn is not None and left < self.timeout:
                conn.execute(f"PRAGMA busy_timeout = {max(0, int(left * 1000))}")

        busy_ms = None if conn is None else conn.execute("PRAGMA busy_timeout").fetchone()[0]
        try:
            return self._retrying.copy(
                stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
                wait=until_deadline,
                before=cut_busy_wait,
            )(fn)
        except RetryError as exc:
            self.metrics.record_busy_error()
            last = exc.last_attempt.exception()
            raise DatabaseBusy(
                f"{what}: the database stayed locked by other connections for more than "
                f"{self.timeout:g}s ({exc.last_attempt.attempt_number + 1} attempts; "
                f"last error: {last})"
            ) from last
        except (sqlite3.Error, UnicodeError) as exc:
            raise storage_error(exc, self.label, what) from exc
        finally:
            if busy_ms is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")  # type: ignore[union-attr]


def run_write(
    conn: sqlite3.Connection,
    body: Callable[[sqlite3.Connection], T],
    *,
    retry: BusyRetry,
    lock: threading.Lock | None = None,
    what: str = "write",
) -> T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction, retried as a whole while busy.

    ``lock`` serializes the writers of one process so that its threads queue in Python
    instead of spinning in SQLite's busy handler. ``body`` may run more than once, so it
    must have no effect outside the transaction.
    """
    deadline = time.monotonic() + retry.timeout

    def attempt() -> T:
        if lock is not None and not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DatabaseBusy(f"{what}: other threads of this process held the write lock "
                               f"for more than {retry.timeout:g}s")  # fmt: skip
        try:
            started = time.perf_counter()
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                retry.metrics.record_write(time.perf_counter() - started)
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
            return result
        finally:
            if lock is not None:
                lock.release()

    return retry(attempt, what, conn)


def _roll_back(conn: sqlite3.Connection) -> None:
    """Undo an open transaction; an error here must not hide the one that caused it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed after an error: %s", exc)


def run_read(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T], *,
             retry: BusyRetry) -> T:  # fmt: skip
    """Run several reads in one snapshot (a deferred transaction that never writes)."""

    def attempt() -> T:
        conn.execute("BEGIN")
        try:
            return body(conn)
        finally:
            _roll_back(conn)

    return retry(attempt, "read", conn)


_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|COMMIT|END|ROLLBACK|VACUUM|ATTACH|DETACH)\b", re.IGNORECASE
)
_LEADING_COMMENTS = re.compile(r"^(\s*(--[^\n]*(\n|$)|/\*.*?\*/))*", re.DOTALL)


def split_statements(script: str) -> list[str]:
    """Split SQL text into complete statements (trigger bodies and strings kept whole)."""
    statements, start = [], 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statement = script[start : index + 1].strip()
            if _LEADING_COMMENTS.sub("", statement).strip(" \t\n;"):
                statements.append(statement)
            start = index + 1
    rest = script[start:].strip()
    if _LEADING_COMMENTS.sub("", rest).strip():
        statements.append(rest)
    return statements


class TransactionConnection:
    """A connection lent to code running inside sqlitejobq's transaction (a migration, an
    on_complete hook): it can read and write, but not end or escape the transaction.

    ``executescript`` runs its statements one by one inside the transaction (the sqlite3
    module's own would commit first); ``commit``, ``rollback`` and statements that open,
    end or leave the transaction are refused. Everything else is the sqlite3 connection's.
    """

    def __init__(self, conn: sqlite3.Connection, error: type[Exception], owner: str) -> None:
        self._conn = conn
        self._error = error
        self._owner = owner

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run one statement inside the transaction; transaction control is refused."""
        self._refuse_transaction_control(sql)
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        """Run one statement per parameter set inside the transaction."""
        self._refuse_transaction_control(sql)
        return self._conn.executemany(sql, parameters)

    def executescript(self, script: str, /) -> None:
        """Run the script's statements one by one, inside the transaction."""
        for statement in split_statements(script):
            self.execute(statement)

    def commit(self) -> None:
        """Refused: the transaction is sqlitejobq's, which commits it."""
        raise self._error(f"{self._owner} must not commit: it runs inside one transaction")

    def rollback(self) -> None:
        """Refused: raise an exception to undo what was written instead."""
        raise self._error(f"{self._owner} must not roll back; raise an exception instead")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _refuse_transaction_control(self, statement: str) -> None:
        match = _TRANSACTION_CONTROL.match(_LEADING_COMMENTS.sub("", statement))
        if match:
            raise self._error(
                f"{match.group(1).upper()} is not allowed in {self._owner}: it already runs "
                f"in a transaction of its own"
            )


def connect(
    path: str,
    *,
    synchronous: str = "NORMAL",
    busy_timeout: float = 5.0,
    journal_size_limit: int = 64 * 1024 * 1024,
) -> sqlite3.Connection:
    """A connection in autocommit mode (no implicit transactions) with sqlitejobq's pragmas.

    None of the pragmas writes to the file: opening never changes a database.
    """
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA journal_size_limit = {int(journal_size_limit)}")
        conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.Error as exc:
        raise storage_error(exc, path, "open") from exc
    return conn


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_database_file(path: str) -> None:
    """Refuse, before anything touches it, a file that is not a SQLite database or that is
    shorter than its own header says (truncated). A missing or empty file is a new queue."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot read database {path}: {exc}") from exc
    if size == 0:
        return
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot read database {path}: {exc}") from exc
    if not header.startswith(_SQLITE_HEADER):
        raise NotAQueueDatabase(
            f"{path} is not a SQLite database (it does not start with the SQLite header); "
            f"point at the queue's own file, or at a new path to create one"
        )
    if len(header) < 100:
        raise CorruptDatabase(f"database {path} is truncated: {size} bytes, shorter than its "
                              f"header; restore it from a backup")  # fmt: skip
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # the page count in the header is valid when its "valid for" counter matches the change
    # counter; with a write-ahead log present, the log may still hold the last pages
    header_valid = header[24:28] == header[92:96]
    wal = _size_or_zero(path + "-wal")
    if header_valid and wal == 0 and pages and size < pages * page_size:
        raise CorruptDatabase(
            f"database {path} is truncated: its header says {pages} pages of {page_size} "
            f"bytes ({pages * page_size} bytes) but the file has {size}; restore it from a "
            f"backup, or recover what is left with: sqlite3 {path} .recover"
        )


def _size_or_zero(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


_LIBRARY_OBJECTS = r"""
SELECT name FROM sqlite_master
WHERE type = 'table' AND name LIKE 'sqlitejobq\_%' ESCAPE '\' ORDER BY name
"""


def foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables named like the library's that the library did not create: they exist, but no
    migration of the library's namespace is recorded. Reads only."""
    names = [row[0] for row in conn.execute(_LIBRARY_OBJECTS)]
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


class Step(enum.Enum):
    """A fenced change to a claimed job; each names one statement of the backend."""

    COMPLETE = "complete"
    FAIL = "fail"
    RELEASE = "release"
    ABANDON = "abandon"
    HEARTBEAT = "heartbeat"
    PROGRESS = "progress"
    DEFER = "defer"


_STEP_SQL = {
    Step.COMPLETE: sql.COMPLETE,
    Step.FAIL: sql.FAIL,
    Step.RELEASE: sql.RELEASE,
    Step.ABANDON: sql.ABANDON,
    Step.HEARTBEAT: sql.HEARTBEAT,
    Step.PROGRESS: sql.SET_PROGRESS,
    Step.DEFER: sql.DEFER_UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker's row: who it is and what it has done (counts and lock waits so far)."""

    id: str
    hostname: str
    pid: int
    queues: str
    concurrency: int
    now: float
    started_at: float = 0.0
    stopped_at: float | None = None
    jobs_completed: int = 0
    jobs_failed: int = 0
    lock: LockStats = field(default_factory=LockStats)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Who claims, from which queues (None: all), how many, for how long, as of when."""

    worker: str
    queues: tuple[str, ...] | None
    limit: int
    lease: float
    now: float


class Storage(Protocol):
    """What the Queue needs of a database: the seam where another engine plugs in.

    Rows of jobs come back as tuples in the order of ``sql.JOB_COLUMNS``; times are epoch
    seconds; JSON is already encoded. Every method that writes is atomic and retried while
    the database is busy.
    """

    path: str
    settings: Settings
    metrics: LockMetrics

    def close(self) -> None:
        """Close this process's connections; later calls raise QueueClosed."""

    def notify(self) -> None:
        """Wake the workers of this process: a job was just enqueued here."""

    @property
    def waker(self) -> Waker:
        """Wakes this process's idle workers: enqueues here, commits elsewhere."""

    def migrate_schema(self) -> None:
        """Create or update the backend's own tables."""

    def insert_jobs(
        self,
        rows: Iterable[tuple[Any, ...]],
        *,
        batch_name: str | None = None,
        make_batch: bool = False,
        now: float,
        connection: sqlite3.Connection | None = None,
    ) -> tuple[int | None, list[int]]:
        """Insert encoded jobs (in the caller's transaction with ``connection``); returns
        the batch id and the job ids, an active job's id for a unique key already held."""

    def exchange(
        self, steps: Sequence[tuple[Step, dict[str, Any]]], claim: ClaimRequest | None
    ) -> tuple[list[Any], list[Row]]:
        """Apply fenced steps to claimed jobs, then claim more, in one transaction."""

    def rescue_expired(
        self, now: float, error: str, renew: Sequence[tuple[Step, dict[str, Any]]] = ()
    ) -> list[Row]:
        """Take back the jobs whose lease ended before ``now``; their rows after the change.

        ``renew`` (heartbeats of the caller's own running jobs) is applied first, in the
        same transaction, so a worker never takes back a job it is still running."""

    def cancel(self, job_id: int, now: float) -> str | None:
        """Cancel a queued job or flag a running one; its status then, None if it was neither."""

    def retry(self, job_ids: Sequence[int], now: float) -> list[int]:
        """Queue failed or cancelled jobs again with fresh attempts; the ids re-queued."""

    def purge(self, cutoff: float, dead_before: float, chunk: int = 2000) -> int:
        """Delete jobs that finished before ``cutoff``, then batches left with no job and the
        rows of workers that stopped (or went silent before ``dead_before``); how many jobs."""

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the write-ahead log into the database: (busy, log frames, frames copied)."""

    def data_version(self) -> int:
        """A number that changes whenever another connection commits."""

    def get_job(self, job_id: int) -> Row | None:
        """The job's row, or None if there is no such job."""

    def job_status(self, job_id: int) -> str | None:
        """The job's status, or None if there is no such job."""

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job."""

    def list_jobs(self, filters: dict[str, Any], oldest_first: bool) -> list[Row]:
        """Rows of the jobs matching ``filters`` (status, queue, task, batch_id, limit)."""

    def failed_ids(self) -> list[int]:
        """The ids of every failed job, in enqueue order."""

    def batch(self, batch_id: int) -> Row | None:
        """The batch's counts in ``BatchProgress`` field order, or None if there is none."""

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None if there is no batch."""

    def batch_jobs(self, batch_id: int) -> list[Row]:
        """Rows of the batch's jobs in enqueue order."""

    def next_run_at(self, queues: tuple[str, ...] | None) -> float | None:
        """The earliest ``run_at`` of a queued job in ``queues`` (None: every queue)."""

    def next_lease_expiry(self) -> float | None:
        """When the earliest lease of a processing job ends, or None."""

    def snapshot(self, alive_since: float) -> tuple[list[Row], float | None, Row]:
        """Counts by (queue, status), the earliest run_at, and the workers' lock totals."""

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts (or starts again under the same id)."""

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row: last seen, counts, lock waits, stop time."""

    def workers(self, limit: int) -> list[Row]:
        """Rows of the workers in ``WorkerInfo`` field order, most recently started first."""


# --- network filesystems ------------------------------------------------------------------


def filesystem_type(path: str, mountinfo: str | None = None) -> str | None:
    """The filesystem type holding ``path`` per the mount table, or None if unknown."""
    try:
        with open(mountinfo or MOUNTINFO, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        left, right = fields[0].split(), fields[1].split()
        if len(left) < 5 or not right:
            continue
        mount_point = _unescape_mount(left[4])
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right[0]
    return best_type


def _unescape_mount(text: str) -> str:
    return (
        text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
        .replace("\\134", "\\")
    )  # fmt: skip


def check_filesystem(path: str, *, allow_network: bool, mountinfo: str | None = None) -> None:
    """Refuse a database on a network filesystem unless the caller opted in."""
    fstype = filesystem_type(os.path.dirname(os.path.realpath(path)) or ".", mountinfo)
    if fstype is None or fstype not in NETWORK_FILESYSTEMS:
        return
    if allow_network:
        log.warning("database %s is on a %s filesystem; SQLite locking may be unsafe", path,
                    fstype)  # fmt: skip
        return
    raise UnsafeFilesystem(
        f"database {path} is on a {fstype} filesystem, where SQLite's file locks are not "
        f"reliable and jobs could be claimed twice or the file corrupted; put it on a local "
        f"disk, or pass allow_network_filesystem=True if you accept the risk"
    )


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
    """What every storage on one file in this process shares: the writer lock, the waker."""

    def __init__(self, path: str) -> None:
        self.write_lock = threading.Lock()
        self.waker = Waker(path)


_shared_by_file: dict[str, _Shared] = {}
_shared_lock = threading.Lock()


def shared_for(path: str) -> _Shared:
    """What every storage of this process on the file at ``path`` shares."""
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Connection and retry settings of one storage."""

    synchronous: str = "NORMAL"
    busy_timeout: float = 5.0
    retry_timeout: float = 30.0
    journal_size_limit: int = 64 * 1024 * 1024
    allow_network_filesystem: bool = False


class SqliteStorage:
    """The SQLite backend: one connection per thread, every statement of the engine."""

    def __init__(self, path: str | os.PathLike[str], settings: Settings) -> None:
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise SqliteJobQError(
                f"a queue needs a database file shared by its workers, got {self.path!r}"
            )
        self.settings = settings
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

    @property
    def _shared(self) -> _Shared:
        generation, shared = self._shared_of
        if generation != _fork_generation:
            self._shared_of = (_fork_generation, shared := shared_for(self.path))
        return shared

    @property
    def waker(self) -> Waker:
        """Wakes this process's idle workers on this file (enqueues here, commits elsewhere)."""
        return self._shared.waker

    # connections

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

    def _refuse_foreign_file(self) -> None:
        """Read the file's schema (and change nothing) before the first write: tables named
        like the library's that it did not create, or a library schema newer than this
        code, are refused while the file is still exactly as it was."""
        # imported here: the migrations module itself writes through this module
        from . import schema
        from .migrations import pending_migrations

        conn = self.connection()

        def inspect() -> None:
            foreign = foreign_tables(conn)
            if foreign:
                raise NotAQueueDatabase(
                    f"{self.path} holds table(s) {', '.join(foreign)} that sqlitejobq did not "
                    f"create (no migration of the library is recorded); use another file, or "
                    f"rename those tables"
                )
            pending_migrations(conn, schema.MIGRATIONS, schema.NAMESPACE)

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

    def close(self) -> None:
        """Close every connection this storage opened in this process."""
        self._closed = True
        with self._holders_lock:
            holders = list(self._holders)
            self._holders.clear()
        for holder in holders:
            if holder.generation == _fork_generation:
                holder.conn.close()
        self._local = threading.local()

    # the write and read paths

    def write(self, body: Callable[[sqlite3.Connection], T], what: str = "write") -> T:
        """Run ``body`` in one BEGIN IMMEDIATE transaction, retried while the file is busy."""
        return run_write(
            self.connection(), body, retry=self.busy_retry, lock=self._shared.write_lock, what=what
        )

    def read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run several reads in one consistent snapshot."""
        return run_read(self.connection(), body, retry=self.busy_retry)

    def read_one(
        self, statement: str, parameters: Sequence[Any] | dict[str, Any] = ()
    ) -> Row | None:
        """One row of a single read statement (autocommit: its own snapshot)."""
        conn = self.connection()
        result: Row | None = self.busy_retry(
            lambda: conn.execute(statement, parameters).fetchone(), "read", conn
        )
        return result

    def read_all(
        self, statement: str, parameters: Sequence[Any] | dict[str, Any] = ()
    ) -> list[Row]:
        """Every row of a single read statement (autocommit: its own snapshot)."""
        conn = self.connection()
        result: list[Row] = self.busy_retry(
            lambda: conn.execute(statement, parameters).fetchall(), "read", conn
        )
        return result

    def notify(self) -> None:
        """Wake the workers of this process waiting on this file."""
        self._shared.waker.notify()

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

    # --- the operations of the queue ---------------------------------------------------

    def insert_jobs(
        self,
        rows: Iterable[tuple[Any, ...]],
        *,
        batch_name: str | None = None,
        make_batch: bool = False,
        now: float,
        connection: sqlite3.Connection | None = None,
    ) -> tuple[int | None, list[int]]:
        """Insert jobs (task, queue, payload, priority, run_at, max_attempts, unique_key).

        A job whose unique key is already held by a queued or processing job is not
        inserted; the existing id is returned in its place. Returns (batch id, job ids).
        """
        materialized = list(rows)

        def body(conn: sqlite3.Connection) -> tuple[int | None, list[int]]:
            tally = _Tally()
            batch_id = None
            if make_batch:
                batch_id = int(conn.execute(sql.INSERT_BATCH, (batch_name, now)).fetchone()[0])
            if len(materialized) > 1 and all(row[6] is None for row in materialized):
                ids = _insert_many(conn, materialized, batch_id, now)
                for row in materialized:
                    tally.move(row[1], batch_id, None, "queued")
            else:
                ids = []
                for task, queue, payload, priority, run_at, max_attempts, key in materialized:
                    row = conn.execute(sql.INSERT_JOB, (
                        task, queue, payload, priority, run_at, max_attempts, key, batch_id, now,
                    )).fetchone()  # fmt: skip
                    if row is None:
                        row = conn.execute(sql.ACTIVE_JOB_WITH_KEY, (key,)).fetchone()
                    else:
                        tally.move(queue, batch_id, None, "queued")
                    ids.append(int(row[0]))
            tally.write(conn)
            return batch_id, ids

        if connection is None:
            return self.write(body, "enqueue")
        return _in_caller_transaction(connection, self.path, body)

    def exchange(
        self, steps: Sequence[tuple[Step, dict[str, Any]]], claim: ClaimRequest | None
    ) -> tuple[list[Any], list[Row]]:
        """In one transaction: apply fenced steps to claimed jobs, then claim more.

        For each step: the value its statement returns (the new status, or the cancel flag),
        or None when the claim no longer owned the job and nothing changed. Then the rows
        of the jobs claimed (none when ``claim`` is None).
        """

        def body(conn: sqlite3.Connection) -> tuple[list[Any], list[Row]]:
            tally = _Tally()
            results = _apply_steps(conn, steps, tally)
            rows = [] if claim is None else _claim_rows(conn, claim)
            for row in rows:
                tally.move(row[2], row[17], "queued", "processing")
            tally.write(conn)
            return results, rows

        what = "claim" if not steps else steps[0][0].value
        return self.write(body, what)

    def rescue_expired(
        self, now: float, error: str, renew: Sequence[tuple[Step, dict[str, Any]]] = ()
    ) -> list[Row]:
        """Take back jobs whose lease ended before ``now``; their rows after the change.

        ``renew`` (heartbeats of the caller's own running jobs) is applied first, in the
        same transaction, so a worker never takes back a job it is still running."""

        def body(conn: sqlite3.Connection) -> list[Row]:
            tally = _Tally()
            _apply_steps(conn, renew, tally)
            rows = conn.execute(sql.RESCUE_EXPIRED, {"now": now, "error": error}).fetchall()
            for row in rows:
                tally.move(row[6], row[7], "processing", row[2])
            tally.write(conn)
            return rows

        return self.write(body, "rescue")

    def cancel(self, job_id: int, now: float) -> str | None:
        """Cancel a queued job or flag a running one; its status then, None if it was neither."""

        def body(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(sql.CANCEL, {"id": job_id, "now": now}).fetchone()
            if row is None:
                return None
            if row[0] == "cancelled":
                tally = _Tally()
                tally.move(row[1], row[2], "queued", "cancelled")
                tally.write(conn)
            return str(row[0])

        return self.write(body, "cancel")

    def retry(self, job_ids: Sequence[int], now: float) -> list[int]:
        """Queue failed or cancelled jobs again with fresh attempts; the ids re-queued."""

        def body(conn: sqlite3.Connection) -> list[int]:
            tally = _Tally()
            done = []
            for job_id in job_ids:
                before = conn.execute(sql.STATUS_QUEUE_BATCH, (job_id,)).fetchone()
                try:
                    row = conn.execute(sql.RETRY, {"id": job_id, "now": now}).fetchone()
                except sqlite3.IntegrityError:
                    key = conn.execute(sql.UNIQUE_KEY, (job_id,)).fetchone()[0]
                    raise DuplicateJob(
                        f"job {job_id} cannot be retried: another queued or processing job "
                        f"holds its unique key {key!r}"
                    ) from None
                if row is not None:
                    tally.move(before[1], before[2], before[0], "queued")
                    done.append(job_id)
            tally.write(conn)
            return done

        return self.write(body, "retry")

    def purge(self, cutoff: float, dead_before: float, chunk: int = 2000) -> int:
        """Delete finished jobs older than ``cutoff`` in short transactions; the count.

        Then batches with no job left and none queued or processing, and the rows of workers
        that stopped or went silent (before ``dead_before``) before the cutoff. Counts by
        queue drop the purged jobs; batch counts keep them.
        """

        def delete_chunk(conn: sqlite3.Connection) -> int:
            tally = _Tally()
            rows = conn.execute(sql.PURGE_FINISHED, {"cutoff": cutoff, "chunk": chunk}).fetchall()
            for queue, status in rows:
                tally.move(queue, None, status, None)
            tally.write(conn)
            return len(rows)

        total = 0
        while True:
            deleted = self.write(delete_chunk, "purge")
            total += deleted
            if deleted < chunk:
                break

        def tidy(conn: sqlite3.Connection) -> None:
            conn.execute(sql.PURGE_BATCHES, {"cutoff": cutoff})
            conn.execute(sql.PURGE_WORKERS, {"cutoff": cutoff, "dead_before": dead_before})

        self.write(tidy, "purge")
        return total

    def migrate_schema(self) -> None:
        """Refuse a file that is not the library's (changing nothing), then switch it to WAL
        and create or update the library's own tables."""
        # imported here: the migrations module itself writes through this module
        from . import schema
        from .migrations import migrate

        self._refuse_foreign_file()
        self._enable_wal()
        migrate(
            self.connection(),
            schema.MIGRATIONS,
            namespace=schema.NAMESPACE,
            retry_timeout=self.settings.retry_timeout,
        )

    # reads

    def get_job(self, job_id: int) -> Row | None:
        """The job's row, or None."""
        return self.read_one(sql.GET_JOB, (job_id,))

    def job_status(self, job_id: int) -> str | None:
        """The job's status, or None if there is no such job."""
        row = self.read_one(sql.JOB_STATUS, (job_id,))
        return None if row is None else str(row[0])

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job."""
        row = self.read_one(sql.CANCEL_REQUESTED, (job_id,))
        return bool(row and row[0])

    def list_jobs(self, filters: dict[str, Any], oldest_first: bool) -> list[Row]:
        """Rows of the jobs matching every filter given, by id in either direction."""
        statement = sql.LIST_JOBS_OLDEST_FIRST if oldest_first else sql.LIST_JOBS_NEWEST_FIRST
        return self.read_all(statement, filters)

    def failed_ids(self) -> list[int]:
        """The ids of every failed job, in enqueue order."""
        return [int(row[0]) for row in self.read_all(sql.FAILED_IDS)]

    def batch(self, batch_id: int) -> Row | None:
        """The batch's counts in ``BatchProgress`` field order, or None."""
        return self.read_one(sql.BATCH, (batch_id,))

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None."""
        return _scalar(self.read_one(sql.LATEST_BATCH_ID), int)

    def batch_jobs(self, batch_id: int) -> list[Row]:
        """Rows of the batch's jobs in enqueue order."""
        return self.read_all(sql.BATCH_JOBS, (batch_id,))

    def next_run_at(self, queues: tuple[str, ...] | None) -> float | None:
        """The earliest ``run_at`` of a queued job: one index seek per queue."""
        if queues is None:
            return _scalar(self.read_one(sql.NEXT_RUN_ANY_QUEUE), float)
        times = [
            t for name in queues
            if (t := _scalar(self.read_one(sql.NEXT_RUN_IN_QUEUE, {"queue": name}), float))
            is not None
        ]  # fmt: skip
        return min(times) if times else None

    def next_lease_expiry(self) -> float | None:
        """When the earliest lease of a processing job ends, or None."""
        return _scalar(self.read_one(sql.NEXT_LEASE_EXPIRY), float)

    def snapshot(self, alive_since: float) -> tuple[list[Row], float | None, Row]:
        """Counts by (queue, status), the earliest run_at, and the workers' lock totals."""

        def read(conn: sqlite3.Connection) -> tuple[list[Row], float | None, Row]:
            counts = conn.execute(sql.COUNTS).fetchall()
            earliest = _scalar(conn.execute(sql.NEXT_RUN_ANY_QUEUE).fetchone(), float)
            workers = conn.execute(sql.WORKER_TOTALS, {"alive_since": alive_since}).fetchone()
            return counts, earliest, workers

        return self.read(read)

    # workers

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts (or starts again under the same id)."""
        self.write(lambda conn: conn.execute(sql.REGISTER_WORKER, {
            "id": worker.id, "hostname": worker.hostname, "pid": worker.pid,
            "queues": worker.queues, "concurrency": worker.concurrency, "now": worker.now,
        }), "register worker")  # fmt: skip

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row (last seen, counts, lock waits, stop time); write it anew
        if it is missing (purged while the worker ran)."""
        self.write(lambda conn: conn.execute(sql.REPORT_WORKER, {
            "id": worker.id, "hostname": worker.hostname, "pid": worker.pid,
            "queues": worker.queues, "concurrency": worker.concurrency,
            "started_at": worker.started_at, "now": worker.now, "stopped_at": worker.stopped_at,
            "jobs_completed": worker.jobs_completed, "jobs_failed": worker.jobs_failed,
            "writes": worker.lock.writes, "lock_retries": worker.lock.lock_retries,
            "lock_wait_seconds": worker.lock.lock_wait_seconds,
            "lock_wait_max_seconds": worker.lock.lock_wait_max_seconds,
            "busy_errors": worker.lock.busy_errors,
        }), "report worker")  # fmt: skip

    def workers(self, limit: int) -> list[Row]:
        """Rows of the workers, most recently started first."""
        return self.read_all(sql.LIST_WORKERS, {"limit": limit})


def _insert_many(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]], batch_id: int | None, now: float
) -> list[int]:
    """Insert jobs without unique keys in one executemany; read their ids back.

    The caller holds the write lock, so the ids above the largest one before the insert
    are exactly the new jobs', in insertion order.
    """
    before = conn.execute(sql.MAX_JOB_ID).fetchone()[0] or 0
    conn.executemany(sql.INSERT_JOB_PLAIN, [(*row, batch_id, now) for row in rows])
    ids = [row[0] for row in conn.execute(sql.JOB_IDS_AFTER, (before,))]
    if len(ids) != len(rows):
        raise SqliteJobQError(f"inserted {len(rows)} jobs but found {len(ids)} new ids")
    return ids


def _apply_steps(
    conn: sqlite3.Connection, steps: Sequence[tuple[Step, dict[str, Any]]], tally: _Tally
) -> list[Any]:
    """Run each step's statement; completions go set-based, many rows per statement."""
    results: list[Any] = [None] * len(steps)
    completions = [
        n for n, (step, params) in enumerate(steps) if step is Step.COMPLETE and HOOK not in params
    ]
    ids = [steps[n][1]["id"] for n in completions]
    done: set[int] = set()
    if len(completions) > 1 and len(set(ids)) == len(ids):
        rows = _complete_many(conn, [steps[n][1] for n in completions])
        for n, job_id in zip(completions, ids, strict=True):
            row = rows.get(job_id)
            if row is not None:
                results[n] = row[0]
                tally.move(row[1], row[2], "processing", row[0])
        done = set(completions)
    for n, (step, params) in enumerate(steps):
        if n in done:
            continue
        if HOOK in params:
            row = _complete_with_hook(conn, params)
        else:
            row = conn.execute(_STEP_SQL[step], params).fetchone()
        if row is not None:
            results[n] = row[0]
            if step in _STATUS_STEPS:
                tally.move(row[1], row[2], "processing", row[0])
    return results


def _complete_with_hook(conn: sqlite3.Connection, params: dict[str, Any]) -> Row | None:
    """Complete one job and run its on_complete hook in a savepoint: both are kept, or the
    attempt is recorded as failed with the hook's error and nothing the hook wrote stays."""
    conn.execute("SAVEPOINT sqlitejobq_on_complete")
    try:
        row: Row | None = conn.execute(sql.COMPLETE, params).fetchone()
        if row is not None and row[0] == "completed":
            params[HOOK](TransactionConnection(conn, SqliteJobQError, "an on_complete hook"))
    except Exception as exc:
        conn.execute("ROLLBACK TO sqlitejobq_on_complete")
        conn.execute("RELEASE sqlitejobq_on_complete")
        if is_busy(exc):
            raise
        log.warning("job %s: on_complete failed, the attempt counts as failed: %s",
                    params["id"], exc)  # fmt: skip
        failed: Row | None = conn.execute(sql.FAIL, params[HOOK_FAILED](exc)).fetchone()
        return failed
    conn.execute("RELEASE sqlitejobq_on_complete")
    return row


def _complete_many(
    conn: sqlite3.Connection, rows: list[dict[str, Any]]
) -> dict[int, tuple[str, str, int | None]]:
    """Complete many jobs, a chunk per statement; (status, queue, batch) by job id."""
    outcome: dict[int, tuple[str, str, int | None]] = {}
    largest = sql.COMPLETE_MANY_SIZES[-1]
    for start in range(0, len(rows), largest):
        chunk = rows[start : start + largest]
        size = next(s for s in sql.COMPLETE_MANY_SIZES if s >= len(chunk))
        params: list[Any] = []
        for row in chunk:
            params += (row["id"], row["attempts"], row["worker"], row["result"], row["message"],
                       row["now"])  # fmt: skip
        params += [None] * (6 * (size - len(chunk)))
        for job_id, status, queue, batch_id in conn.execute(sql.complete_many(size), params):
            outcome[job_id] = (status, queue, batch_id)
    return outcome


class _Tally:
    """How one transaction moved jobs between statuses; written before it commits, so the
    counts by queue and by batch change in the same transaction as the jobs."""

    __slots__ = ("batches", "queues")

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], int] = {}
        self.batches: dict[int, dict[str, int]] = {}

    def move(self, queue: str, batch_id: int | None, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is not None:
            self.queues[queue, old] = self.queues.get((queue, old), 0) - 1
        if new is not None:
            self.queues[queue, new] = self.queues.get((queue, new), 0) + 1
        if batch_id is not None and new is not None:
            counts = self.batches.setdefault(batch_id, dict.fromkeys(_BATCH_COLUMNS, 0))
            counts[new] += 1
            if old is None:
                counts["total"] += 1
            else:
                counts[old] -= 1

    def write(self, conn: sqlite3.Connection) -> None:
        changed = [(q, s, n) for (q, s), n in self.queues.items() if n]
        if changed:
            conn.executemany(sql.ADD_TO_COUNT, changed)
        if self.batches:
            conn.executemany(
                sql.ADD_TO_BATCH, [{"id": b, **counts} for b, counts in self.batches.items()]
            )


_BATCH_COLUMNS = ("total", "queued", "processing", "completed", "failed", "cancelled")
#: Keys of a COMPLETE step's parameters: code to run inside the completion's transaction
#: (given the connection), and what to record instead if that code raises (given the error).
HOOK = "on_complete"
HOOK_FAILED = "on_complete_failed"
_STATUS_STEPS = frozenset({Step.COMPLETE, Step.FAIL, Step.RELEASE, Step.ABANDON, Step.DEFER})


def _claim_rows(conn: sqlite3.Connection, claim: ClaimRequest) -> list[Row]:
    params: dict[str, Any] = {
        "worker": claim.worker, "lease_until": claim.now + claim.lease, "now": claim.now,
        "limit": claim.limit,
    }  # fmt: skip
    names = claim.queues
    if names is None:
        names = tuple(row[0] for row in conn.execute(sql.QUEUES_WITH_QUEUED_JOBS))
        if not names:
            return []
    params.update({f"q{n}": name for n, name in enumerate(names)})
    return conn.execute(sql.claim_from_queues(len(names)), params).fetchall()


def _scalar(row: Row | None, kind: Callable[[Any], T]) -> T | None:
    return None if row is None or row[0] is None else kind(row[0])


def _in_caller_transaction(
    conn: sqlite3.Connection, path: str, body: Callable[[sqlite3.Connection], T]
) -> T:
    """Run ``body`` on the caller's connection, inside the caller's own transaction.

    The caller owns the transaction, so it is not retried here: a busy error becomes
    DatabaseBusy and the caller decides whether to roll back and try again.
    """
    if not isinstance(conn, sqlite3.Connection):
        raise SqliteJobQError(f"connection must be a sqlite3.Connection, got {type(conn).__name__}")
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
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise DatabaseBusy(
                f"enqueue inside the caller's transaction: database locked ({exc}); "
                f"roll back and retry the transaction, or open it with BEGIN IMMEDIATE"
            ) from exc
        raise


def hostname() -> str:
    """This machine's name, recorded in each worker's row."""
    return socket.gethostname()
