"""The PostgreSQL backend: a pool of connections per process, claims with ``FOR UPDATE SKIP
LOCKED``, leases on the database's clock, sharded counts, wake-ups by LISTEN/NOTIFY."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ...errors import (
    DuplicateJob,
    InvalidArgumentType,
    NotAQueueDatabase,
    SqliteJobQError,
)
from ...job import BatchProgress, LockStats, WorkerInfo
from ..base import (
    BATCH_COLUMNS,
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
    pending,
    plan_limited_in,
    task_of_limit_key,
)
from . import queries as sql
from . import schema
from .connection import (
    Connections,
    PgSettings,
    TransactionConnection,
    connect_kwargs,
    database_now,
    is_transient,
    server_error,
    with_url_options,
)
from .migrate import PostgresMigrationRunner, applied
from .wakeup import PgWaker

log = logging.getLogger("sqlitejobq")

_STEP_SQL = {
    Step.COMPLETE: sql.COMPLETE,
    Step.FAIL: sql.FAIL,
    Step.RELEASE: sql.RELEASE,
    Step.ABANDON: sql.ABANDON,
    Step.HEARTBEAT: sql.HEARTBEAT,
    Step.PROGRESS: sql.SET_PROGRESS,
    Step.DEFER: sql.DEFER_UNKNOWN,
}
#: The oldest server the SQL runs on (MATERIALIZED common table expressions came in 12).
MIN_SERVER_VERSION = 120000
_RESCUE_LIMIT = 500
_PURGE_CHUNK = 5000


class PostgresBackend:
    """The PostgreSQL engine: the same tables and meaning as SQLite's, for many hosts."""

    def __init__(self, url: str, settings: PgSettings, clock: Callable[[], float] | None) -> None:
        self.settings = settings
        self.clock = clock
        self._dbname: str | None = None  # the database's name, read on first use
        self.metrics = LockMetrics()
        self.connections = Connections(url, settings, self.metrics)
        self.target = self.connections.target
        shown = {
            "schema": settings.schema if settings.schema != "public" else None,
            "pooler": settings.pooler,
        }
        for key, value in shown.items():
            if value is not None:
                self.target += ("&" if "?" in self.target else "?") + f"{key}={value}"
        self.capabilities = Capabilities(
            is_file=False, database_clock=True, listener=settings.listens, async_transaction=True
        )
        self.waker = PgWaker(
            settings.listen_url or url,
            connect_kwargs(settings),
            sql.channel_name(settings.schema),
            poll_only=not settings.listens,
            debounce=settings.notify_debounce,
            notifies=not settings.poll_only,
        )

    @classmethod
    def create(
        cls,
        url: str,
        *,
        retry_timeout: float,
        clock: Callable[[], float] | None,
        options: dict[str, Any],
    ) -> PostgresBackend:
        """The backend for a ``postgresql://`` URL and the queue's PostgreSQL options; the
        URL may name the schema and the pooler too (``...?schema=jobs&pooler=transaction``),
        as the CLI's ``--db`` does."""
        plain, options = with_url_options(url, options)
        return cls(plain, PgSettings.checked(retry_timeout, options), clock)

    def _now(self) -> float | None:
        """The time to bind as ``now``: the injected clock's, or None for the server's."""
        return None if self.clock is None else self.clock()

    def now(self) -> float:
        """The time that stamps leases and due times: the server's clock (or the queue's)."""
        if self.clock is not None:
            return self.clock()
        return float(self.connections.read(database_now, "clock"))

    # --- opening and closing ---------------------------------------------------------------

    def open(self) -> None:
        """Refuse a schema that holds tables named like the library's that it did not
        create, or a newer library schema (changing nothing); then migrate."""

        def inspect(conn: psycopg.Connection[Any]) -> None:
            if conn.info.server_version < MIN_SERVER_VERSION:
                raise SqliteJobQError(
                    f"{self.target} runs PostgreSQL {conn.info.parameter_status('server_version')}"
                    f"; sqlitejobq needs PostgreSQL 12 or newer (MATERIALIZED common table "
                    f"expressions)"
                )
            foreign = _foreign_tables(conn, self.settings.schema)
            if foreign:
                raise NotAQueueDatabase(
                    f"schema {self.settings.schema} of {self.target} holds table(s) "
                    f"{', '.join(foreign)} that sqlitejobq did not create (no migration of the "
                    f"library is recorded); use another schema (schema=...)"
                )
            pending(schema.MIGRATIONS, applied(conn, schema.NAMESPACE), schema.NAMESPACE)

        self.connections.read(inspect, "open")
        with self.connections.connection() as conn:
            runner = PostgresMigrationRunner(
                conn, retry_timeout=self.settings.retry_timeout,
                options={"schema": self.settings.schema},
            )  # fmt: skip
            runner.apply(schema.MIGRATIONS, schema.NAMESPACE, dry_run=False, backup=None)

    def close(self) -> None:
        """Close this process's connections and stop listening."""
        self.connections.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self.connections.closed

    def checkpoint(self) -> tuple[int, int, int]:
        """PostgreSQL manages its own write-ahead log: nothing to do."""
        return 0, 0, 0

    # --- writes -----------------------------------------------------------------------------

    def insert_jobs(
        self,
        jobs: Sequence[NewJob],
        *,
        batch_name: str | None,
        make_batch: bool,
        connection: Any = None,
        then: Callable[[int, list[int]], NewJob] | None = None,
    ) -> tuple[int | None, list[int]]:
        """Insert jobs in one statement; a job whose unique key an active job holds is not
        inserted, the holder's id is returned in its place. NOTIFY goes in the same
        transaction, so the wake-up fires when (and only if) it commits."""
        now = self._now()
        params = {
            "tasks": [j.task for j in jobs], "queues": [j.queue for j in jobs],
            "payloads": [j.payload for j in jobs], "priorities": [j.priority for j in jobs],
            "max_attempts": [j.max_attempts for j in jobs],
            "unique_keys": [j.unique_key for j in jobs],
            "limit_keys": [j.limit_key for j in jobs], "now": now,
        }  # fmt: skip
        delays = [j.delay for j in jobs]
        waits = any(job.depends_on for job in jobs)

        def body(conn: psycopg.Connection[Any]) -> tuple[int | None, list[int]]:
            batch_id = None
            if make_batch:
                batch_id = int(conn.execute(sql.INSERT_BATCH, {"name": batch_name, "now": now})
                               .fetchone()[0])  # type: ignore[index]  # fmt: skip
            inserted = [
                row[0] for row in conn.execute(sql.INSERT_JOBS, {
                    **params, "batch_id": batch_id, "delays": delays,
                })
            ] if jobs else []  # fmt: skip
            tally = Tally()
            ids: list[int | None] = []
            for job, job_id in zip(jobs, inserted, strict=True):
                ids.append(job_id)
                if job_id is not None:
                    tally.move(job.queue, batch_id, None, "queued")
                    if job.depends_on:
                        _wait_for(conn, job_id, job, batch_id, tally)
            missing = [job.unique_key for job, i in zip(jobs, ids, strict=True) if i is None]
            if missing:
                holders = dict(
                    conn.execute(sql.ACTIVE_JOBS_WITH_KEYS, {"keys": missing}).fetchall()
                )
                ids = [i if i is not None else holders.get(job.unique_key)
                       for job, i in zip(jobs, ids, strict=True)]  # fmt: skip
                if any(i is None for i in ids):
                    # the holder finished between the two statements: the caller may retry
                    raise SqliteJobQError("a unique key changed hands during the enqueue; retry")
            if then is not None and batch_id is not None:
                follow = then(batch_id, [int(i) for i in ids if i is not None])
                row = conn.execute(sql.INSERT_JOBS, {
                    "tasks": [follow.task], "queues": [follow.queue],
                    "payloads": [follow.payload], "priorities": [follow.priority],
                    "delays": [follow.delay], "max_attempts": [follow.max_attempts],
                    "unique_keys": [None], "limit_keys": [follow.limit_key], "batch_id": None,
                    "now": now,
                }).fetchone()  # fmt: skip
                follow_id = int(row[0])  # type: ignore[index]
                tally.move(follow.queue, None, None, "queued")
                _wait_for(conn, follow_id, follow, None, tally)
                ids.append(follow_id)
            write_tally(conn, tally)
            for channel_queue in self.waker.channels_to_notify({j.queue for j in jobs}):
                conn.execute(sql.NOTIFY, {"channel": self.waker.channel, "payload": channel_queue})
            return batch_id, [int(i) for i in ids if i is not None]

        if connection is None:
            if (
                jobs
                and not make_batch
                and not waits
                and all(job.unique_key is None for job in jobs)
            ):
                # every job is inserted: one statement, one round trip
                wake = self.waker.channels_to_notify({j.queue for j in jobs})
                if len(jobs) == 1:
                    (job,) = jobs
                    rows = self.connections.write_statement(sql.ENQUEUE_ONE, {
                        "task": job.task, "queue": job.queue, "payload": job.payload,
                        "priority": job.priority, "delay": job.delay,
                        "max_attempts": job.max_attempts, "limit_key": job.limit_key, "now": now,
                        "channel": self.waker.channel, "wake": wake[0] if wake else None,
                    }, "enqueue")  # fmt: skip
                else:
                    rows = self.connections.write_statement(sql.ENQUEUE_QUEUED, {
                        **params, "delays": delays, "channel": self.waker.channel, "wake": wake,
                    }, "enqueue")  # fmt: skip
                result: tuple[int | None, list[int]] = (None, [int(row[0]) for row in rows])
            else:
                result = self.connections.write(body, "enqueue")
            self.waker.notify()
            return result
        inserted: tuple[int | None, list[int]] = self._in_caller_transaction(connection, body)
        return inserted

    async def insert_in_async_transaction(self, conn: Any, job: NewJob) -> int:
        """Insert one job in the caller's open transaction on a psycopg AsyncConnection to
        the queue's database: it exists once the caller commits (its NOTIFY fires then)."""
        if not isinstance(conn, psycopg.AsyncConnection):
            raise InvalidArgumentType(
                f"connection must be a psycopg connection to the queue's database, got "
                f"{type(conn).__name__}"
            )
        if job.unique_key is not None or job.depends_on:
            raise InvalidArgumentType(
                "unique_key and depends_on are not taken inside an async transaction: enqueue "
                "that job with AsyncQueue.enqueue (its own transaction) or on a sync connection"
            )
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
            raise SqliteJobQError(
                "connection has no open transaction: the job would be committed on its own; "
                "open one with `async with conn.transaction():` first"
            )
        self._check_same_database(conn)
        try:
            previous = (await (await conn.execute("SELECT current_setting('search_path')"))
                        .fetchone())[0]  # type: ignore[index]  # fmt: skip
            await conn.execute(sql.SET_SEARCH_PATH,
                               {"schema": self.settings.schema, "is_local": True})  # fmt: skip
            cursor = await conn.execute(sql.ENQUEUE_ONE, {
                "task": job.task, "queue": job.queue, "payload": job.payload,
                "priority": job.priority, "delay": job.delay, "max_attempts": job.max_attempts,
                "limit_key": job.limit_key, "now": self._now(),
                "channel": self.waker.channel, "wake": job.queue,
            })  # fmt: skip
            row = await cursor.fetchone()
            await conn.execute("SELECT set_config('search_path', %s, true)", (previous,))
        except psycopg.Error as exc:
            raise server_error(exc, self.target, "enqueue inside the caller's transaction") from exc
        return int(row[0])  # type: ignore[index]

    def _check_same_database(self, conn: Any) -> None:
        """Refuse a caller's connection to another database. The database name only (a host
        may be spelled many ways): enough to keep a job from landing in a same-named schema
        of another database, read without a query."""
        if self._dbname is None:
            self._dbname = self.connections.read(lambda own: own.info.dbname, "enqueue")
        if conn.info.dbname != self._dbname:
            raise SqliteJobQError(
                f"connection is open on database {conn.info.dbname!r}, not on the queue's "
                f"database {self._dbname!r}; a job can only join a transaction on the same one"
            )

    def _in_caller_transaction(
        self, conn: Any, body: Callable[[psycopg.Connection[Any]], Any]
    ) -> Any:
        """Run ``body`` in the caller's open transaction (not retried: it is the caller's)."""
        if not isinstance(conn, psycopg.Connection):
            raise InvalidArgumentType(
                f"connection must be a psycopg connection to the queue's database, got "
                f"{type(conn).__name__}"
            )
        status = conn.info.transaction_status
        if conn.autocommit and status != psycopg.pq.TransactionStatus.INTRANS:
            raise SqliteJobQError(
                "connection is in autocommit mode with no open transaction: the job would be "
                "committed on its own; open one with `with conn.transaction():` first"
            )
        self._check_same_database(conn)
        try:
            previous = conn.execute("SELECT current_setting('search_path')").fetchone()[0]  # type: ignore[index]
            conn.execute(sql.SET_SEARCH_PATH, {"schema": self.settings.schema, "is_local": True})
            try:
                return body(conn)
            finally:
                # after an error the transaction is aborted: a statement here would only
                # replace the error that says what went wrong
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                    conn.execute("SELECT set_config('search_path', %s, true)", (previous,))
        except psycopg.Error as exc:
            raise server_error(exc, self.target, "enqueue inside the caller's transaction") from exc

    def exchange(
        self, steps: Sequence[tuple[Step, StepParams]], claim: ClaimRequest | None
    ) -> tuple[list[Any], list[JobRecord]]:
        """In one transaction: apply fenced steps to claimed jobs, then claim more."""

        def body(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[JobRecord], bool]:
            now = self._now()
            tally = Tally()
            results = _apply_steps(conn, steps, tally, now)
            _release_dependents(conn, tally, now)
            records = [] if claim is None else self._claim(conn, claim, now)
            for record in records:
                tally.move(record.queue, record.batch_id, "queued", "processing")
            write_tally(conn, tally)
            self._notify_changes(conn, tally)
            return (
                results,
                records,
                bool(tally.released or tally.freed_limit or tally.watched_ended),
            )

        what = "claim" if not steps else steps[0][0].value
        results, records, wake = self.connections.write(body, what)
        if wake:
            self.waker.notify()
        return results, records

    def _notify_changes(self, conn: psycopg.Connection[Any], tally: Tally) -> None:
        """Wake workers for jobs a transaction released from waiting, and for a limited job
        that ended (a slot of its limit freed: workers held back by it look again)."""
        queues = set(tally.released)
        if tally.freed_limit:
            queues.add("(limits)")
        if tally.watched_ended:
            queues.add("(ended)")
        if queues:
            self._notify(conn, queues)

    def _claim(
        self, conn: psycopg.Connection[Any], claim: ClaimRequest, now: float | None
    ) -> list[JobRecord]:
        """Limited jobs first, under the limits lock (so their counts are exact), then the
        plain claim for the rest."""
        if not claim.limits:
            return _claim(conn, claim, claim.limit, now)
        queued_keys = [
            key for (key,) in conn.execute(sql.LIMITED_KEYS)
            if task_of_limit_key(key) in claim.limits
        ]  # fmt: skip
        if not queued_keys:
            return self._claim_plain(conn, claim, claim.limit, now)
        at = now if now is not None else database_now(conn)
        plan = _plan_limited(conn, claim, claim.limit, at, queued_keys)
        if plan.ids:
            # chosen on counts that other claimers may change: lock the keys of the jobs
            # chosen (only those), then choose again among them on counts that hold
            keys = sorted(set(plan.keys))
            conn.execute(sql.LOCK_LIMIT_KEYS, {
                "keys": [sql.limit_lock_key(self.settings.schema, key) for key in keys],
            })  # fmt: skip
            plan = _plan_limited(conn, claim, claim.limit, at, keys)
        records: list[JobRecord] = []
        if plan.ids:
            # stamped with the time the rate was counted at: started_at and the recorded
            # starts are then the same instants
            records = [JobRecord._make(row) for row in conn.execute(sql.CLAIM_IDS, {
                "ids": plan.ids, "worker": claim.worker, "lease": claim.lease, "now": at,
            })]  # fmt: skip
            if plan.rated_keys:
                conn.execute(sql.RECORD_STARTS, {"keys": plan.rated_keys, "at": at})
                for key in sorted(set(plan.rated_keys)):
                    period = claim.limits[task_of_limit_key(key)].rate[1]  # type: ignore[index]
                    conn.execute(sql.FORGET_STARTS, {"key": key, "since": at - period})
        if len(records) < claim.limit:
            records += self._claim_plain(conn, claim, claim.limit - len(records), now)
        return records

    def _claim_plain(
        self, conn: psycopg.Connection[Any], claim: ClaimRequest, limit: int, now: float | None
    ) -> list[JobRecord]:
        """The plain claim, by a worker that declares limits: a job of a limited task that
        came without its key goes back with it (see ``keys_for_unkeyed``)."""
        plain, hold = keys_for_unkeyed(_claim(conn, claim, limit, now), claim.limits)
        for job_id, key in hold:
            conn.execute(sql.HOLD_FOR_LIMIT, {"id": job_id, "key": key})
        return plain

    def rescue_expired(
        self, error: str, renew: Sequence[tuple[Step, StepParams]] = ()
    ) -> list[RescuedJob]:
        """Take back jobs whose lease ended (up to 500 a call; others' rows are skipped,
        not waited for); ``renew`` is applied first, in the same transaction."""

        def body(conn: psycopg.Connection[Any]) -> list[RescuedJob]:
            now = self._now()
            tally = Tally()
            _apply_steps(conn, renew, tally, now)
            rows = [
                RescuedJob(*row) for row in conn.execute(sql.RESCUE_EXPIRED, {
                    "now": now, "error": error, "limit": _RESCUE_LIMIT,
                })
            ]  # fmt: skip
            for row in rows:
                tally.changed((row.status, row.queue, row.batch_id, row.id, row.has_dependents,
                               row.limit_key, row.watched), "processing")  # fmt: skip
            _release_dependents(conn, tally, now)
            write_tally(conn, tally)
            self._notify(conn, {row.queue for row in rows if row.status == "queued"})
            self._notify_changes(conn, tally)
            return rows

        rescued = self.connections.write(body, "rescue")
        if rescued:
            self.waker.notify()
        return rescued

    def _notify(self, conn: psycopg.Connection[Any], queues: set[str]) -> None:
        for queue in self.waker.channels_to_notify(queues):
            conn.execute(sql.NOTIFY, {"channel": self.waker.channel, "payload": queue})

    def cancel(self, job_id: int) -> str | None:
        """Cancel a queued job or flag a running one; its status then, None if neither."""

        def body(conn: psycopg.Connection[Any]) -> str | None:
            now = self._now()
            row = conn.execute(sql.CANCEL, {"id": job_id, "now": now}).fetchone()
            if row is None:
                return None
            if row[0] == "cancelled":
                tally = Tally()
                tally.changed(row, row[7])
                _release_dependents(conn, tally, now)
                write_tally(conn, tally)
                self._notify_changes(conn, tally)
            return str(row[0])

        status: str | None = self.connections.write(body, "cancel")
        if status == "cancelled":
            self.waker.notify()  # waiters of this job, and of the jobs it released
        return status

    def retry(self, job_ids: Sequence[int]) -> list[int]:
        """Queue failed or cancelled jobs again with fresh attempts; the ids re-queued."""

        def body(conn: psycopg.Connection[Any]) -> list[int]:
            try:
                rows = conn.execute(
                    sql.RETRY, {"ids": list(job_ids), "now": self._now()}
                ).fetchall()
            except pg_errors.UniqueViolation:
                raise _HeldKey from None
            tally = Tally()
            for _, old, queue, batch_id in rows:
                tally.move(queue, batch_id, old, "queued")
            write_tally(conn, tally)
            self._notify(conn, {row[2] for row in rows})
            return [int(row[0]) for row in rows]

        try:
            done = self.connections.write(body, "retry")
        except _HeldKey:
            job_id = job_ids[0] if len(job_ids) == 1 else "?"
            key = self.connections.read_one(sql.UNIQUE_KEY, {"id": job_ids[0]})
            raise DuplicateJob(
                f"job {job_id} cannot be retried: another queued or processing job holds its "
                f"unique key {key[0] if key else None!r}"
            ) from None
        if done:
            self.waker.notify()
        return done

    def purge(self, older_than: float, dead_after: float) -> int:
        """Delete finished jobs older than ``older_than`` seconds, a chunk per transaction;
        then batches left with no job, and dead or stopped workers' rows; the job count."""
        now = self._now()
        if now is None:
            now = self.now()
        cutoff, dead_before = now - older_than, now - dead_after

        def delete_chunk(conn: psycopg.Connection[Any]) -> int:
            rows = conn.execute(
                sql.PURGE_FINISHED, {"cutoff": cutoff, "chunk": _PURGE_CHUNK}
            ).fetchall()
            tally = Tally()
            deleted = 0
            for queue, status, count in rows:
                tally.queues[queue, status] = tally.queues.get((queue, status), 0) - int(count)
                deleted += int(count)
            write_tally(conn, tally)
            return deleted

        total = 0
        while True:
            deleted = self.connections.write(delete_chunk, "purge")
            total += deleted
            if deleted < _PURGE_CHUNK:
                break

        def tidy(conn: psycopg.Connection[Any]) -> None:
            while conn.execute(sql.PURGE_BATCHES, {"cutoff": cutoff, "chunk": _PURGE_CHUNK}
                               ).rowcount == _PURGE_CHUNK:  # fmt: skip
                pass
            conn.execute(sql.PURGE_WORKERS, {"cutoff": cutoff, "dead_before": dead_before})

        self.connections.write(tidy, "purge")
        return total

    # --- reads ----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job's row, or None."""
        row = self.connections.read_one(sql.GET_JOB, {"id": job_id})
        return None if row is None else JobRecord._make(row)

    def job_status(self, job_id: int) -> str | None:
        """The job's status, or None if there is no such job."""
        row = self.connections.read_one(sql.JOB_STATUS, {"id": job_id})
        return None if row is None else str(row[0])

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job."""
        row = self.connections.read_one(sql.CANCEL_REQUESTED, {"id": job_id})
        return bool(row and row[0])

    def job_history(self, job_id: int) -> tuple[JobRecord, str | None] | None:
        """The job's row and its history (JSON text, None: nothing recorded), or None."""
        row = self.connections.read_one(sql.JOB_WITH_HISTORY, {"id": job_id})
        return None if row is None else (JobRecord._make(row[:22]), row[22])

    def list_jobs(self, filters: dict[str, Any], oldest_first: bool) -> list[JobRecord]:
        """Rows of the jobs matching every filter given, by id in either direction."""
        statement = sql.list_jobs(oldest_first, listing_by(filters))
        return [JobRecord._make(row) for row in self.connections.read_all(statement, filters)]

    def failed_ids(self, filters: dict[str, Any], after: int, limit: int) -> list[int]:
        """A page of failed jobs' ids after ``after``, in id order, matching ``filters``."""
        rows = self.connections.read_all(
            sql.FAILED_IDS, {**filters, "after": after, "limit": limit}
        )
        return [int(row[0]) for row in rows]

    def max_job_id(self) -> int | None:
        """The newest job's id, or None."""
        row = self.connections.read_one(sql.MAX_JOB_ID)
        return None if row is None or row[0] is None else int(row[0])

    def batches(self, limit: int, before: int | None) -> list[BatchProgress]:
        """Batches below ``before`` (None: any), newest first, their shards summed."""
        rows = self.connections.read_all(sql.BATCHES, {"limit": limit, "before": before})
        return [BatchProgress(*row) for row in rows]

    def dependencies(self, job_id: int) -> tuple[list[int], list[int]] | None:
        """What a job waits for and what waits for it; None if there is no such job."""

        def read(conn: psycopg.Connection[Any]) -> tuple[list[int], list[int]] | None:
            params = {"id": job_id}
            if conn.execute(sql.JOB_STATUS, params).fetchone() is None:
                return None
            waits_on = [int(row[0]) for row in conn.execute(sql.WAITS_ON, params)]
            waited_by = [int(row[0]) for row in conn.execute(sql.WAITED_ON_BY, params)]
            return waits_on, waited_by

        result: tuple[list[int], list[int]] | None = self.connections.read(read, "dependencies")
        return result

    def throughput(self, minutes: int) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute by the database's clock, and the rows of the last ``minutes``
        minutes up to it."""
        rows = self.connections.read_all(sql.THROUGHPUT, {"minutes": minutes, "now": self._now()})
        current = int(rows[0][0])
        return current, [(int(r[1]), int(r[2]), int(r[3])) for r in rows if r[1] is not None]

    def batch(self, batch_id: int) -> BatchProgress | None:
        """The batch's counts, its shards summed, or None."""
        row = self.connections.read_one(sql.BATCH, {"id": batch_id})
        return None if row is None else BatchProgress(*row)

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None."""
        row = self.connections.read_one(sql.LATEST_BATCH_ID)
        return None if row is None or row[0] is None else int(row[0])

    def batch_jobs(self, batch_id: int) -> list[JobRecord]:
        """Rows of the batch's jobs in enqueue order."""
        rows = self.connections.read_all(sql.BATCH_JOBS, {"batch_id": batch_id})
        return [JobRecord._make(row) for row in rows]

    # --- waiting -------------------------------------------------------------------------

    def watch(self, job_id: int) -> str | None:
        """Mark a job as waited for; its status, or None if there is no such job."""

        def body(conn: psycopg.Connection[Any]) -> str | None:
            row = conn.execute(sql.WATCH, {"id": job_id}).fetchone()
            return None if row is None else str(row[0])

        status: str | None = self.connections.write(body, "wait")
        return status

    def watch_batch(self, batch_id: int) -> None:
        """Mark every unfinished job of a batch as waited for."""
        self.connections.write(
            lambda conn: conn.execute(sql.WATCH_BATCH, {"batch_id": batch_id}), "wait"
        )

    # --- limits and schedules ----------------------------------------------------------

    def limited_due(self, claim: ClaimRequest) -> LimitedDue:
        """Whether a limited job could be claimed now, and when one next could (see Backend)."""

        def read(conn: psycopg.Connection[Any]) -> LimitedDue:
            now = self._now()
            at = now if now is not None else database_now(conn)
            plan = _plan_limited(conn, claim, 1, at)
            row = conn.execute(sql.NEXT_LIMITED_RUN, {"now": now}).fetchone()
            upcoming = _float_or_none(row[0]) if row else None
            return LimitedDue(bool(plan.ids), plan.next_start, upcoming, at)

        result: LimitedDue = self.connections.read(read, "limits")
        return result

    def limit_usage(self, limit: int) -> list[tuple[str, int, int, int]]:
        """Per limit key: queued, processing, and starts within the last hour."""

        def read(conn: psycopg.Connection[Any]) -> list[tuple[str, int, int, int]]:
            at = self._now()
            since = (at if at is not None else database_now(conn)) - 3600
            rows = conn.execute(sql.LIMIT_USAGE, {"limit": limit}).fetchall()
            return [
                (key, int(queued), int(processing),
                 len(conn.execute(sql.RECENT_STARTS, {"key": key, "since": since}).fetchall()))
                for key, queued, processing in rows
            ]  # fmt: skip

        result: list[tuple[str, int, int, int]] = self.connections.read(read, "limits")
        return result

    def declare_schedules(self, schedules: Sequence[tuple[str, str, str, str]]) -> None:
        """Record the schedules a worker runs."""

        def body(conn: psycopg.Connection[Any]) -> None:
            conn.execute(sql.DECLARE_SCHEDULES, {
                "names": [s[0] for s in schedules], "tasks": [s[1] for s in schedules],
                "specs": [s[2] for s in schedules], "zones": [s[3] for s in schedules],
                "now": self._now(),
            })  # fmt: skip

        self.connections.write(body, "declare schedules")

    def last_slots(self) -> dict[str, float | None]:
        """The latest slot each recorded schedule created a job for."""
        rows = self.connections.read_all(sql.LAST_SLOTS)
        return {str(row[0]): _float_or_none(row[1]) for row in rows}

    def fire_slot(self, name: str, slot: float, job: NewJob) -> int | None:
        """Create the slot's job unless another worker did (see Backend)."""

        def body(conn: psycopg.Connection[Any]) -> int | None:
            if conn.execute(sql.TAKE_SLOT, {"name": name, "slot": slot}).fetchone() is None:
                return None
            now = self._now()
            row = conn.execute(sql.INSERT_JOBS, {
                "tasks": [job.task], "queues": [job.queue], "payloads": [job.payload],
                "priorities": [job.priority], "delays": [job.delay],
                "max_attempts": [job.max_attempts], "unique_keys": [job.unique_key],
                "limit_keys": [job.limit_key], "batch_id": None, "now": now,
            }).fetchone()  # fmt: skip
            if row is None or row[0] is None:
                return None
            tally = Tally()
            tally.move(job.queue, None, None, "queued")
            write_tally(conn, tally)
            conn.execute(sql.SLOT_JOB, {"name": name, "job_id": row[0]})
            self._notify(conn, {job.queue})
            return int(row[0])

        job_id: int | None = self.connections.write(body, "schedule")
        if job_id is not None:
            self.waker.notify()
        return job_id

    def schedules(self) -> list[tuple[Any, ...]]:
        """Recorded schedules, by name."""
        return [tuple(row) for row in self.connections.read_all(sql.SCHEDULES)]

    def next_run_at(self, queues: tuple[str, ...] | None) -> tuple[float | None, float]:
        """The earliest ``run_at`` of a queued job in ``queues`` (None: every queue), and
        the database's now."""
        if queues is None:
            row = self.connections.read_one(sql.NEXT_RUN_ANY_QUEUE, {"now": self._now()})
        else:
            row = self.connections.read_one(
                sql.NEXT_RUN_IN_QUEUES, {"queues": list(queues), "now": self._now()}
            )
        return _float_or_none(row[0]), float(row[1])

    def next_lease_expiry(self) -> tuple[float | None, float]:
        """When the earliest lease of a processing job ends (None: none), and now."""
        row = self.connections.read_one(sql.NEXT_LEASE_EXPIRY, {"now": self._now()})
        return _float_or_none(row[0]), float(row[1])

    def snapshot(self, alive_window: float) -> Snapshot:
        """Counts (shards summed), the earliest run_at and the workers' totals."""

        def read(conn: psycopg.Connection[Any]) -> Snapshot:
            counts = [(q, s, int(n)) for q, s, n in conn.execute(sql.COUNTS).fetchall()]
            earliest, now = conn.execute(sql.NEXT_RUN_ANY_QUEUE, {"now": self._now()}).fetchone()  # type: ignore[misc]
            workers = conn.execute(
                sql.WORKER_TOTALS, {"alive_since": float(now) - alive_window}
            ).fetchone()
            assert workers is not None
            lock = LockStats(int(workers[0]), float(workers[1]), float(workers[2]),
                             int(workers[3]), int(workers[4]))  # fmt: skip
            return Snapshot(counts, _float_or_none(earliest), float(now), lock, int(workers[5]))

        return self.connections.read(read, "stats")

    # --- workers --------------------------------------------------------------------------

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts (or starts again under the same id)."""
        self.connections.write(lambda conn: conn.execute(sql.REGISTER_WORKER, {
            "id": worker.id, "hostname": worker.hostname, "pid": worker.pid,
            "queues": worker.queues, "concurrency": worker.concurrency, "now": self._now(),
        }), "register worker")  # fmt: skip

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row; write it anew if it is missing (purged while it ran). Its
        deltas go to the current minute's throughput in the same transaction."""

        def body(conn: psycopg.Connection[Any]) -> None:
            now = self._now()
            stopped_at = (
                (now if now is not None else database_now(conn)) if worker.stopped else None
            )
            conn.execute(sql.REPORT_WORKER, worker.row(worker.started_at, now, stopped_at))
            if worker.completed_delta or worker.failed_delta:
                conn.execute(sql.ADD_THROUGHPUT, {
                    "completed": worker.completed_delta, "failed": worker.failed_delta,
                    "now": now,
                })  # fmt: skip
                conn.execute(sql.FORGET_THROUGHPUT, {"keep": THROUGHPUT_KEPT, "now": now})

        self.connections.write(body, "report worker")

    def workers(self, limit: int) -> list[WorkerInfo]:
        """The workers, most recently started first."""
        rows = self.connections.read_all(sql.LIST_WORKERS, {"limit": limit})
        return [
            WorkerInfo(
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
            for r in rows
        ]


class _HeldKey(Exception):
    """A retried job's unique key is held by another active job (the transaction aborted)."""


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _apply_steps(
    conn: psycopg.Connection[Any],
    steps: Sequence[tuple[Step, StepParams]],
    tally: Tally,
    now: float | None,
) -> list[Any]:
    """Run each step's statement; completions without hooks go in one statement."""
    results: list[Any] = [None] * len(steps)
    for _, params in steps:
        params["now"] = now
    plain = [n for n, (step, params) in enumerate(steps)
             if step is Step.COMPLETE and HOOK not in params]  # fmt: skip
    ids = [steps[n][1]["id"] for n in plain]
    done: set[int] = set()
    if len(plain) > 1 and len(set(ids)) == len(ids):
        chosen = [steps[n][1] for n in plain]
        # planned for its arrays each time: the generic plan of a prepared statement cannot
        # see how many jobs it completes and took three times as long for a batch of 250
        rows = conn.execute(
            sql.COMPLETE_MANY,
            {
                "ids": ids,
                "attempts": [p["attempts"] for p in chosen],
                "workers": [p["worker"] for p in chosen],
                "results": [p["result"] for p in chosen],
                "messages": [p["message"] for p in chosen],
                "finished_ats": [now] * len(chosen),
                "now": now,
            },
            prepare=False,
        ).fetchall()
        by_id = {row[0]: (row[1], row[2], row[3], row[0], row[4], row[5], row[6]) for row in rows}
        for n, job_id in zip(plain, ids, strict=True):
            row = by_id.get(job_id)
            if row is not None:
                results[n] = row[0]
                tally.changed(row, "processing")
        done = set(plain)
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


def _complete_with_hook(conn: psycopg.Connection[Any], params: StepParams) -> Any:
    """Complete one job and run its on_complete hook in a savepoint: both are kept, or the
    attempt is recorded as failed with the hook's error and nothing the hook wrote stays."""
    try:
        with conn.transaction():
            row = conn.execute(sql.COMPLETE, params).fetchone()
            if row is not None and row[0] == "completed":
                params[HOOK](TransactionConnection(conn, SqliteJobQError, "an on_complete hook"))
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, psycopg.OperationalError):
            raise
        log.warning("job %s: on_complete failed, the attempt counts as failed: %s",
                    params["id"], exc)  # fmt: skip
        return conn.execute(sql.FAIL, {**params[HOOK_FAILED](exc), "now": params["now"]}).fetchone()
    return row


