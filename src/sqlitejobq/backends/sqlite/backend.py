"""The SQLite backend: one file in WAL mode, one connection per thread, every statement of
the engine, and the write path that retries while the file is busy."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ... import validation
from ...errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    DuplicateJob,
    InvalidArgumentType,
    NotAQueueDatabase,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
)
from ...job import BatchProgress, LockStats, WorkerInfo
from ..base import (
    HOOK,
    HOOK_FAILED,
    STATUS_STEPS,
    THROUGHPUT_KEPT,
    Capabilities,
    ClaimRequest,
    JobRecord,
    LimitedClaim,
    LimitedDue,
    LimitQueries,
    LockMetrics,
    NewJob,
    RescuedJob,
    Snapshot,
    Step,
    StepParams,
    Tally,
    WorkerRecord,
    dependency_outcome,
    keys_for_unkeyed,
    listing_by,
    options_of,
    pending,
    plan_limited_in,
    task_of_limit_key,
)
from . import queries as sql
from . import schema
from .connection import (
    SYNCHRONOUS_LEVELS,
    BusyRetry,
    TransactionConnection,
    connect,
    is_busy,
    run_read,
    run_write,
    storage_error,
)
from .filesystem import check_database_file, check_filesystem
from .migrate import SqliteMigrationRunner, applied
from .wakeup import FileWaker, SqliteWaker, inotify_available

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")
_new_record = tuple.__new__  # JobRecord._make without its length check: rows are its shape
Row = tuple[Any, ...]

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
class Settings:
    """Connection and retry settings of one SQLite queue."""

    synchronous: str = "NORMAL"
    busy_timeout: float = 5.0
    retry_timeout: float = 30.0
    journal_size_limit: int = 64 * 1024 * 1024
    allow_network_filesystem: bool = False

    @classmethod
    def checked(cls, retry_timeout: float, options: dict[str, Any]) -> Settings:
        """The settings from the queue's SQLite options, each validated."""
        options_of("SQLite", options, OPTIONS)
        return cls(
            synchronous=validation.choice(
                options.get("synchronous", "NORMAL"), "synchronous", SYNCHRONOUS_LEVELS
            ),
            busy_timeout=validation.seconds(options.get("busy_timeout", 5.0), "busy_timeout"),
            retry_timeout=retry_timeout,
            journal_size_limit=validation.integer(
                options.get("journal_size_limit", 64 * 1024 * 1024),
                "journal_size_limit",
                minimum=-1,
            ),
            allow_network_filesystem=bool(options.get("allow_network_filesystem", False)),
        )


#: The options a SQLite queue takes (``Queue("jobs.db", synchronous="FULL")``).
OPTIONS = ("synchronous", "busy_timeout", "journal_size_limit", "allow_network_filesystem")

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
    """What every queue on one file in this process shares: the writer lock, the waker."""

    def __init__(self, path: str) -> None:
        self.write_lock = threading.Lock()
        self.waker = FileWaker(path)


_shared_by_file: dict[str, _Shared] = {}
_shared_lock = threading.Lock()


def shared_for(path: str) -> _Shared:
    """What every queue of this process on the file at ``path`` shares."""
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


