"""The PostgreSQL backend: a pool of connections per process, claims with ``FOR UPDATE SKIP
LOCKED``, leases on the database's clock, sharded counts, wake-ups by LISTEN/NOTIFY."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from ...errors import (
    InvalidArgumentType,
    NotAQueueDatabase,
    SqliteJobQError,
)
from ...migrations.values import pending
from ..base import Capabilities, NewJob
from ..shared import LockMetrics
from ..store import Store
from . import queries as sql
from . import schema
from .connection import (
    Connections,
    PgSettings,
    connect_kwargs,
    database_now,
    server_error,
    with_url_options,
)
from .migrate import PostgresMigrationRunner, applied
from .statements import PgStatements, job_arrays
from .wakeup import PgWaker

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")

#: The oldest server the SQL runs on (MATERIALIZED common table expressions came in 12).
MIN_SERVER_VERSION = 120000


class PostgresBackend(Store[psycopg.Connection[Any]]):
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
        self.waker: PgWaker = PgWaker(
            settings.listen_url or url,
            connect_kwargs(settings),
            sql.channel_name(settings.schema),
            poll_only=not settings.listens,
            debounce=settings.notify_debounce,
            notifies=not settings.poll_only,
        )
        self.sql = PgStatements(settings.schema, self.waker)

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
                conn,
                retry_timeout=self.settings.retry_timeout,
                options={"schema": self.settings.schema},
            )
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

    def enqueue_plain(self, jobs: Sequence[NewJob], now: float | None) -> list[int]:
        """Jobs that all go in: one statement (its counts and NOTIFY folded in), one round
        trip."""
        wake = self.waker.channels_to_notify({j.queue for j in jobs})
        if len(jobs) == 1:
            params = self._enqueue_one(jobs[0], now, wake[0] if wake else None)
            rows = self.connections.write_statement(sql.ENQUEUE_ONE, params, "enqueue")
        else:
            params = {**job_arrays(jobs), "now": now, "channel": self.waker.channel, "wake": wake}
            rows = self.connections.write_statement(sql.ENQUEUE_QUEUED, params, "enqueue")
        return [int(row[0]) for row in rows]

    def _enqueue_one(self, job: NewJob, now: float | None, wake: str | None) -> dict[str, Any]:
        """The parameters of ENQUEUE_ONE: the job, and the queue to NOTIFY (None: none)."""
        return {
            "task": job.task,
            "queue": job.queue,
            "payload": job.payload,
            "priority": job.priority,
            "delay": job.delay,
            "max_attempts": job.max_attempts,
            "limit_key": job.limit_key,
            "now": now,
            "channel": self.waker.channel,
            "wake": wake,
        }

    async def insert_in_async_transaction(self, conn: Any, job: NewJob) -> int:
        """Insert one job in the caller's open transaction on a psycopg AsyncConnection to
        the queue's database: it exists once the caller commits (its NOTIFY fires then)."""
        if not isinstance(conn, psycopg.AsyncConnection):
            raise InvalidArgumentType(
                f"connection must be a psycopg connection to the queue's database, got "
                f"{type(conn).__name__}"
            )
        if job.unique_key is not None or job.depends_on or job.expires is not None:
            raise InvalidArgumentType(
                "unique_key, depends_on and expires are not taken inside an async transaction: "
                "enqueue that job with AsyncQueue.enqueue (its own transaction) or on a sync "
                "connection"
            )
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
            raise SqliteJobQError(
                "connection has no open transaction: the job would be committed on its own; "
                "open one with `async with conn.transaction():` first"
            )
        self._check_same_database(conn)
        try:
            previous = (
                await (await conn.execute("SELECT current_setting('search_path')")).fetchone()
            )[0]  # type: ignore[index]
            await conn.execute(
                sql.SET_SEARCH_PATH, {"schema": self.settings.schema, "is_local": True}
            )
            cursor = await conn.execute(
                sql.ENQUEUE_ONE, self._enqueue_one(job, self.bound_now(), job.queue)
            )
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

    def in_caller_transaction(self, conn: Any, body: Callable[[psycopg.Connection[Any]], T]) -> T:
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

    # --- what the store runs its statements with -----------------------------------------

    def write(self, body: Callable[[psycopg.Connection[Any]], T], what: str = "write") -> T:
        """One transaction, retried as a whole while the fault passes."""
        return self.connections.write(body, what)

    def read(self, body: Callable[[psycopg.Connection[Any]], T], what: str = "read") -> T:
        """Reads on one connection (see ``Connections.read``)."""
        return self.connections.read(body, what)

    def look(self, body: Callable[[psycopg.Connection[Any]], T], what: str = "read") -> T:
        """Single reads: the same as ``read`` here (autocommit unless settings must ride)."""
        return self.connections.read(body, what)

    def bound_now(self) -> float | None:
        """The injected clock's time, or None: the statements read the server's clock."""
        return None if self.clock is None else self.clock()


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