def write_tally(conn: psycopg.Connection[Any], tally: Tally) -> None:
    """Write a transaction's count changes before it commits, in key order (sharded rows
    touched in one order never deadlock)."""
    changed = tally.changed_queues()
    if changed:
        conn.execute(sql.ADD_TO_COUNTS, {
            "queues": [q for q, _, _ in changed], "statuses": [s for _, s, _ in changed],
            "deltas": [n for _, _, n in changed], "shard": None,
        })  # fmt: skip
    if tally.batches:
        ordered = sorted(tally.batches.items())
        columns = {name: [counts[name] for _, counts in ordered] for name in BATCH_COLUMNS}
        conn.execute(sql.ADD_TO_BATCH_COUNTS, {
            "batch_ids": [b for b, _ in ordered], "totals": columns["total"],
            "queued": columns["queued"], "processing": columns["processing"],
            "completed": columns["completed"], "failed": columns["failed"],
            "cancelled": columns["cancelled"], "waiting": columns["waiting"], "shard": None,
        })  # fmt: skip


def _wait_for(
    conn: psycopg.Connection[Any], job_id: int, job: NewJob, batch_id: int | None, tally: Tally
) -> None:
    """Make a new job (of batch ``batch_id``) wait for its dependencies: those not finished
    yet hold it; one that failed or was cancelled already cancels it (policy 'cancel')."""
    found = {int(r[0]): str(r[1]) for r in conn.execute(
        sql.FLAG_DEPENDENCIES, {"ids": list(job.depends_on)})}  # fmt: skip
    status = dependency_outcome(job, found)
    if isinstance(status, str):
        conn.execute(sql.CANCEL_AT_ENQUEUE, {"id": job_id, "error": status, "now": None})
        tally.move(job.queue, batch_id, "queued", "cancelled")
        return
    if status:
        conn.execute(sql.WAIT_FOR, {
            "id": job_id, "waiting_on": len(status), "policy": job.dependency_policy,
        })  # fmt: skip
        tally.move(job.queue, batch_id, "queued", "waiting")
        conn.execute(sql.ADD_DEPENDENCIES, {"id": job_id, "deps": status})