class SqliteBackend:
    """The SQLite engine: one connection per thread, opened again after a fork."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: Settings,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise SqliteJobQError(
                f"a queue needs a database file shared by its workers, got {self.path!r}"
            )
        self.target = self.path
        self.settings = settings
        self.clock = clock or time.time
        self.capabilities = Capabilities(
            is_file=True, database_clock=False, listener=inotify_available()
        )
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
        self.waker = SqliteWaker(lambda: self._shared.waker, self.data_version)

    @property
    def _shared(self) -> _Shared:
        generation, shared = self._shared_of
        if generation != _fork_generation:
            self._shared_of = (_fork_generation, shared := shared_for(self.path))
        return shared

    def now(self) -> float:
        """The time that stamps leases and due times: the queue's clock."""
        return self.clock()

    # --- connections ------------------------------------------------------------------

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

    def open(self) -> None:
        """Refuse a file that is not the library's (changing nothing), then switch it to WAL
        and create or update the library's own tables."""
        self._refuse_foreign_file()
        self._enable_wal()
        runner = SqliteMigrationRunner(self.connection(), self.settings.retry_timeout)
        runner.apply(schema.MIGRATIONS, schema.NAMESPACE, dry_run=False, backup=None)

    def _refuse_foreign_file(self) -> None:
        """Read the file's schema (and change nothing) before the first write: tables named
        like the library's that it did not create, or a library schema newer than this
        code, are refused while the file is still exactly as it was."""
        conn = self.connection()

        def inspect() -> None:
            foreign = foreign_tables(conn)
            if foreign:
                raise NotAQueueDatabase(
                    f"{self.path} holds table(s) {', '.join(foreign)} that sqlitejobq did not "
                    f"create (no migration of the library is recorded); use another file, or "
                    f"rename those tables"
                )
            pending(schema.MIGRATIONS, applied(conn, schema.NAMESPACE), schema.NAMESPACE)

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

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    async def insert_in_async_transaction(self, conn: Any, job: NewJob) -> int:
        """SQLite has no asyncio connection to join: refused, saying what works instead."""
        raise TypeError(
            "this engine takes no async connection: pass a sqlite3 connection (the "
            "enqueue runs on a thread) or no connection"
        )

    def close(self) -> None:
        """Close every connection this queue opened in this process."""
        self._closed = True
        with self._holders_lock:
            holders = list(self._holders)
            self._holders.clear()
        for holder in holders:
            if holder.generation == _fork_generation:
                holder.conn.close()
        self._local = threading.local()

    # --- the write and read paths -------------------------------------------------------

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
        jobs: Sequence[NewJob],
        *,
        batch_name: str | None,
        make_batch: bool,
        connection: Any = None,
        then: Callable[[int, list[int]], NewJob] | None = None,
    ) -> tuple[int | None, list[int]]:
        """Insert jobs; a job whose unique key an active job holds is not inserted, the
        holder's id is returned in its place. Returns (batch id, job ids)."""
        now = self.clock()
        rows = [
            (job.task, job.queue, job.payload, job.priority, now + job.delay, job.max_attempts,
             job.unique_key, job.limit_key)
            for job in jobs
        ]  # fmt: skip
        waits = any(job.depends_on for job in jobs)
        if then is not None and not make_batch:
            raise InvalidArgumentType("then needs a batch")

        def body(conn: sqlite3.Connection) -> tuple[int | None, list[int]]:
            tally = Tally()
            batch_id = None
            if make_batch:
                batch_id = int(conn.execute(sql.INSERT_BATCH, (batch_name, now)).fetchone()[0])
            if len(rows) > 1 and not waits and all(row[6] is None for row in rows):
                ids = _insert_many(conn, rows, batch_id, now)
                for row in rows:
                    tally.move(row[1], batch_id, None, "queued")
            else:
                ids = []
                for job, (
                    task,
                    queue,
                    payload,
                    priority,
                    run_at,
                    max_attempts,
                    key,
                    limit_key,
                ) in zip(jobs, rows, strict=True):
                    if limit_key is None:
                        row = conn.execute(sql.INSERT_ONE_UNLIMITED, (
                            task, queue, payload, priority, run_at, max_attempts, key,
                            batch_id, now,
                        )).fetchone()  # fmt: skip
                    else:
                        row = conn.execute(sql.INSERT_JOB, (
                            task, queue, payload, priority, run_at, max_attempts, key,
                            limit_key, batch_id, now,
                        )).fetchone()  # fmt: skip
                    if row is None:
                        row = conn.execute(sql.ACTIVE_JOB_WITH_KEY, (key,)).fetchone()
                    else:
                        tally.move(queue, batch_id, None, "queued")
                        if job.depends_on:
                            _wait_for(conn, int(row[0]), job, batch_id, tally, now)
                    ids.append(int(row[0]))
            if then is not None and batch_id is not None:
                follow = then(batch_id, list(ids))
                row = conn.execute(sql.INSERT_JOB, (
                    follow.task, follow.queue, follow.payload, follow.priority,
                    now + follow.delay, follow.max_attempts, None, follow.limit_key, None, now,
                )).fetchone()  # fmt: skip
                tally.move(follow.queue, None, None, "queued")
                _wait_for(conn, int(row[0]), follow, None, tally, now)
                ids.append(int(row[0]))
            write_tally(conn, tally)
            return batch_id, ids

        if connection is None:
            result = self.write(body, "enqueue")
            self.waker.notify()
            return result
        return _in_caller_transaction(connection, self.path, body)

    def exchange(
        self, steps: Sequence[tuple[Step, StepParams]], claim: ClaimRequest | None
    ) -> tuple[list[Any], list[JobRecord]]:
        """In one transaction: apply fenced steps to claimed jobs, then claim more.

        For each step: the value its statement returns (the new status, or the cancel flag),
        or None when the claim no longer owned the job and nothing changed. Then the rows
        of the jobs claimed (none when ``claim`` is None).
        """

        def body(conn: sqlite3.Connection) -> tuple[list[Any], list[JobRecord], Tally]:
            now = self.clock()
            tally = Tally()
            results = _apply_steps(conn, steps, tally, now)
            _release_dependents(conn, tally, now)
            records = [] if claim is None else _claim(conn, claim, now)
            for record in records:
                tally.move(record.queue, record.batch_id, "queued", "processing")
            write_tally(conn, tally)
            return results, records, tally

        what = "claim" if not steps else steps[0][0].value
        results, records, tally = self.write(body, what)
        if tally.released or tally.freed_limit or tally.watched_ended:
            self.waker.notify()
        return results, records

    def rescue_expired(
        self, error: str, renew: Sequence[tuple[Step, StepParams]] = ()
    ) -> list[RescuedJob]:
        """Take back jobs whose lease ended; ``renew`` (heartbeats of the caller's own
        running jobs) is applied first, in the same transaction, so that a worker never
        takes back a job it is still running."""

        def body(conn: sqlite3.Connection) -> list[RescuedJob]:
            now = self.clock()
            tally = Tally()
            _apply_steps(conn, renew, tally, now)
            rows = [
                RescuedJob(*row)
                for row in conn.execute(sql.RESCUE_EXPIRED, {"now": now, "error": error})
            ]
            for row in rows:
                tally.changed((row.status, row.queue, row.batch_id, row.id, row.has_dependents,
                               row.limit_key, row.watched), "processing")  # fmt: skip
            _release_dependents(conn, tally, now)
            write_tally(conn, tally)
            return rows

        rescued = self.write(body, "rescue")
        if rescued:
            self.waker.notify()
        return rescued

    def cancel(self, job_id: int) -> str | None:
        """Cancel a queued job or flag a running one; its status then, None if it was neither."""

        def body(conn: sqlite3.Connection) -> str | None:
            now = self.clock()
            before = conn.execute(sql.JOB_STATUS, (job_id,)).fetchone()
            row = conn.execute(sql.CANCEL, {"id": job_id, "now": now}).fetchone()
            if row is None:
                return None
            if row[0] == "cancelled":
                tally = Tally()
                tally.changed(row, before[0])
                _release_dependents(conn, tally, now)
                write_tally(conn, tally)
            return str(row[0])

        status = self.write(body, "cancel")
        if status == "cancelled":
            self.waker.notify()  # waiters of this job, and of the jobs it released
        return status

    def retry(self, job_ids: Sequence[int]) -> list[int]:
        """Queue failed or cancelled jobs again with fresh attempts; the ids re-queued."""

        def body(conn: sqlite3.Connection) -> list[int]:
            now = self.clock()
            tally = Tally()
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
            write_tally(conn, tally)
            return done

        done = self.write(body, "retry")
        if done:
            self.waker.notify()
        return done

    def purge(self, older_than: float, dead_after: float, chunk: int = 2000) -> int:
        """Delete finished jobs older than ``older_than`` seconds in short transactions;
        the count. Then batches with no job left and none queued or processing, and the
        rows of workers that stopped or went silent (for ``dead_after`` seconds) before the
        cutoff. Counts by queue drop the purged jobs; batch counts keep them."""
        now = self.clock()
        cutoff, dead_before = now - older_than, now - dead_after

        def delete_chunk(conn: sqlite3.Connection) -> int:
            tally = Tally()
            rows = conn.execute(sql.PURGE_FINISHED, {"cutoff": cutoff, "chunk": chunk}).fetchall()
            for queue, status in rows:
                tally.move(queue, None, status, None)
            write_tally(conn, tally)
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

    # --- waiting -------------------------------------------------------------------------

    def watch(self, job_id: int) -> str | None:
        """Mark a job as waited for; its status, or None if there is no such job."""
        row = self.write(lambda conn: conn.execute(sql.WATCH, (job_id,)).fetchone(), "wait")
        return None if row is None else str(row[0])

    def watch_batch(self, batch_id: int) -> None:
        """Mark every unfinished job of a batch as waited for."""
        self.write(lambda conn: conn.execute(sql.WATCH_BATCH, (batch_id,)), "wait")

    # --- limits and schedules ------------------------------------------------------------

    def limited_due(self, claim: ClaimRequest) -> LimitedDue:
        """Whether a limited job could be claimed now, and when one next could (see Backend)."""

        def read(conn: sqlite3.Connection) -> LimitedDue:
            now = self.clock()
            plan = _plan_limited(conn, claim, 1, now)
            upcoming = _scalar(conn.execute(sql.NEXT_LIMITED_RUN, {"now": now}).fetchone(), float)
            return LimitedDue(bool(plan.ids), plan.next_start, upcoming, now)

        return self.read(read)

    def limit_usage(self, limit: int) -> list[tuple[str, int, int, int]]:
        """Per limit key: queued, processing, and starts within the last hour."""
        now = self.clock()

        def read(conn: sqlite3.Connection) -> list[tuple[str, int, int, int]]:
            rows = conn.execute(sql.LIMIT_USAGE, {"limit": limit}).fetchall()
            return [
                (key, int(queued), int(processing),
                 len(conn.execute(sql.RECENT_STARTS, {"key": key, "since": now - 3600})
                     .fetchall()))
                for key, queued, processing, _ in rows
            ]  # fmt: skip

        return self.read(read)

    def declare_schedules(self, schedules: Sequence[tuple[str, str, str, str]]) -> None:
        """Record the schedules a worker runs."""
        now = self.clock()

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(sql.DECLARE_SCHEDULE, [
                {"name": name, "task": task, "spec": spec, "timezone": tz, "now": now}
                for name, task, spec, tz in schedules
            ])  # fmt: skip

        self.write(body, "declare schedules")

    def last_slots(self) -> dict[str, float | None]:
        """The latest slot each recorded schedule created a job for."""
        return {str(row[0]): row[1] for row in self.read_all(sql.LAST_SLOTS)}

    def fire_slot(self, name: str, slot: float, job: NewJob) -> int | None:
        """Create the slot's job unless another worker did (see Backend)."""
        now = self.clock()

        def body(conn: sqlite3.Connection) -> int | None:
            if conn.execute(sql.TAKE_SLOT, {"name": name, "slot": slot}).fetchone() is None:
                return None
            row = conn.execute(sql.INSERT_JOB, (
                job.task, job.queue, job.payload, job.priority, now + job.delay,
                job.max_attempts, job.unique_key, job.limit_key, None, now,
            )).fetchone()  # fmt: skip
            if row is None:  # its unique key is held by an active job: that one stands
                return None
            tally = Tally()
            tally.move(job.queue, None, None, "queued")
            write_tally(conn, tally)
            conn.execute(sql.SLOT_JOB, {"name": name, "job_id": row[0]})
            return int(row[0])

        job_id = self.write(body, "schedule")
        if job_id is not None:
            self.waker.notify()
        return job_id

    def schedules(self) -> list[tuple[Any, ...]]:
        """Recorded schedules, by name."""
        return [tuple(row) for row in self.read_all(sql.SCHEDULES)]

    # --- reads ----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job's row, or None."""
        row = self.read_one(sql.GET_JOB, (job_id,))
        return None if row is None else _record(row)

    def job_status(self, job_id: int) -> str | None:
        """The job's status, or None if there is no such job."""
        row = self.read_one(sql.JOB_STATUS, (job_id,))
        return None if row is None else str(row[0])

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job."""
        row = self.read_one(sql.CANCEL_REQUESTED, (job_id,))
        return bool(row and row[0])

    def job_history(self, job_id: int) -> tuple[JobRecord, str | None] | None:
        """The job's row and its history (JSON text, None: nothing recorded), or None."""
        row = self.read_one(sql.JOB_WITH_HISTORY, (job_id,))
        return None if row is None else (_record(row), row[22])

    def list_jobs(self, filters: dict[str, Any], oldest_first: bool) -> list[JobRecord]:
        """Rows of the jobs matching every filter given, by id in either direction."""
        statement = sql.list_jobs(oldest_first, listing_by(filters))
        return [_record(row) for row in self.read_all(statement, filters)]

    def failed_ids(self, filters: dict[str, Any], after: int, limit: int) -> list[int]:
        """A page of failed jobs' ids after ``after``, in id order, matching ``filters``."""
        params = {**filters, "after": after, "limit": limit}
        return [int(row[0]) for row in self.read_all(sql.FAILED_IDS, params)]

    def max_job_id(self) -> int | None:
        """The newest job's id, or None."""
        return _scalar(self.read_one(sql.MAX_JOB_ID), int)

    def batches(self, limit: int, before: int | None) -> list[BatchProgress]:
        """Batches below ``before`` (None: any), newest first."""
        rows = self.read_all(sql.BATCHES, {"limit": limit, "before": before})
        return [BatchProgress(*row) for row in rows]

    def dependencies(self, job_id: int) -> tuple[list[int], list[int]] | None:
        """What a job waits for and what waits for it; None if there is no such job."""

        def read(conn: sqlite3.Connection) -> tuple[list[int], list[int]] | None:
            if conn.execute(sql.JOB_STATUS, (job_id,)).fetchone() is None:
                return None
            waits_on = [int(row[0]) for row in conn.execute(sql.WAITS_ON, (job_id,))]
            waited_by = [int(row[0]) for row in conn.execute(sql.WAITED_ON_BY, (job_id,))]
            return waits_on, waited_by

        return self.read(read)

    def throughput(self, minutes: int) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute, and the rows of the last ``minutes`` minutes up to it."""
        current = _minute(self.clock())
        rows = self.read_all(sql.THROUGHPUT, {"since": current - 60 * minutes, "until": current})
        return current, [(int(m), int(c), int(f)) for m, c, f in rows]

    def batch(self, batch_id: int) -> BatchProgress | None:
        """The batch's counts, or None."""
        row = self.read_one(sql.BATCH, (batch_id,))
        return None if row is None else BatchProgress(*row)

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None."""
        return _scalar(self.read_one(sql.LATEST_BATCH_ID), int)

    def batch_jobs(self, batch_id: int) -> list[JobRecord]:
        """Rows of the batch's jobs in enqueue order."""
        return [_record(row) for row in self.read_all(sql.BATCH_JOBS, (batch_id,))]

    def next_run_at(self, queues: tuple[str, ...] | None) -> tuple[float | None, float]:
        """The earliest ``run_at`` of a queued job (one index seek per queue), and now."""
        now = self.clock()
        if queues is None:
            return _scalar(self.read_one(sql.NEXT_RUN_ANY_QUEUE), float), now
        times = [
            t for name in queues
            if (t := _scalar(self.read_one(sql.NEXT_RUN_IN_QUEUE, {"queue": name}), float))
            is not None
        ]  # fmt: skip
        return (min(times) if times else None), now

    def next_lease_expiry(self) -> tuple[float | None, float]:
        """When the earliest lease of a processing job ends (None: none), and now."""
        return _scalar(self.read_one(sql.NEXT_LEASE_EXPIRY), float), self.clock()

    def snapshot(self, alive_window: float) -> Snapshot:
        """Counts by (queue, status), the earliest run_at, and the workers' totals."""
        now = self.clock()

        def read(conn: sqlite3.Connection) -> Snapshot:
            counts = conn.execute(sql.COUNTS).fetchall()
            earliest = _scalar(conn.execute(sql.NEXT_RUN_ANY_QUEUE).fetchone(), float)
            workers = conn.execute(
                sql.WORKER_TOTALS, {"alive_since": now - alive_window}
            ).fetchone()
            return Snapshot(counts, earliest, now, LockStats(*workers[:5]), int(workers[5]))

        return self.read(read)

    # --- workers --------------------------------------------------------------------------

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts (or starts again under the same id)."""
        self.write(lambda conn: conn.execute(sql.REGISTER_WORKER, {
            "id": worker.id, "hostname": worker.hostname, "pid": worker.pid,
            "queues": worker.queues, "concurrency": worker.concurrency, "now": self.clock(),
        }), "register worker")  # fmt: skip

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row (last seen, counts, lock waits, stop time); write it anew
        if it is missing (purged while the worker ran). Its deltas go to the current
        minute's throughput in the same transaction, and rows past a week go."""
        now = self.clock()

        def body(conn: sqlite3.Connection) -> None:
            started_at = worker.started_at if worker.started_at is not None else now
            stopped_at = now if worker.stopped else None
            conn.execute(sql.REPORT_WORKER, worker.row(started_at, now, stopped_at))
            if worker.completed_delta or worker.failed_delta:
                minute = _minute(now)
                conn.execute(sql.ADD_THROUGHPUT, {
                    "minute": minute, "completed": worker.completed_delta,
                    "failed": worker.failed_delta,
                })  # fmt: skip
                conn.execute(sql.FORGET_THROUGHPUT, {"before": minute - THROUGHPUT_KEPT})

        self.write(body, "report worker")

    def workers(self, limit: int) -> list[WorkerInfo]:
        """The workers, most recently started first."""
        return [WorkerInfo(*row) for row in self.read_all(sql.LIST_WORKERS, {"limit": limit})]


