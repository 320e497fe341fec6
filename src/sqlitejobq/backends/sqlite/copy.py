"""Copying a queue, the SQLite side: a queue file read as a copy's source (read-only, one
snapshot), and a queue file written as its target (a chunk per ``BEGIN IMMEDIATE``).

The orchestration is in ``sqlitejobq.transfer``; here is only what SQLite needs said its way.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from ...errors import DatabaseUnavailable, DuplicateJob, NotAQueueDatabase, SqliteJobQError
from ...job import BatchProgress
from ...migrations.values import Migration, pending
from ..base import JobRecord
from ..shared import LockMetrics, Tally
from ..store import write_tally
from . import schema
from .backend import SqliteBackend
from .connection import BusyRetry, storage_error
from .migrate import applied
from .queries import JOB_COLUMNS
from .statements import SqliteStatements

#: The statements that write count changes (they need nothing of a queue).
_COUNTS = SqliteStatements()

T = TypeVar("T")

# --- the copy's own tables in a target ----------------------------------------------------

# Which source jobs and batches were copied, and where to: keyed by the source database's
# number here (its identity in copy_sources) and its own id, with its creation time (a byte
# copy of a source shares its identity: its own jobs are told apart by it). No foreign key
# to the jobs: a purge of the target must not be held up by the record, nor lose it.
_V1_RECORD = """
CREATE TABLE sqlitejobq_copy_sources (
    id              INTEGER PRIMARY KEY,
    identity        TEXT    NOT NULL UNIQUE,
    location        TEXT    NOT NULL,
    first_copied_at REAL    NOT NULL,
    last_copied_at  REAL    NOT NULL
);

CREATE TABLE sqlitejobq_copy_jobs (
    source    INTEGER NOT NULL,
    source_id  INTEGER NOT NULL,
    job_id     INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (source, source_id)
) WITHOUT ROWID;

CREATE INDEX sqlitejobq_copy_jobs_job ON sqlitejobq_copy_jobs (job_id);

CREATE TABLE sqlitejobq_copy_batches (
    source    INTEGER NOT NULL,
    source_id  INTEGER NOT NULL,
    batch_id   INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (source, source_id)
) WITHOUT ROWID;
"""

#: The copy's tables, applied with ``sqlitejobq.migrations.migrate`` in its own namespace.
MIGRATIONS = [
    Migration(1, "record of the jobs and batches copied from other databases", _V1_RECORD)
]

# --- reading a source ---------------------------------------------------------------------

# The library's first migration is stamped with the time the queue was created, and never
# changes: with its checksum it names the database wherever the file goes.
IDENTITY = """
SELECT name, checksum, applied_at FROM sqlitejobq_migrations
WHERE namespace = 'sqlitejobq' AND version = 1
"""

HAS_JOBS_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlitejobq_jobs'"

PROCESSING = (
    "SELECT id FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_lease "
    "WHERE status = 'processing' ORDER BY id"
)

# Jobs waiting for dependencies (none in a file of an older schema: no such status there).
WAITING = "SELECT id FROM sqlitejobq_jobs WHERE status = 'waiting' ORDER BY id"

JOBS_TO_COPY = f"""
SELECT {JOB_COLUMNS} FROM sqlitejobq_jobs
WHERE id > ? AND status IN ('queued', 'failed')
ORDER BY id LIMIT ?
"""

# Active jobs with a key, through the unique index (the terms match its predicate).
KEYED = """
SELECT id, unique_key FROM sqlitejobq_jobs
WHERE unique_key IS NOT NULL AND status IN ('queued', 'processing') AND status = 'queued'
"""

BATCHES = """
SELECT id, name, total, queued, processing, completed, failed, cancelled, created_at
FROM sqlitejobq_batches WHERE id IN (SELECT value FROM json_each(?))
"""

BATCH_JOBS_TO_COPY = """
SELECT batch_id, status, count(*) FROM sqlitejobq_jobs
WHERE batch_id IN (SELECT value FROM json_each(?)) AND status IN ('queued', 'failed')
GROUP BY batch_id, status
"""

# --- writing a target -----------------------------------------------------------------------

HAS_RECORD = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlitejobq_copy_jobs'"

REGISTER_SOURCE = """
INSERT INTO sqlitejobq_copy_sources (identity, location, first_copied_at, last_copied_at)
VALUES (:identity, :location, :now, :now)
ON CONFLICT (identity) DO UPDATE
SET location = excluded.location, last_copied_at = excluded.last_copied_at
RETURNING id
"""

FIND_SOURCE = "SELECT id FROM sqlitejobq_copy_sources WHERE identity = ?"

COPIED_JOBS = """
SELECT source_id, job_id, created_at FROM sqlitejobq_copy_jobs
WHERE source = ? AND source_id IN (SELECT value FROM json_each(?))
"""

COPIED_BATCHES = """
SELECT source_id, batch_id, created_at FROM sqlitejobq_copy_batches
WHERE source = ? AND source_id IN (SELECT value FROM json_each(?))
"""

ACTIVE_HOLDERS = """
SELECT unique_key, id FROM sqlitejobq_jobs
WHERE unique_key IN (SELECT value FROM json_each(?)) AND status IN ('queued', 'processing')
"""

COPIED_FROM = """
SELECT job_id FROM sqlitejobq_copy_jobs
WHERE source = ? AND job_id IN (SELECT value FROM json_each(?))
"""

INSERT_BATCH = "INSERT INTO sqlitejobq_batches (name, created_at) VALUES (?, ?) RETURNING id"

RECORD_BATCH = """
INSERT INTO sqlitejobq_copy_batches (source, source_id, batch_id, created_at)
VALUES (?, ?, ?, ?)
"""

# A copy keeps what the job was: its times (epoch seconds, so a delayed job stays due at
# the same instant), attempts, last error and progress; not a worker's lease.
INSERT_JOB = """
INSERT INTO sqlitejobq_jobs
    (task, queue, payload, status, priority, run_at, attempts, max_attempts, progress,
     progress_message, result, error, traceback, created_at, started_at, finished_at,
     batch_id, unique_key, cancel_requested)
