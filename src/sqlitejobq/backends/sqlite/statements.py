"""The SQLite engine's statements (see ``backends/statements.py``): its SQL from
``queries.py``, bound the way SQLite binds them (JSON arrays, per-row statements where
SQLite has no arrays), and its rows as records."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import SqliteJobQError
from ...job import LockStats, WorkerInfo
from ..base import (
    ClaimRequest,
    Complete,
    JobRecord,
    NewJob,
    RescuedJob,
    Snapshot,
)
from ..statements import HeldKey, Row, Statements
from . import queries as sql
from .connection import TransactionConnection, is_busy

_new_record = tuple.__new__  # JobRecord._make without its length check: rows are its shape


def _record(row: Row) -> JobRecord:
    return _new_record(JobRecord, (*row[:21], bool(row[21])))


def _minute(now: float) -> int:
    """The epoch second that starts the minute of ``now``."""
    return int(now // 60) * 60


def _scalar(row: Row | None) -> float | None:
    return None if row is None or row[0] is None else float(row[0])


class SqliteStatements(Statements[sqlite3.Connection], queries=sql):
    """The statements of one SQLite queue; ``now`` is always the process's clock."""

    purge_chunk = 2000

    def record(self, row: Row) -> JobRecord:
        """A job's row as a record (SQLite keeps booleans as integers)."""
        return _record(row)

    def worker_info(self, row: Row) -> WorkerInfo:
        """A worker's row as a record."""
        return WorkerInfo(*row)

    # --- inserting --------------------------------------------------------------------------

    def insert_batch(self, tx: sqlite3.Connection, name: str | None, now: float | None) -> int:
        """A new batch's id."""
        return int(tx.execute(sql.INSERT_BATCH, {"name": name, "now": now}).fetchone()[0])

    def insert_jobs(
        self,
        tx: sqlite3.Connection,
        jobs: Sequence[NewJob],
        batch_id: int | None,
        now: float | None,
    ) -> list[int | None]:
        """Insert jobs: without unique keys, many in one executemany (their ids read back
        under the write lock); else one statement each."""
        assert now is not None
        if len(jobs) > 1 and all(job.unique_key is None for job in jobs):
            return list(_insert_many(tx, jobs, batch_id, now))
        ids: list[int | None] = []
        for job in jobs:
            values = _job_values(job, now)
            if job.limit_key is None:  # one parameter fewer
                row = tx.execute(sql.INSERT_ONE_UNLIMITED, (*values, batch_id, now)).fetchone()
            else:
                row = tx.execute(sql.INSERT_JOB, (*values, job.limit_key, batch_id, now)).fetchone()
            ids.append(None if row is None else int(row[0]))
        return ids

    def active_jobs_with_keys(self, tx: sqlite3.Connection, keys: list[str]) -> dict[str, int]:
        """The active jobs holding these unique keys, by key."""
        found = {}
        for key in keys:
            row = tx.execute(sql.ACTIVE_JOB_WITH_KEY, {"key": key}).fetchone()
            if row is not None:
                found[key] = int(row[0])
        return found

    def dependency_statuses(self, tx: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str]:
        """Flag jobs as having dependents; their statuses."""
        return dict(tx.execute(sql.FLAG_DEPENDENCIES, {"ids": json.dumps(list(ids))}))

    def cancel_at_enqueue(
        self, tx: sqlite3.Connection, job_id: int, error: str, now: float | None
    ) -> None:
        """Cancel a new job whose dependency already failed."""
        tx.execute(sql.CANCEL_AT_ENQUEUE, {"id": job_id, "error": error, "now": now})

    def wait_for(
        self, tx: sqlite3.Connection, job_id: int, dependencies: list[int], policy: str
    ) -> None:
        """Make a new job wait for unfinished dependencies."""
        params = {"id": job_id, "waiting_on": len(dependencies), "policy": policy}
        tx.execute(sql.WAIT_FOR, params)
        tx.executemany(sql.ADD_DEPENDENCY, [(dep, job_id) for dep in dependencies])

    def release_dependents(
        self, tx: sqlite3.Connection, finished: list[tuple[int, bool]], now: float | None
    ) -> list[Row]:
        """Count finished jobs off their dependents, then forget those dependencies."""
        params = {"finished": json.dumps(finished), "now": now}
        rows = tx.execute(sql.RELEASE_DEPENDENTS, params).fetchall()
        tx.execute(sql.FORGET_DEPENDENCIES, params)
        return rows

    # --- claims and steps ---------------------------------------------------------------

    def claim(
        self, tx: sqlite3.Connection, claim: ClaimRequest, limit: int, now: float | None
    ) -> list[JobRecord]:
        """Claim due jobs queue by queue over the claim index (see ``claim_from_queues``)."""
        assert now is not None
        params: dict[str, Any] = {
            "worker": claim.worker,
            "lease_until": now + claim.lease,
            "now": now,
            "limit": limit,
        }
        names = claim.queues
        if names is None:
            names = tuple(row[0] for row in tx.execute(sql.QUEUES_WITH_QUEUED_JOBS))
            if not names:
                return []
        params.update({f"q{n}": name for n, name in enumerate(names)})
        if claim.exclude:
            params["exclude"] = json.dumps(claim.exclude)
        statement = sql.claim_from_queues(len(names), bool(claim.exclude))
        return [_record(row) for row in tx.execute(statement, params)]

    def complete_many(
        self, tx: sqlite3.Connection, steps: list[Complete], now: float | None
    ) -> dict[int, Row]:
        """Complete many jobs, a chunk of a prepared size per statement."""
        outcome: dict[int, Row] = {}
        largest = sql.COMPLETE_MANY_SIZES[-1]
        for start in range(0, len(steps), largest):
            chunk = steps[start : start + largest]
            size = next(s for s in sql.COMPLETE_MANY_SIZES if s >= len(chunk))
            params: list[Any] = []
            for step in chunk:
                fence = step.fence
                params += (fence.id, fence.attempts, fence.worker, step.result, step.message, now)
            params += [None] * (6 * (size - len(chunk)))
            for job_id, status, queue, batch_id, dependents, limit_key, watched in tx.execute(
                sql.complete_many(size), params
            ):
                outcome[job_id] = (status, queue, batch_id, job_id, dependents, limit_key, watched)
        return outcome

    @contextmanager
    def savepoint(self, tx: sqlite3.Connection) -> Iterator[None]:
        """A SAVEPOINT, rolled back to when its block raises."""
        tx.execute("SAVEPOINT sqlitejobq_savepoint")
        try:
            yield
        except BaseException:
            tx.execute("ROLLBACK TO sqlitejobq_savepoint")
            tx.execute("RELEASE sqlitejobq_savepoint")
            raise
        tx.execute("RELEASE sqlitejobq_savepoint")

    def hook_connection(self, tx: sqlite3.Connection) -> TransactionConnection:
        """The transaction connection an on_complete hook gets."""
        return TransactionConnection(tx, SqliteJobQError, "an on_complete hook")

    def is_fault(self, error: BaseException) -> bool:
        """A busy database: the whole transaction is retried."""
        return is_busy(error)

    def rescue_expired(
        self, tx: sqlite3.Connection, error: str, now: float | None
    ) -> list[RescuedJob]:
        """Take back every job whose lease ended."""
        return [
            RescuedJob(*row) for row in tx.execute(sql.RESCUE_EXPIRED, {"now": now, "error": error})
        ]

    def delay_jobs(
        self, tx: sqlite3.Connection, delays: Sequence[tuple[int, float]], now: float | None
    ) -> None:
        """Make queued jobs due ``delay`` seconds from now."""
        tx.execute(sql.DELAY_JOBS, {"delays": json.dumps(delays), "now": now})

    def next_lease_expiry(
        self, tx: sqlite3.Connection, now: float | None
    ) -> tuple[float | None, float]:
        """When the earliest lease ends, and now."""
        assert now is not None
        return _scalar(tx.execute(sql.NEXT_LEASE_EXPIRY).fetchone()), now

    def next_run_at(
        self, tx: sqlite3.Connection, queues: tuple[str, ...] | None, now: float | None
    ) -> tuple[float | None, float]:
        """The earliest run_at of a queued job: one index seek per queue."""
        assert now is not None
        if queues is None:
            return _scalar(tx.execute(sql.NEXT_RUN_ANY_QUEUE).fetchone()), now
        times = [
            t
            for name in queues
            if (t := _scalar(tx.execute(sql.NEXT_RUN_IN_QUEUE, {"queue": name}).fetchone()))
            is not None
        ]
        return (min(times) if times else None), now

    # --- limits --------------------------------------------------------------------------

    def limited_keys(self, tx: sqlite3.Connection) -> list[str]:
        """The limit keys that have queued jobs."""
        return [str(row[0]) for row in tx.execute(sql.LIMITED_KEYS)]

    def lock_limit_keys(self, tx: sqlite3.Connection, keys: list[str]) -> bool:
        """Nothing to lock: the write transaction already excludes every other claim."""
        return False

    def limit_running(self, tx: sqlite3.Connection) -> dict[str, int]:
        """Processing jobs per limit key."""
        return {str(key): int(n) for key, n in tx.execute(sql.LIMITED_RUNNING)}

    def limit_candidates(
        self, tx: sqlite3.Connection, claim: ClaimRequest, rooms: dict[str, int], now: float
    ) -> list[tuple[int, int, float, str]]:
        """Each key's best due jobs, one statement per key."""
        params = {
            "now": now,
            "queues": None if claim.queues is None else json.dumps(claim.queues),
            "exclude": json.dumps(claim.exclude),
        }
        return [
            (int(r[0]), int(r[1]), float(r[2]), key)
            for key, room in rooms.items()
            for r in tx.execute(sql.LIMITED_CANDIDATES, {**params, "key": key, "limit": room})
        ]

    def recent_starts(
        self, tx: sqlite3.Connection, sinces: dict[str, float]
    ) -> dict[str, list[float]]:
        """Each key's starts after its time, one statement per key."""
        return {
            key: [float(r[0]) for r in tx.execute(sql.RECENT_STARTS, {"key": key, "since": since})]
            for key, since in sinces.items()
        }

    def claim_ids(
        self, tx: sqlite3.Connection, ids: list[int], claim: ClaimRequest, now: float
    ) -> list[JobRecord]:
        """Claim the chosen limited jobs."""
        params = {
            "ids": json.dumps(ids),
            "worker": claim.worker,
            "lease_until": now + claim.lease,
            "now": now,
        }
        return [_record(row) for row in tx.execute(sql.CLAIM_IDS, params)]

    def record_starts(self, tx: sqlite3.Connection, keys: list[str], at: float) -> None:
        """One start row per key given."""
        tx.executemany(sql.RECORD_START, [(key, at) for key in keys])

    def forget_starts(self, tx: sqlite3.Connection, key: str, since: float) -> None:
        """Forget a key's starts older than its period."""
        tx.execute(sql.FORGET_STARTS, {"key": key, "since": since})

    def hold_for_limit(self, tx: sqlite3.Connection, holds: list[tuple[int, str]]) -> None:
        """Put claimed jobs of limited tasks back with their keys."""
        tx.executemany(sql.HOLD_FOR_LIMIT, [{"id": i, "key": k} for i, k in holds])

    def next_limited_run(self, tx: sqlite3.Connection, now: float | None) -> float | None:
        """When the next limited job not due yet becomes due."""
        return _scalar(tx.execute(sql.NEXT_LIMITED_RUN, {"now": now}).fetchone())

    def limit_usage(self, tx: sqlite3.Connection, limit: int) -> list[tuple[str, int, int]]:
        """Per limit key: queued and processing jobs."""
        rows = tx.execute(sql.LIMIT_USAGE, {"limit": limit}).fetchall()
        return [(str(key), int(queued), int(processing)) for key, queued, processing, _ in rows]

    # --- counts --------------------------------------------------------------------------

    def add_to_counts(self, tx: sqlite3.Connection, changed: list[tuple[str, str, int]]) -> None:
        """Add to the counts by queue (one statement when one queue changed)."""
        if len(changed) == 1:
            tx.execute(sql.ADD_TO_COUNT, changed[0])
        else:
            tx.executemany(sql.ADD_TO_COUNT, changed)

    def add_to_batches(self, tx: sqlite3.Connection, batches: dict[int, dict[str, int]]) -> None:
        """Add to batches' counts."""
        tx.executemany(sql.ADD_TO_BATCH, [{"id": b, **counts} for b, counts in batches.items()])

    # --- the operator's actions -----------------------------------------------------------

    def cancel(
        self, tx: sqlite3.Connection, job_id: int, now: float | None
    ) -> tuple[Row, str] | None:
        """Cancel a job or flag it running, its status before read first."""
        before = tx.execute(sql.JOB_STATUS, {"id": job_id}).fetchone()
        row = tx.execute(sql.CANCEL, {"id": job_id, "now": now}).fetchone()
        return None if row is None else (row, str(before[0]))

    def retry(
        self, tx: sqlite3.Connection, job_ids: Sequence[int], now: float | None
    ) -> list[tuple[int, str, str, int | None]]:
        """Queue jobs again one by one (the unique index refuses a held key)."""
        done = []
        for job_id in job_ids:
            before = tx.execute(sql.STATUS_QUEUE_BATCH, {"id": job_id}).fetchone()
            try:
                row = tx.execute(sql.RETRY, {"id": job_id, "now": now}).fetchone()
            except sqlite3.IntegrityError:
                raise HeldKey(job_id) from None
            if row is not None:
                done.append((job_id, str(before[0]), str(before[1]), before[2]))
        return done

    def purge_finished(
        self, tx: sqlite3.Connection, cutoff: float, chunk: int
    ) -> list[tuple[str, str, int]]:
        """Delete a chunk of finished jobs: one row per job deleted."""
        rows = tx.execute(sql.PURGE_FINISHED, {"cutoff": cutoff, "chunk": chunk}).fetchall()
        return [(str(queue), str(status), 1) for queue, status in rows]

    def purge_batches(self, tx: sqlite3.Connection, cutoff: float, chunk: int) -> None:
        """Delete emptied batches."""
        tx.execute(sql.PURGE_BATCHES, {"cutoff": cutoff})

    # --- schedules, workers, stats ----------------------------------------------------------

    def declare_schedules(
        self,
        tx: sqlite3.Connection,
        schedules: Sequence[tuple[str, str, str, str]],
        now: float | None,
    ) -> None:
        """Record schedules, one row each."""
        tx.executemany(
            sql.DECLARE_SCHEDULE,
            [
                {"name": name, "task": task, "spec": spec, "timezone": tz, "now": now}
                for name, task, spec, tz in schedules
            ],
        )

    def add_throughput(
        self, tx: sqlite3.Connection, completed: int, failed: int, now: float | None, keep: float
    ) -> None:
        """Add to the current minute's row; forget rows past ``keep``."""
        assert now is not None
        minute = _minute(now)
        tx.execute(sql.ADD_THROUGHPUT, {"minute": minute, "completed": completed, "failed": failed})
        tx.execute(sql.FORGET_THROUGHPUT, {"before": minute - keep})

    def throughput(
        self, tx: sqlite3.Connection, minutes: int, now: float | None
    ) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute and the rows of the last ``minutes`` up to it."""
        assert now is not None
        current = _minute(now)
        rows = tx.execute(sql.THROUGHPUT, {"since": current - 60 * minutes, "until": current})
        return current, [(int(m), int(c), int(f)) for m, c, f in rows]

    def snapshot(self, tx: sqlite3.Connection, alive_window: float, now: float | None) -> Snapshot:
        """Counts, the earliest run_at, now, the workers' totals and the paused queues, in
        one snapshot."""
        assert now is not None
        counts = tx.execute(sql.COUNTS).fetchall()
        earliest = _scalar(tx.execute(sql.NEXT_RUN_ANY_QUEUE).fetchone())
        workers = tx.execute(sql.WORKER_TOTALS, {"alive_since": now - alive_window}).fetchone()
        paused = self.paused_queues(tx)
        return Snapshot(counts, earliest, now, LockStats(*workers[:5]), int(workers[5]), paused)


def _job_values(job: NewJob, now: float) -> tuple[Any, ...]:
    """The first seven values of every job insert, in the statements' column order."""
    run_at = now + job.delay
    return (
        job.task,
        job.queue,
        job.payload,
        job.priority,
        run_at,
        job.max_attempts,
        job.unique_key,
    )


def _insert_many(
    tx: sqlite3.Connection, jobs: Sequence[NewJob], batch_id: int | None, now: float
) -> list[int]:
    """Insert jobs without unique keys in one executemany; read their ids back.

    The caller holds the write lock, so the ids above the largest one before the insert
    are exactly the new jobs', in insertion order.
    """
    before = tx.execute(sql.MAX_JOB_ID).fetchone()[0] or 0
    if all(job.limit_key is None for job in jobs):  # one parameter fewer per row
        rows = [(*_job_values(j, now), batch_id, now) for j in jobs]
        tx.executemany(sql.INSERT_JOB_UNLIMITED, rows)
    else:
        rows = [(*_job_values(j, now), j.limit_key, batch_id, now) for j in jobs]
        tx.executemany(sql.INSERT_JOB_PLAIN, rows)
    ids = [row[0] for row in tx.execute(sql.JOB_IDS_AFTER, (before,))]
    if len(ids) != len(jobs):
        raise SqliteJobQError(f"inserted {len(jobs)} jobs but found {len(ids)} new ids")
    return ids