# --- helpers of one transaction --------------------------------------------------------------


def _record(row: Row) -> JobRecord:
    return _new_record(JobRecord, (*row[:21], bool(row[21])))


def _insert_many(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]], batch_id: int | None, now: float
) -> list[int]:
    """Insert jobs without unique keys in one executemany; read their ids back.

    The caller holds the write lock, so the ids above the largest one before the insert
    are exactly the new jobs', in insertion order.
    """
    before = conn.execute(sql.MAX_JOB_ID).fetchone()[0] or 0
    if all(row[7] is None for row in rows):  # no limit key: one parameter fewer per row
        conn.executemany(sql.INSERT_JOB_UNLIMITED, [(*row[:7], batch_id, now) for row in rows])
    else:
        conn.executemany(sql.INSERT_JOB_PLAIN, [(*row, batch_id, now) for row in rows])
    ids = [row[0] for row in conn.execute(sql.JOB_IDS_AFTER, (before,))]
    if len(ids) != len(rows):
        raise SqliteJobQError(f"inserted {len(rows)} jobs but found {len(ids)} new ids")
    return ids


def _apply_steps(
    conn: sqlite3.Connection, steps: Sequence[tuple[Step, StepParams]], tally: Tally, now: float
) -> list[Any]:
    """Run each step's statement; completions go set-based, many rows per statement."""
    results: list[Any] = [None] * len(steps)
    for _, params in steps:
        params["now"] = now
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
                tally.changed(row, "processing")
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
            if step in STATUS_STEPS:
                tally.changed(row, "processing")
    return results