VALUES (:task, :queue, :payload, :status, :priority, :run_at, :attempts, :max_attempts,
        :progress, :progress_message, :result, :error, :traceback, :created_at, :started_at,
        :finished_at, :batch_id, :unique_key, :cancel_requested)
RETURNING id
"""

RECORD_JOB = """
INSERT INTO sqlitejobq_copy_jobs (source, source_id, job_id, created_at) VALUES (?, ?, ?, ?)
"""


def migration_target(target: str) -> tuple[str, dict[str, Any]]:
    """What ``sqlitejobq.migrations.migrate`` takes to reach ``target``: the path, no options."""
    return target, {}


def database_identity(conn: sqlite3.Connection) -> str | None:
    """The queue database's identity: stable while the file moves (its path is no part of
    it), shared with a byte copy of it (a backup is the same database). None if the file
    holds no queue."""
    try:
        row = conn.execute(IDENTITY).fetchone()
    except sqlite3.OperationalError:
        return None  # no migrations table: not a queue
    if row is None:
        return None
    name, checksum, applied_at = row
    digest = hashlib.sha256(f"{name}\n{checksum}\n{float(applied_at)!r}".encode()).hexdigest()
    return "sqlite:" + digest[:32]


def _read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot write (SQLite refuses it), whatever the code does with it."""
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise storage_error(exc, path, "open") from exc


def _ids(values: Sequence[Any]) -> str:
    return json.dumps(list(values))


def _job_params(job: JobRecord, batch_id: int | None) -> dict[str, Any]:
    """The parameters of ``INSERT_JOB``: a copy of ``job`` in the target's batch ``batch_id``."""
    return {**job._asdict(), "batch_id": batch_id, "cancel_requested": int(job.cancel_requested)}