def _release_dependents(conn: psycopg.Connection[Any], tally: Tally, now: float | None) -> None:
    """Count finished jobs off their dependents, level by level (see the SQLite backend)."""
    while tally.finished:
        finished, tally.finished = tally.finished, []
        params = {"ids": [i for i, _ in finished], "oks": [ok for _, ok in finished], "now": now}
        for row in conn.execute(sql.RELEASE_DEPENDENTS, params).fetchall():
            tally.changed(row, "waiting")
        conn.execute(sql.FORGET_DEPENDENCIES, params)


_LIMIT_QUERIES = LimitQueries(
    sql.LIMITED_KEYS,
    sql.LIMITED_RUNNING,
    sql.LIMITED_CANDIDATES,
    sql.RECENT_STARTS_MANY,
    many=True,
)


def _plan_limited(
    conn: psycopg.Connection[Any],
    claim: ClaimRequest,
    want: int,
    now: float,
    only: list[str] | None = None,
) -> LimitedClaim:
    """Choose limited jobs to claim (see ``plan_limited_claim``), among the keys ``only``
    when given (else every key with queued jobs)."""
    params = {
        "now": now, "queues": None if claim.queues is None else list(claim.queues),
        "exclude": list(claim.exclude),
    }  # fmt: skip
    return plan_limited_in(conn.execute, _LIMIT_QUERIES, claim, want, now, params, only)