def _complete_with_hook(conn: sqlite3.Connection, params: StepParams) -> Row | None:
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
        failed_params = {**params[HOOK_FAILED](exc), "now": params["now"]}
        failed: Row | None = conn.execute(sql.FAIL, failed_params).fetchone()
        return failed
    conn.execute("RELEASE sqlitejobq_on_complete")
    return row


def _complete_many(conn: sqlite3.Connection, rows: list[StepParams]) -> dict[int, Row]:
    """Complete many jobs, a chunk per statement; by job id, (status, queue, batch_id, id,
    has_dependents, limit_key)."""
    outcome: dict[int, Row] = {}
    largest = sql.COMPLETE_MANY_SIZES[-1]
    for start in range(0, len(rows), largest):
        chunk = rows[start : start + largest]
        size = next(s for s in sql.COMPLETE_MANY_SIZES if s >= len(chunk))
        params: list[Any] = []
        for row in chunk:
            params += (row["id"], row["attempts"], row["worker"], row["result"], row["message"],
                       row["now"])  # fmt: skip
        params += [None] * (6 * (size - len(chunk)))
        for job_id, status, queue, batch_id, dependents, limit_key, watched in conn.execute(
            sql.complete_many(size), params
        ):
            outcome[job_id] = (status, queue, batch_id, job_id, dependents, limit_key, watched)
    return outcome