class SqliteCopySource:
    """A queue file read as a copy's source: read-only, in one read transaction that holds
    one snapshot from the first read to ``close``."""

    def __init__(self, path: str, *, retry_timeout: float) -> None:
        self.label = path
        if not os.path.isfile(path):
            raise DatabaseUnavailable(
                f"source database {path} does not exist; name the queue's SQLite file"
            )
        self._retry = BusyRetry(retry_timeout, LockMetrics(), path)
        self._conn = _read_only(path)
        try:
            self.identity = self._retry(self._begin, "open the source", self._conn)
        except BaseException:
            self._conn.close()
            raise

    def _begin(self) -> str:
        conn = self._conn
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        identity = database_identity(conn)
        if identity is None or conn.execute(HAS_JOBS_TABLE).fetchone() is None:
            raise NotAQueueDatabase(
                f"{self.label} is not a sqlitejobq queue (it has no queue tables); name the "
                f"queue's own SQLite file"
            )
        pending(schema.MIGRATIONS, applied(conn, schema.NAMESPACE), schema.NAMESPACE)
        return identity

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return body(self._conn)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.label, "read the source") from exc

    def processing(self) -> list[int]:
        """The ids of the jobs in ``processing``."""
        return self._read(lambda c: [int(r[0]) for r in c.execute(PROCESSING)])

    def waiting(self) -> list[int]:
        """The ids of the jobs waiting for dependencies."""
        return self._read(lambda c: [int(r[0]) for r in c.execute(WAITING)])

    def jobs(self, after: int, limit: int) -> list[JobRecord]:
        """Up to ``limit`` queued or failed jobs with ids above ``after``, by id."""
        rows = self._read(lambda c: c.execute(JOBS_TO_COPY, (after, limit)).fetchall())
        return [JobRecord._make((*row[:21], bool(row[21]))) for row in rows]

    def keyed(self, size: int) -> Iterator[list[tuple[int, str]]]:
        """(id, unique key) of the queued jobs that have a key, ``size`` at a time."""
        cursor = self._read(lambda c: c.execute(KEYED))
        while True:
            rows = self._read(lambda c: cursor.fetchmany(size))
            if not rows:
                return
            yield [(int(i), str(key)) for i, key in rows]

    def batches(self, ids: Sequence[int]) -> dict[int, tuple[BatchProgress, int, int]]:
        """The batches of those ids: counts, and how many queued and failed jobs to copy."""

        def read(conn: sqlite3.Connection) -> dict[int, tuple[BatchProgress, int, int]]:
            to_copy: dict[int, dict[str, int]] = {}
            for batch_id, status, count in conn.execute(BATCH_JOBS_TO_COPY, (_ids(ids),)):
                to_copy.setdefault(batch_id, {})[status] = int(count)
            found = {}
            for row in conn.execute(BATCHES, (_ids(ids),)):
                counts = to_copy.get(row[0], {})
                progress = BatchProgress(*row)
                queued, failed = counts.get("queued", 0), counts.get("failed", 0)
                found[progress.batch_id] = (progress, queued, failed)
            return found

        return self._read(read)

    def close(self) -> None:
        """End the snapshot; the file was never written."""
        self._conn.close()


def open_source(target: str, *, retry_timeout: float) -> SqliteCopySource:
    """``target`` (a queue's SQLite file) as a copy's source."""
    return SqliteCopySource(target, retry_timeout=retry_timeout)


