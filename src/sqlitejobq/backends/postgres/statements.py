"""The PostgreSQL engine's statements (see ``backends/statements.py``): its SQL from
``queries.py``, bound as arrays (one statement for many rows), ``now`` None for the
server's clock, NOTIFY in the transaction that made the change."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

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
from ..shared import BATCH_COLUMNS
from ..statements import HeldKey, Row, Statements
from . import queries as sql
from .connection import TransactionConnection, database_now, is_transient
from .wakeup import PgWaker

Conn = psycopg.Connection[Any]

#: Expired leases taken back per rescue (others' rows are skipped, not waited for).
_RESCUE_LIMIT = 500


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def job_arrays(jobs: Sequence[NewJob]) -> dict[str, Any]:
    """The parallel arrays that insert ``jobs`` in one statement."""
    return {
        "tasks": [j.task for j in jobs],
        "queues": [j.queue for j in jobs],
        "payloads": [j.payload for j in jobs],
        "priorities": [j.priority for j in jobs],
        "delays": [j.delay for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "unique_keys": [j.unique_key for j in jobs],
        "limit_keys": [j.limit_key for j in jobs],
    }


class PgStatements(Statements[Conn], queries=sql):
    """The statements of one PostgreSQL queue (its schema, its wake-up channel)."""

    purge_chunk = 5000

    def __init__(self, schema: str, waker: PgWaker | None = None) -> None:
        self.schema = schema
        self.waker = waker

    def record(self, row: Row) -> JobRecord:
        """A job's row as a record."""
        return JobRecord._make(row)

    def worker_info(self, r: Row) -> WorkerInfo:
        """A worker's row as a record (numerics as Python numbers)."""
        return WorkerInfo(
            r[0],
            r[1],
            int(r[2]),
            r[3],
            int(r[4]),
            float(r[5]),
            float(r[6]),
            _float_or_none(r[7]),
            int(r[8]),
            int(r[9]),
            int(r[10]),
            int(r[11]),
            float(r[12]),
            int(r[13]),
        )

    def database_now(self, tx: Conn) -> float:
        """The server's clock."""
        return database_now(tx)

    # --- inserting --------------------------------------------------------------------------

    def insert_batch(self, tx: Conn, name: str | None, now: float | None) -> int:
        """A new batch's id."""
        row = tx.execute(sql.INSERT_BATCH, {"name": name, "now": now}).fetchone()
        assert row is not None
        return int(row[0])

    def insert_jobs(
        self, tx: Conn, jobs: Sequence[NewJob], batch_id: int | None, now: float | None
    ) -> list[int | None]:
        """Insert every job in one statement."""
        params = {**job_arrays(jobs), "batch_id": batch_id, "now": now}
        return [
            None if row[0] is None else int(row[0]) for row in tx.execute(sql.INSERT_JOBS, params)
        ]

    def active_jobs_with_keys(self, tx: Conn, keys: list[str]) -> dict[str, int]:
        """The active jobs holding these unique keys, by key."""
        rows = tx.execute(sql.ACTIVE_JOBS_WITH_KEYS, {"keys": keys}).fetchall()
        return {str(key): int(job_id) for key, job_id in rows}

    def dependency_statuses(self, tx: Conn, ids: Sequence[int]) -> dict[int, str]:
        """Flag jobs as having dependents; their statuses."""
        rows = tx.execute(sql.FLAG_DEPENDENCIES, {"ids": list(ids)})
        return {int(r[0]): str(r[1]) for r in rows}

    def cancel_at_enqueue(self, tx: Conn, job_id: int, error: str, now: float | None) -> None:
        """Cancel a new job whose dependency already failed."""
        tx.execute(sql.CANCEL_AT_ENQUEUE, {"id": job_id, "error": error, "now": now})

    def wait_for(self, tx: Conn, job_id: int, dependencies: list[int], policy: str) -> None:
        """Make a new job wait for unfinished dependencies."""
        tx.execute(sql.WAIT_FOR, {"id": job_id, "waiting_on": len(dependencies), "policy": policy})
        tx.execute(sql.ADD_DEPENDENCIES, {"id": job_id, "deps": dependencies})

    def release_dependents(
        self, tx: Conn, finished: list[tuple[int, bool]], now: float | None
    ) -> list[Row]:
        """Count finished jobs off their dependents, then forget those dependencies."""
        params = {"ids": [i for i, _ in finished], "oks": [ok for _, ok in finished], "now": now}
        rows = tx.execute(sql.RELEASE_DEPENDENTS, params).fetchall()
        tx.execute(sql.FORGET_DEPENDENCIES, params)
        return rows

    # --- claims and steps ---------------------------------------------------------------

    def claim(
        self, tx: Conn, claim: ClaimRequest, limit: int, now: float | None
    ) -> list[JobRecord]:
        """Claim due jobs with ``FOR UPDATE SKIP LOCKED``."""
        params: dict[str, Any] = {
            "worker": claim.worker,
            "lease": claim.lease,
            "now": now,
            "limit": limit,
            "exclude": list(claim.exclude),
        }
        if claim.queues is None:
            rows = tx.execute(sql.CLAIM_ANY_QUEUE, params).fetchall()
        else:
            params["queues"] = list(claim.queues)
            rows = tx.execute(sql.CLAIM_FROM_QUEUES, params).fetchall()
        return [JobRecord._make(row) for row in rows]

    def complete_many(self, tx: Conn, steps: list[Complete], now: float | None) -> dict[int, Row]:
        """Complete many jobs in one statement over arrays."""
        # planned for its arrays each time: the generic plan of a prepared statement cannot
        # see how many jobs it completes and took three times as long for a batch of 250
        rows = tx.execute(
            sql.COMPLETE_MANY,
            {
                "ids": [s.fence.id for s in steps],
                "attempts": [s.fence.attempts for s in steps],
                "workers": [s.fence.worker for s in steps],
                "results": [s.result for s in steps],
                "messages": [s.message for s in steps],
                "finished_ats": [now] * len(steps),
                "now": now,
            },
            prepare=False,
        ).fetchall()
        return {row[0]: (row[1], row[2], row[3], row[0], row[4], row[5], row[6]) for row in rows}

    @contextmanager
    def savepoint(self, tx: Conn) -> Iterator[None]:
        """A nested transaction (a savepoint), rolled back when its block raises."""
        with tx.transaction():
            yield

    def hook_connection(self, tx: Conn) -> TransactionConnection:
        """The transaction connection an on_complete hook gets."""
        return TransactionConnection(tx, SqliteJobQError, "an on_complete hook")

    def is_fault(self, error: BaseException) -> bool:
        """A lost connection or a transient server error: the whole transaction is retried."""
        return is_transient(error) or isinstance(error, psycopg.OperationalError)

    def rescue_expired(self, tx: Conn, error: str, now: float | None) -> list[RescuedJob]:
        """Take back up to 500 jobs whose lease ended."""
        params = {"now": now, "error": error, "limit": _RESCUE_LIMIT}
        return [RescuedJob(*row) for row in tx.execute(sql.RESCUE_EXPIRED, params)]

    def delay_jobs(self, tx: Conn, delays: Sequence[tuple[int, float]], now: float | None) -> None:
        """Make queued jobs due ``delay`` seconds from now."""
        ids, waits = zip(*delays, strict=True)
        tx.execute(sql.DELAY_JOBS, {"ids": list(ids), "delays": list(waits), "now": now})

    def next_lease_expiry(self, tx: Conn, now: float | None) -> tuple[float | None, float]:
        """When the earliest lease ends, and the database's now."""
        row = tx.execute(sql.NEXT_LEASE_EXPIRY, {"now": now}).fetchone()
        assert row is not None
        return _float_or_none(row[0]), float(row[1])

    def next_run_at(
        self, tx: Conn, queues: tuple[str, ...] | None, now: float | None
    ) -> tuple[float | None, float]:
        """The earliest run_at of a queued job, and the database's now."""
        if queues is None:
            row = tx.execute(sql.NEXT_RUN_ANY_QUEUE, {"now": now}).fetchone()
        else:
            params = {"queues": list(queues), "now": now}
            row = tx.execute(sql.NEXT_RUN_IN_QUEUES, params).fetchone()
        assert row is not None
        return _float_or_none(row[0]), float(row[1])

    # --- limits --------------------------------------------------------------------------

    def limited_keys(self, tx: Conn) -> list[str]:
        """The limit keys that have queued jobs."""
        return [str(row[0]) for row in tx.execute(sql.LIMITED_KEYS)]

    def lock_limit_keys(self, tx: Conn, keys: list[str]) -> bool:
        """Take the keys' advisory locks (in key order: no deadlock) until the transaction
        ends; the counts read before them may have moved."""
        locks = [sql.limit_lock_key(self.schema, key) for key in keys]
        tx.execute(sql.LOCK_LIMIT_KEYS, {"keys": locks})
        return True

    def limit_running(self, tx: Conn) -> dict[str, int]:
        """Processing jobs per limit key."""
        return {str(key): int(n) for key, n in tx.execute(sql.LIMITED_RUNNING)}

    def limit_candidates(
        self, tx: Conn, claim: ClaimRequest, rooms: dict[str, int], now: float
    ) -> list[tuple[int, int, float, str]]:
        """Every key's best due jobs in one statement."""
        params = {
            "now": now,
            "queues": None if claim.queues is None else list(claim.queues),
            "exclude": list(claim.exclude),
            "keys": list(rooms),
            "rooms": list(rooms.values()),
        }
        rows = tx.execute(sql.LIMITED_CANDIDATES, params)
        return [(int(r[0]), int(r[1]), float(r[2]), str(r[-1])) for r in rows]

    def recent_starts(self, tx: Conn, sinces: dict[str, float]) -> dict[str, list[float]]:
        """Every key's starts after its time in one statement."""
        found: dict[str, list[float]] = {}
        params = {"keys": list(sinces), "sinces": list(sinces.values())}
        for key, started in tx.execute(sql.RECENT_STARTS_MANY, params):
            found.setdefault(str(key), []).append(float(started))
        return found

    def claim_ids(
        self, tx: Conn, ids: list[int], claim: ClaimRequest, now: float
    ) -> list[JobRecord]:
        """Claim the chosen limited jobs."""
        params = {"ids": ids, "worker": claim.worker, "lease": claim.lease, "now": now}
        return [JobRecord._make(row) for row in tx.execute(sql.CLAIM_IDS, params)]

    def record_starts(self, tx: Conn, keys: list[str], at: float) -> None:
        """One start row per key given."""
        tx.execute(sql.RECORD_STARTS, {"keys": keys, "at": at})

    def forget_starts(self, tx: Conn, key: str, since: float) -> None:
        """Forget a key's starts older than its period."""
        tx.execute(sql.FORGET_STARTS, {"key": key, "since": since})

    def hold_for_limit(self, tx: Conn, holds: list[tuple[int, str]]) -> None:
        """Put claimed jobs of limited tasks back with their keys."""
        for job_id, key in holds:
            tx.execute(sql.HOLD_FOR_LIMIT, {"id": job_id, "key": key})

    def next_limited_run(self, tx: Conn, now: float | None) -> float | None:
        """When the next limited job not due yet becomes due."""
        row = tx.execute(sql.NEXT_LIMITED_RUN, {"now": now}).fetchone()
        return _float_or_none(row[0]) if row else None

    def limit_usage(self, tx: Conn, limit: int) -> list[tuple[str, int, int]]:
        """Per limit key: queued and processing jobs."""
        rows = tx.execute(sql.LIMIT_USAGE, {"limit": limit}).fetchall()
        return [(str(key), int(queued), int(processing)) for key, queued, processing in rows]

    # --- counts and wake-ups ----------------------------------------------------------------

    def add_to_counts(self, tx: Conn, changed: list[tuple[str, str, int]]) -> None:
        """Add to the sharded counts, in key order (rows touched in one order never
        deadlock)."""
        params = {
            "queues": [q for q, _, _ in changed],
            "statuses": [s for _, s, _ in changed],
            "deltas": [n for _, _, n in changed],
            "shard": None,
        }
        tx.execute(sql.ADD_TO_COUNTS, params)

    def add_to_batches(self, tx: Conn, batches: dict[int, dict[str, int]]) -> None:
        """Add to batches' sharded counts, in batch order."""
        ordered = sorted(batches.items())
        columns = {name: [counts[name] for _, counts in ordered] for name in BATCH_COLUMNS}
        params = {
            "batch_ids": [b for b, _ in ordered],
            "totals": columns["total"],
            **{name: columns[name] for name in BATCH_COLUMNS if name != "total"},
            "shard": None,
        }
        tx.execute(sql.ADD_TO_BATCH_COUNTS, params)

    def notify(self, tx: Conn, queues: set[str]) -> None:
        """NOTIFY the workers of ``queues``: sent when the transaction commits."""
        if self.waker is None:
            return
        for queue in self.waker.channels_to_notify(queues):
            tx.execute(sql.NOTIFY, {"channel": self.waker.channel, "payload": queue})

    # --- the operator's actions -----------------------------------------------------------

    def cancel(self, tx: Conn, job_id: int, now: float | None) -> tuple[Row, str] | None:
        """Cancel a job or flag it running (the row carries its status before)."""
        row = tx.execute(sql.CANCEL, {"id": job_id, "now": now}).fetchone()
        return None if row is None else (row, str(row[7]))

    def retry(
        self, tx: Conn, job_ids: Sequence[int], now: float | None
    ) -> list[tuple[int, str, str, int | None]]:
        """Queue jobs again in one statement (the unique index refuses a held key)."""
        try:
            rows = tx.execute(sql.RETRY, {"ids": list(job_ids), "now": now}).fetchall()
        except pg_errors.UniqueViolation:
            raise HeldKey(job_ids[0], shown=None if len(job_ids) == 1 else "?") from None
        return [(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]

    def purge_finished(self, tx: Conn, cutoff: float, chunk: int) -> list[tuple[str, str, int]]:
        """Delete a chunk of finished jobs: counts by (queue, status)."""
        rows = tx.execute(sql.PURGE_FINISHED, {"cutoff": cutoff, "chunk": chunk})
        return [(str(queue), str(status), int(count)) for queue, status, count in rows]

    def purge_batches(self, tx: Conn, cutoff: float, chunk: int) -> None:
        """Delete emptied batches, a chunk per statement."""
        params = {"cutoff": cutoff, "chunk": chunk}
        while tx.execute(sql.PURGE_BATCHES, params).rowcount == chunk:
            pass

    # --- schedules, workers, stats ----------------------------------------------------------

    def declare_schedules(
        self, tx: Conn, schedules: Sequence[tuple[str, str, str, str]], now: float | None
    ) -> None:
        """Record schedules in one statement."""
        params = {
            "names": [s[0] for s in schedules],
            "tasks": [s[1] for s in schedules],
            "specs": [s[2] for s in schedules],
            "zones": [s[3] for s in schedules],
            "now": now,
        }
        tx.execute(sql.DECLARE_SCHEDULES, params)

    def add_throughput(
        self, tx: Conn, completed: int, failed: int, now: float | None, keep: float
    ) -> None:
        """Add to the current minute's row; forget rows past ``keep``."""
        tx.execute(sql.ADD_THROUGHPUT, {"completed": completed, "failed": failed, "now": now})
        tx.execute(sql.FORGET_THROUGHPUT, {"keep": keep, "now": now})

    def throughput(
        self, tx: Conn, minutes: int, now: float | None
    ) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute by the database's clock and the rows up to it."""
        rows = tx.execute(sql.THROUGHPUT, {"minutes": minutes, "now": now}).fetchall()
        current = int(rows[0][0])
        return current, [(int(r[1]), int(r[2]), int(r[3])) for r in rows if r[1] is not None]

    def snapshot(self, tx: Conn, alive_window: float, now: float | None) -> Snapshot:
        """Counts (shards summed), the earliest run_at, now, the workers' totals and the
        paused queues."""
        counts = [(q, s, int(n)) for q, s, n in tx.execute(sql.COUNTS).fetchall()]
        row = tx.execute(sql.NEXT_RUN_ANY_QUEUE, {"now": now}).fetchone()
        assert row is not None
        earliest, at = row
        params = {"alive_since": float(at) - alive_window}
        workers = tx.execute(sql.WORKER_TOTALS, params).fetchone()
        assert workers is not None
        lock = LockStats(
            int(workers[0]),
            float(workers[1]),
            float(workers[2]),
            int(workers[3]),
            int(workers[4]),
        )
        paused = self.paused_queues(tx)
        return Snapshot(counts, _float_or_none(earliest), float(at), lock, int(workers[5]), paused)