def _wait_for(
    conn: sqlite3.Connection,
    job_id: int,
    job: NewJob,
    batch_id: int | None,
    tally: Tally,
    now: float,
) -> None:
    """Make a new job (of batch ``batch_id``) wait for its dependencies: those not finished
    yet hold it; one that failed or was cancelled already cancels it (policy 'cancel')."""
    found = dict(conn.execute(sql.FLAG_DEPENDENCIES, {"ids": json.dumps(job.depends_on)}))
    status = dependency_outcome(job, found)
    if isinstance(status, str):
        conn.execute(sql.CANCEL_AT_ENQUEUE, {"id": job_id, "error": status, "now": now})
        tally.move(job.queue, batch_id, "queued", "cancelled")
        return
    if status:
        conn.execute(sql.WAIT_FOR, {
            "id": job_id, "waiting_on": len(status), "policy": job.dependency_policy,
        })  # fmt: skip
        conn.executemany(sql.ADD_DEPENDENCY, [(dep, job_id) for dep in status])
        tally.move(job.queue, batch_id, "queued", "waiting")


def _release_dependents(conn: sqlite3.Connection, tally: Tally, now: float) -> None:
    """Count finished jobs off their dependents, level by level: a dependent cancelled
    because a dependency failed releases its own dependents in turn."""
    while tally.finished:
        finished = json.dumps(tally.finished)
        tally.finished = []
        for row in conn.execute(sql.RELEASE_DEPENDENTS, {"finished": finished, "now": now}):
            tally.changed(row, "waiting")
        conn.execute(sql.FORGET_DEPENDENCIES, {"finished": finished})