def _claim(
    conn: psycopg.Connection[Any], claim: ClaimRequest, limit: int, now: float | None
) -> list[JobRecord]:
    params: dict[str, Any] = {
        "worker": claim.worker, "lease": claim.lease, "now": now, "limit": limit,
        "exclude": list(claim.exclude),
    }  # fmt: skip
    if claim.queues is None:
        rows = conn.execute(sql.CLAIM_ANY_QUEUE, params).fetchall()
    else:
        rows = conn.execute(
            sql.CLAIM_FROM_QUEUES, {**params, "queues": list(claim.queues)}
        ).fetchall()
    return [JobRecord._make(row) for row in rows]


_LIBRARY_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = %s "
    "AND tablename LIKE 'sqlitejobq\\_%%' ORDER BY tablename"
)


def _foreign_tables(conn: psycopg.Connection[Any], schema_name: str) -> list[str]:
    """Tables named like the library's in the schema that no library migration recorded."""
    names = [row[0] for row in conn.execute(_LIBRARY_TABLES, (schema_name,))]
    own = [name for name in names if name != "sqlitejobq_migrations"]
    if not own:
        return []
    if "sqlitejobq_migrations" in names:
        try:
            with conn.transaction():
                recorded = conn.execute(
                    "SELECT count(*) FROM sqlitejobq_migrations WHERE namespace = 'sqlitejobq'"
                ).fetchone()
        except psycopg.Error:
            return names  # a table of that name with other columns: not ours either
        if recorded and recorded[0]:
            return []
    return own