class SqliteCopyTransaction:
    """One transaction on a target file (see ``transfer.CopyTransaction``)."""

    def __init__(self, conn: sqlite3.Connection, *, writing: bool, has_record: bool) -> None:
        self.conn = conn
        self.writing = writing
        self.has_record = has_record
        self.woke = False

    def source(self, identity: str, location: str) -> int | None:
        """The source's number in the record: registered when writing, else looked up."""
        if self.writing:
            row = self.conn.execute(
                REGISTER_SOURCE, {"identity": identity, "location": location, "now": time.time()}
            ).fetchone()
            return int(row[0])
        if not self.has_record:
            return None
        row = self.conn.execute(FIND_SOURCE, (identity,)).fetchone()
        return None if row is None else int(row[0])

    def copied_jobs(self, source: int, ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        """Target job id and recorded creation time by source job id, for those copied."""
        rows = self.conn.execute(COPIED_JOBS, (source, _ids(ids)))
        return {int(old): (int(new), float(created)) for old, new, created in rows}

    def copied_batches(self, source: int, ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        """Target batch id and recorded creation time by source batch id, for those copied."""
        rows = self.conn.execute(COPIED_BATCHES, (source, _ids(ids)))
        return {int(old): (int(new), float(created)) for old, new, created in rows}

    def active_holders(self, keys: Sequence[str]) -> dict[str, int]:
        """The queued or processing job holding each key, by key."""
        if not self.writing and self.conn.execute(HAS_JOBS_TABLE).fetchone() is None:
            return {}
        return dict(self.conn.execute(ACTIVE_HOLDERS, (_ids(keys),)).fetchall())

    def copied_from(self, source: int, job_ids: Sequence[int]) -> set[int]:
        """Those of ``job_ids`` that a copy from ``source`` wrote."""
        return {r[0] for r in self.conn.execute(COPIED_FROM, (source, _ids(job_ids)))}

    def insert_batch(self, source: int, batch: BatchProgress) -> int:
        """An empty batch like ``batch``, recorded; its id."""
        batch_id = int(
            self.conn.execute(INSERT_BATCH, (batch.name, batch.created_at)).fetchone()[0]
        )
        self.conn.execute(RECORD_BATCH, (source, batch.batch_id, batch_id, batch.created_at))
        return batch_id

    def insert_jobs(self, source: int, jobs: Sequence[tuple[JobRecord, int | None]]) -> list[int]:
        """Copies of the jobs, recorded; their ids in order."""
        ids = []
        for job, batch_id in jobs:
            try:
                row = self.conn.execute(INSERT_JOB, _job_params(job, batch_id)).fetchone()
            except sqlite3.IntegrityError:
                raise DuplicateJob(
                    f"job {job.id} cannot be copied: an active job of the target took its "
                    f"unique key {job.unique_key!r} during the copy; finish or cancel one of "
                    f"them, then copy again"
                ) from None
            ids.append(int(row[0]))
        self.record_jobs(source, [(job, new) for (job, _), new in zip(jobs, ids, strict=True)])
        return ids

    def record_jobs(self, source: int, pairs: Sequence[tuple[JobRecord, int]]) -> None:
        """Record source jobs and their target ids."""
        self.conn.executemany(
            RECORD_JOB, [(source, job.id, new, job.created_at) for job, new in pairs]
        )

    def write_tally(self, tally: Tally) -> None:
        """Add the count changes as the engine's own writes do."""
        write_tally(_COUNTS, self.conn, tally)

    def wake(self, queues: set[str]) -> None:
        """Workers of other processes see the commit (file watch, data_version); this
        process's are told after it."""
        self.woke = self.woke or bool(queues)


class SqliteCopyTarget:
    """A queue file that chunks are copied into: the library's write path, a chunk per
    ``BEGIN IMMEDIATE`` transaction retried while the file is busy."""

    def __init__(self, queue: Any) -> None:
        backend = queue.backend
        if not isinstance(backend, SqliteBackend):
            raise SqliteJobQError(f"{queue.target} is not a SQLite queue")
        self.queue = queue
        self.backend = backend
        self.label = backend.target
        self.identity = backend.read(database_identity)

    def run(self, body: Callable[[Any], T], what: str) -> T:
        """``body`` in one write transaction; the workers woken after it commits."""
        woke = False

        def attempt(conn: sqlite3.Connection) -> T:
            nonlocal woke
            tx = SqliteCopyTransaction(conn, writing=True, has_record=True)
            result = body(tx)
            woke = tx.woke
            return result

        result = self.backend.write(attempt, what)
        if woke:
            self.backend.waker.notify()
        return result

    def close(self) -> None:
        """Close the target queue."""
        self.queue.close()


def open_target(queue: Any) -> SqliteCopyTarget:
    """The queue (opened, its tables migrated) as a copy's target."""
    return SqliteCopyTarget(queue)


class SqlitePeekTarget:
    """A target file looked at, not written (a dry run, the checks before a copy): a file
    that does not exist yet is not created, and reads as empty."""

    def __init__(self, path: str, *, retry_timeout: float) -> None:
        self.label = path
        self._retry = BusyRetry(retry_timeout, LockMetrics(), path)
        self._conn: sqlite3.Connection | None = None
        self.identity: str | None = None
        self._has_record = False
        if os.path.exists(path):
            self._conn = _read_only(path)
            conn = self._conn
            self.identity = self._retry(lambda: database_identity(conn), "open", conn)
            self._has_record = self._retry(
                lambda: conn.execute(HAS_RECORD).fetchone() is not None, "open", conn
            )
        elif not Path(path).resolve().parent.is_dir():
            raise DatabaseUnavailable(
                f"directory {Path(path).resolve().parent} of target {path} does not exist; "
                f"create it first"
            )

    def run(self, body: Callable[[Any], T], what: str) -> T:
        """``body`` in one read transaction (a snapshot); an absent file reads as empty."""
        conn = self._conn
        if conn is None:
            return body(_Empty())

        def attempt() -> T:
            conn.execute("BEGIN")
            try:
                return body(SqliteCopyTransaction(conn, writing=False, has_record=self._has_record))
            finally:
                conn.execute("ROLLBACK")

        try:
            return self._retry(attempt, what, conn)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.label, what) from exc

    def close(self) -> None:
        """Close the read-only connection."""
        if self._conn is not None:
            self._conn.close()


class _Empty:
    """A target that does not exist yet: nothing copied, no key held."""

    def source(self, identity: str, location: str) -> int | None:
        return None

    def active_holders(self, keys: Sequence[str]) -> dict[str, int]:
        return {}


def peek_target(target: str, *, retry_timeout: float) -> SqlitePeekTarget:
    """``target`` looked at without writing (nor creating) it."""
    return SqlitePeekTarget(target, retry_timeout=retry_timeout)