_LIMIT_QUERIES = LimitQueries(
    sql.LIMITED_KEYS, sql.LIMITED_RUNNING, sql.LIMITED_CANDIDATES, sql.RECENT_STARTS
)


def _plan_limited(
    conn: sqlite3.Connection, claim: ClaimRequest, want: int, now: float
) -> LimitedClaim:
    """Choose limited jobs to claim (see ``plan_limited_claim``): the write lock the claim
    holds makes the counts exact."""
    params = {
        "now": now, "queues": None if claim.queues is None else json.dumps(claim.queues),
        "exclude": json.dumps(claim.exclude),
    }  # fmt: skip
    return plan_limited_in(conn.execute, _LIMIT_QUERIES, claim, want, now, params)


def write_tally(conn: sqlite3.Connection, tally: Tally) -> None:
    """Write a transaction's count changes before it commits."""
    changed = tally.changed_queues()
    if len(changed) == 1:  # most transactions touch one queue: no executemany to set up
        conn.execute(sql.ADD_TO_COUNT, changed[0])
    elif changed:
        conn.executemany(sql.ADD_TO_COUNT, changed)
    if tally.batches:
        conn.executemany(
            sql.ADD_TO_BATCH, [{"id": b, **counts} for b, counts in tally.batches.items()]
        )


def _claim(conn: sqlite3.Connection, claim: ClaimRequest, now: float) -> list[JobRecord]:
    if not claim.limits:
        return _claim_plain(conn, claim, claim.limit, now)
    plan = _plan_limited(conn, claim, claim.limit, now)
    records: list[JobRecord] = []
    if plan.ids:
        records = [_record(row) for row in conn.execute(sql.CLAIM_IDS, {
            "ids": json.dumps(plan.ids), "worker": claim.worker,
            "lease_until": now + claim.lease, "now": now,
        })]  # fmt: skip
        if plan.rated_keys:
            conn.executemany(sql.RECORD_START, [(key, now) for key in plan.rated_keys])
            for key in set(plan.rated_keys):
                period = claim.limits[task_of_limit_key(key)].rate[1]  # type: ignore[index]
                conn.execute(sql.FORGET_STARTS, {"key": key, "since": now - period})
    if len(records) < claim.limit:
        plain, hold = keys_for_unkeyed(
            _claim_plain(conn, claim, claim.limit - len(records), now), claim.limits
        )
        conn.executemany(sql.HOLD_FOR_LIMIT, [{"id": i, "key": k} for i, k in hold])
        records += plain
    return records


def _claim_plain(
    conn: sqlite3.Connection, claim: ClaimRequest, limit: int, now: float
) -> list[JobRecord]:
    params: dict[str, Any] = {
        "worker": claim.worker, "lease_until": now + claim.lease, "now": now, "limit": limit,
    }  # fmt: skip
    names = claim.queues
    if names is None:
        names = tuple(row[0] for row in conn.execute(sql.QUEUES_WITH_QUEUED_JOBS))
        if not names:
            return []
    params.update({f"q{n}": name for n, name in enumerate(names)})
    if claim.exclude:
        params["exclude"] = json.dumps(claim.exclude)
    statement = sql.claim_from_queues(len(names), bool(claim.exclude))
    return [_record(row) for row in conn.execute(statement, params)]


def _minute(now: float) -> int:
    """The epoch second that starts the minute of ``now``."""
    return int(now // 60) * 60


def _scalar(row: Row | None, kind: Callable[[Any], T]) -> T | None:
    return None if row is None or row[0] is None else kind(row[0])


def _in_caller_transaction(conn: Any, path: str, body: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``body`` on the caller's connection, inside the caller's own transaction.

    The caller owns the transaction, so it is not retried here: a busy error becomes
    DatabaseBusy and the caller decides whether to roll back and try again.
    """
    if not isinstance(conn, sqlite3.Connection):
        raise InvalidArgumentType(
            f"connection must be a sqlite3.Connection on the queue's file, got "
            f"{type(conn).__name__}"
        )
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
    except (sqlite3.Error, UnicodeError) as exc:
        if is_busy(exc):
            raise DatabaseBusy(
                f"enqueue inside the caller's transaction: database locked ({exc}); "
                f"roll back and retry the transaction, or open it with BEGIN IMMEDIATE"
            ) from exc
        raise storage_error(exc, path, "enqueue inside the caller's transaction") from exc


_LIBRARY_TABLES = r"""
SELECT name FROM sqlite_master
WHERE type = 'table' AND name LIKE 'sqlitejobq\_%' ESCAPE '\' ORDER BY name
"""


def foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables named like the library's that the library did not create: they exist, but no
    migration of the library's namespace is recorded. Reads only."""
    names = [row[0] for row in conn.execute(_LIBRARY_TABLES)]
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
