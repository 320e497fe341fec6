"""PostgreSQL connections: a pool per process, the one transaction path, the retry policy,
and what the server's errors mean.

Every write runs in one transaction on a connection from the pool, retried as a whole by
the engine's ``RetryPolicy`` on the faults that pass: a serialization failure, a deadlock,
a lock wait past ``lock_timeout``, a connection lost before the commit was sent. A server
that is down or refuses connections gives ``DatabaseUnavailable`` within the bound, naming
the reason the server gave.

No connection is opened with startup ``options`` (poolers such as PgBouncer refuse them).
Directly or through a pooler in session mode, each new connection sets its
``search_path`` and ``lock_timeout`` once. Through a pooler in transaction mode
(``pooler="transaction"``), where nothing of a session survives its transaction, every
transaction sets them itself (``SET LOCAL``, sent with its ``BEGIN``, or pipelined with a
single statement) and no statement is prepared on the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql
from psycopg_pool import ConnectionPool, PoolTimeout

from ... import validation
from ...errors import (
    DatabaseUnavailable,
    DiskFull,
    InvalidArgument,
    InvalidArgumentType,
    PayloadError,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
    StorageError,
)
from .. import POSTGRES_SCHEMES, redact_target
from ..shared import LentConnection, LockMetrics, RetryPolicy, options_of
from . import queries as sql

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")

#: The options a PostgreSQL queue takes (``Queue(url, schema="jobs", pool_size=4)``).
OPTIONS = (
    "schema",
    "pool_size",
    "poll_only",
    "connect_timeout",
    "lock_timeout",
    "notify_debounce",
    "pooler",
    "listen_url",
)
#: The options a URL may carry in its query (``...?schema=jobs&pooler=transaction``): libpq
#: does not know them, so they are taken out before it sees the URL.
URL_OPTIONS = ("schema", "pooler")
#: What ``pooler`` says about the connections: None (direct, or a pooler in session mode:
#: a connection keeps its session), "session" (the same), "transaction" (a pooler that
#: hands each transaction to any server connection: nothing of a session survives).
POOLERS = (None, "session", "transaction")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: SQLSTATEs of faults that pass: retried as a whole transaction.
_RETRY_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)
#: SQLSTATEs of a server-side prepared statement that vanished or clashed: the URL goes
#: through a pooler in transaction mode that the queue was not told about.
_PREPARED_STATES = frozenset({"26000", "42P05"})  # invalid_sql_statement_name, duplicate


@dataclass(frozen=True, slots=True)
class PgSettings:
    """Connection and retry settings of one PostgreSQL queue."""

    schema: str = "public"
    pool_size: int = 8
    poll_only: bool = False
    connect_timeout: float = 5.0
    lock_timeout: float = 5.0
    notify_debounce: float = 0.005
    retry_timeout: float = 30.0
    pooler: str | None = None
    listen_url: str | None = None

    @classmethod
    def checked(cls, retry_timeout: float, options: dict[str, Any]) -> PgSettings:
        """The settings from the queue's PostgreSQL options, each validated."""
        options_of("PostgreSQL", options, OPTIONS)
        schema = options.get("schema", "public")
        if not isinstance(schema, str) or not _SCHEMA.match(schema):
            raise InvalidArgument(
                f"schema must be a lower-case SQL identifier (letters, digits, _), got {schema!r}"
            )
        pooler = options.get("pooler")
        if pooler not in POOLERS:
            raise InvalidArgument(
                f"pooler must be 'transaction' (a pooler in transaction mode, such as "
                f"PgBouncer's pool_mode=transaction), 'session' or None, got {pooler!r}"
            )
        listen_url = options.get("listen_url")
        if listen_url is not None and (
            not isinstance(listen_url, str) or not listen_url.startswith(POSTGRES_SCHEMES)
        ):
            raise InvalidArgumentType(
                f"listen_url must be a postgresql:// URL (a direct connection for LISTEN), "
                f"got {type(listen_url).__name__}: {redact_target(listen_url)}"
            )
        return cls(
            schema=schema,
            pool_size=validation.integer(options.get("pool_size", 8), "pool_size", minimum=1),
            poll_only=bool(options.get("poll_only", False)),
            connect_timeout=validation.seconds(
                options.get("connect_timeout", 5.0), "connect_timeout", positive=True
            ),
            lock_timeout=validation.seconds(
                options.get("lock_timeout", 5.0), "lock_timeout", positive=True
            ),
            notify_debounce=validation.seconds(
                options.get("notify_debounce", 0.005), "notify_debounce"
            ),
            retry_timeout=retry_timeout,
            pooler=None if pooler == "session" else pooler,
            listen_url=listen_url,
        )

    @property
    def transaction_pooled(self) -> bool:
        """True behind a pooler in transaction mode: no session state, no prepared
        statements, no LISTEN through it."""
        return self.pooler == "transaction"

    @property
    def listens(self) -> bool:
        """True when workers are woken by LISTEN (else they poll): not ``poll_only``, and
        behind a transaction pooler only with a direct ``listen_url``."""
        if self.poll_only:
            return False
        return not self.transaction_pooled or self.listen_url is not None


def url_options(url: str) -> tuple[str, dict[str, str]]:
    """The URL without the queue's own query parameters (libpq does not know them), and
    those it names (``schema``, ``pooler``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in URL_OPTIONS}
    if not ours:
        return url, {}
    rest = urlencode([(key, value) for key, value in query if key not in URL_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), ours


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without the queue's own query parameters, and the schema it names (None if
    it names none)."""
    plain, ours = url_options(url)
    return plain, ours.get("schema")


def with_url_options(
    url: str, options: dict[str, Any], error: type[SqliteJobQError] = SqliteJobQError
) -> tuple[str, dict[str, Any]]:
    """The URL without the queue's own query parameters, and the queue's options with those
    it names added; a clash between the two is refused."""
    plain, named = url_options(url)
    merged = dict(options)
    for key, value in named.items():
        if merged.get(key, value) != value:
            raise error(f"the URL names {key} {value!r} and the options {merged[key]!r}")
        merged[key] = value
    return plain, merged


def redact(url: str) -> str:
    """The URL without its credentials, for messages and ``Queue.target``."""
    return redact_target(url)


def is_transient(exc: BaseException) -> bool:
    """True for a fault that passes: retry the whole transaction."""
    if isinstance(exc, _CommitUnknown):
        return False
    if isinstance(exc, _ConnectFailed):
        return not exc.refused
    if isinstance(exc, PoolTimeout):
        return True
    state = _sqlstate(exc)
    if state in _RETRY_STATES or (state or "").startswith("08"):  # connection exceptions
        return True
    # a connection that broke (server restart, pg_terminate_backend) has no SQLSTATE
    return isinstance(exc, psycopg.OperationalError) and state is None


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


class _CommitUnknown(psycopg.OperationalError):
    """The connection broke while the commit was in flight: it may or may not have happened."""


#: What a server (or pooler) says when it refuses a connection for good, and what to do.
_REFUSALS = (
    (re.compile(r'database "[^"]*" does not exist'),
     "create that database, or fix the database name in the URL"),
    (re.compile(r'role "[^"]*" does not exist|no such user'),
     "create that role, or fix the user name in the URL"),
    (re.compile(r"password authentication failed|authentication failed|password"),
     "check the user name and password"),
    (re.compile(r"pg_hba\.conf"),
     "allow this host, user and database in the server's pg_hba.conf"),
    (re.compile(r"unsupported startup parameter"),
     "the URL goes through a pooler that refuses a parameter of the URL; remove it"),
    (re.compile(r"not permitted to log in|permission denied"),
     "grant the role LOGIN and CONNECT on the database"),
    (re.compile(r"SSL|certificate", re.IGNORECASE),
     "check the URL's sslmode and the server's certificate"),
)  # fmt: skip
#: What libpq itself says when the URL cannot log in whatever the server does.
_REFUSED_BY_CLIENT = re.compile(r"no password supplied|password retrieved from file .* failed")
#: FATAL errors at connect time that pass: the server is starting, stopping or full.
_BUSY_AT_CONNECT = re.compile(
    r"starting up|shutting down|in recovery mode|too many (connections|clients)|"
    r"remaining connection slots|no more connections allowed|cannot connect now|"
    r"server login has been failing|pgbouncer cannot connect|server conn crashed|"
    r"query_wait_timeout|client_login_timeout",
    re.IGNORECASE,
)


class _ConnectFailed(psycopg.OperationalError):
    """No connection could be opened; ``refused`` when the server answered with a refusal
    that will not pass by itself (no such database or role, authentication, a parameter)."""

    def __init__(self, cause: BaseException) -> None:
        self.reason = _first_line(cause, fatal=True)
        super().__init__(self.reason)
        text = str(cause)
        refused_here = _REFUSED_BY_CLIENT.search(text) is not None
        self.refused = refused_here or ("FATAL" in text and not _BUSY_AT_CONNECT.search(text))

    def advice(self) -> str:
        """What to do about a refusal."""
        for pattern, advice in _REFUSALS:
            if pattern.search(self.reason):
                return advice
        return "check the URL and the server's log"


class _NoConnection(psycopg.OperationalError):
    """No connection of the pool was free within the wait, though none failed to open:
    every one was in use (``exhausted``), or a new one was not ready yet (the server, or a
    pooler before it, was slow to answer)."""

    def __init__(self, pool: ConnectionPool) -> None:
        stats = pool.get_stats()
        self.exhausted = stats.get("pool_size", 0) >= pool.max_size
        if self.exhausted:
            text = (
                f"all {pool.max_size} connections of this process's pool were in use "
                f"(raise pool_size, or run fewer threads)"
            )
        else:
            text = (
                "a new connection was not ready in time: the server, or a pooler before "
                "it, did not answer (a pooler in session mode makes clients wait while "
                "every server connection is taken)"
            )
        super().__init__(text)


def _first_line(exc: BaseException, fatal: bool = False) -> str:
    """The useful line of a psycopg error: the server's FATAL message if there is one."""
    text = " ".join(str(exc).split()) if fatal else str(exc).strip()
    if fatal and "FATAL:" in text:
        return text[text.index("FATAL:") + 6 :].strip()
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__


def server_error(exc: BaseException, target: str, what: str) -> SqliteJobQError:
    """The library error, with what to do about it, for an error psycopg raised."""
    if isinstance(exc, SqliteJobQError):
        return exc
    state = _sqlstate(exc) or ""
    text = _first_line(exc)
    if isinstance(exc, _CommitUnknown):
        return DatabaseUnavailable(
            f"{what}: the connection to {target} broke while the commit was in flight, so it "
            f"may or may not have been applied ({text}); look for its result before doing it "
            f"again (an enqueue given a unique_key can simply be sent again: it returns the "
            f"job already there)"
        )
    if isinstance(exc, _ConnectFailed):
        if exc.refused:
            return DatabaseUnavailable(
                f"{what}: the PostgreSQL server at {target} refused the connection: "
                f"{exc.reason}; {exc.advice()}"
            )
        return DatabaseUnavailable(
            f"{what}: cannot reach the PostgreSQL server at {target} ({exc.reason}); check "
            f"that it runs and accepts connections, and the URL"
        )
    if isinstance(exc, PoolTimeout) or (isinstance(exc, psycopg.OperationalError) and not state):
        return DatabaseUnavailable(
            f"{what}: cannot reach the PostgreSQL server at {target} ({text}); check that it "
            f"runs and accepts connections, and the URL"
        )
    if state in _PREPARED_STATES:
        return StorageError(
            f"{what} failed on {target}: {text}. The URL goes through a pooler in transaction "
            f"mode (PgBouncer's pool_mode=transaction, a PaaS pooler): add ?pooler=transaction "
            f"to the URL (or pooler='transaction') so that no statement is prepared on the "
            f"server and no session setting is relied on"
        )
    if state == "53100":
        return DiskFull(
            f"{what}: disk full on the PostgreSQL server of {target} ({text}); nothing of this "
            f"write was stored. Free space and try again"
        )
    if state == "25006":
        return ReadOnlyDatabase(
            f"{what}: the PostgreSQL server of {target} is read-only ({text}); point at the "
            f"primary, not a standby"
        )
    if state in ("22021", "22P05", "54000"):  # bad encoding, untranslatable, too long
        return PayloadError(f"{what}: the server refused the text ({text})")
    if state.startswith("28") or state == "3D000":  # auth failed, no such database
        return DatabaseUnavailable(f"{what}: the server of {target} refused us ({text})")
    if state == "42P01" and "sqlitejobq_" in text:
        return StorageError(
            f"{what} failed on {target}: {text}. The queue's tables are gone from its schema, "
            f"or the URL goes through a pooler in transaction mode: then add "
            f"?pooler=transaction to the URL"
        )
    return StorageError(f"{what} failed on {target}: {text}")


def retry_policy(timeout: float, metrics: LockMetrics, target: str) -> RetryPolicy:
    """The PostgreSQL retry policy: serialization failures, deadlocks, lock timeouts and
    lost connections are retried, as a whole transaction, within ``timeout``."""
    return RetryPolicy(
        timeout,
        metrics,
        transient=is_transient,
        translate=lambda exc, what: server_error(exc, target, what),
        engine_errors=(psycopg.Error, PoolTimeout),
        exhausted="the database stayed busy (lock waits, conflicts or a lost connection)",
        unreachable=_unreachable,
    )


def _unreachable(exc: BaseException) -> bool:
    """No connection could be had: the server is down or refuses us."""
    if isinstance(exc, _NoConnection):
        return not exc.exhausted
    if isinstance(exc, PoolTimeout | _ConnectFailed):
        return True
    return isinstance(exc, psycopg.OperationalError) and not _sqlstate(exc)


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def session_settings(schema: str, lock_wait: float | None, *, local: bool) -> pgsql.Composed:
    """``SELECT set_config(...)`` of the queue's schema and, if given, its lock wait: for a
    session (``local`` false) or the open transaction. Values as literals: the statement is
    sent with ``BEGIN`` in one round trip, by the simple protocol, never prepared."""
    pairs = [("search_path", pgsql.Identifier(schema).as_string(None))]
    if lock_wait is not None:
        pairs.append(("lock_timeout", str(_milliseconds(lock_wait))))
    calls = (
        pgsql.SQL("set_config({}, {}, {})").format(
            pgsql.Literal(name), pgsql.Literal(value), pgsql.Literal(local)
        )
        for name, value in pairs
    )
    return pgsql.SQL("SELECT {}").format(pgsql.SQL(", ").join(calls))


def connect_kwargs(settings: PgSettings, application_name: str = "sqlitejobq") -> dict[str, Any]:
    """How every connection of a queue is opened: autocommit, no startup ``options``
    (poolers refuse them), no prepared statements behind a transaction pooler."""
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": max(1, round(settings.connect_timeout)),
        "application_name": application_name,
    }
    if settings.transaction_pooled:
        kwargs["prepare_threshold"] = None
    return kwargs


def open_connection(
    url: str, settings: PgSettings, application_name: str = "sqlitejobq"
) -> psycopg.Connection[Any]:
    """One connection of the queue's own, outside the pool (a migrator's, a copy's): its
    session settings set unless a transaction pooler would drop them (then each
    transaction sets them)."""
    try:
        conn = psycopg.connect(url, **connect_kwargs(settings, application_name))
    except psycopg.OperationalError as exc:
        raise _ConnectFailed(exc) from exc
    if not settings.transaction_pooled:
        conn.execute(session_settings(settings.schema, None, local=False), prepare=False)
    return conn


class Connections:
    """This process's pool of connections to one database, opened on first use and again
    after a fork (a child never touches its parent's connections, not even to close them)."""

    def __init__(self, url: str, settings: PgSettings, metrics: LockMetrics) -> None:
        self.url = url
        self.target = redact(url)
        self.settings = settings
        self.metrics = metrics
        self.retry = retry_policy(settings.retry_timeout, metrics, self.target)
        #: The session's lock wait: never longer than the retry bound.
        self.lock_wait = min(settings.lock_timeout, settings.retry_timeout)
        #: Why the last attempt to open a connection failed (None once one opens).
        self.connect_error: psycopg.Error | None = None
        self._pool: ConnectionPool | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def connect_kwargs(self) -> dict[str, Any]:
        """How every connection of the queue is opened (autocommit, timeouts)."""
        return connect_kwargs(self.settings)

    def pool(self) -> ConnectionPool:
        """The pool of this process."""
        if self._closed:
            raise QueueClosed(f"the queue on {self.target} is closed")
        if self._pool is not None and self._pid == os.getpid():
            return self._pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                if self._pool is not None:
                    _inherited.append(self._pool)  # the parent's: never closed here
                self._pid = os.getpid()
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.settings.pool_size,
                    kwargs=self.connect_kwargs(),
                    connection_class=self._connection_class(),
                    configure=self._configure,
                    open=True,
                    timeout=self.settings.retry_timeout,
                    name="sqlitejobq",
                )
            return self._pool

    def _connection_class(self) -> type[psycopg.Connection[Any]]:
        """psycopg's connection, keeping why an attempt to open one failed: the pool only
        logs it, and a caller told "no connection within the bound" needs the reason."""
        owner = self

        class Connection(psycopg.Connection[Any]):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
                try:
                    conn = super().connect(conninfo, **kwargs)
                except psycopg.OperationalError as exc:
                    owner.connect_error = exc
                    raise
                owner.connect_error = None
                return conn

        return Connection

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """A new connection's session settings (a transaction pooler keeps none: then each
        transaction sets its own). A failure is kept as the reason no connection opens."""
        if self.settings.transaction_pooled:
            return
        try:
            conn.execute(
                session_settings(self.settings.schema, self.lock_wait, local=False),
                prepare=False,
            )
        except psycopg.Error as exc:
            self.connect_error = exc
            raise

    @contextmanager
    def connection(self, deadline: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool for the time of a block, waited for until ``deadline``
        (monotonic) at most."""
        pool = self.pool()
        conn = self._lend(pool, deadline)
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def _lend(self, pool: ConnectionPool, deadline: float | None) -> psycopg.Connection[Any]:
        """A live connection of the pool. One the server ended while it was idle is
        dropped (no round trip: its FATAL message or end of file waits on the socket), so
        that nothing is sent on it. A wait is at most a second long, so that a refusal
        (no such database, say) is reported at once, with the server's reason."""
        started = time.perf_counter()
        for _ in range(self.settings.pool_size + 1):
            left = self.settings.retry_timeout if deadline is None else deadline - time.monotonic()
            try:
                conn = pool.getconn(timeout=min(1.0, max(0.05, left)))
            except PoolTimeout as exc:
                if self.connect_error is not None:
                    raise _ConnectFailed(self.connect_error) from exc
                raise _NoConnection(pool) from exc
            if not _ended_while_idle(conn):
                self.metrics.record_write(time.perf_counter() - started)
                return conn
            conn.close()
            pool.putconn(conn)  # a closed connection is replaced, not lent again
        raise psycopg.OperationalError("every pooled connection had been ended by the server")

    def _lock_wait(self, deadline: float) -> float | None:
        """The lock wait to set for this transaction: what is left of the bound when that
        is less than the session's (a retry near the bound waits less), always behind a
        transaction pooler (no session keeps it); None when the session's stands."""
        left = max(0.001, deadline - time.monotonic())
        if self.settings.transaction_pooled:
            return min(self.lock_wait, left)
        return left if left < self.lock_wait - 0.1 else None

    def _begin(self, conn: psycopg.Connection[Any], deadline: float) -> None:
        """Open a transaction, with its settings in the same round trip when it needs any."""
        wait = self._lock_wait(deadline)
        if wait is None:
            conn.execute(b"BEGIN", prepare=False)
            return
        settings = session_settings(self.settings.schema, wait, local=True)
        conn.execute(pgsql.SQL("BEGIN; {}").format(settings), prepare=False)

    @staticmethod
    def _abandon(conn: psycopg.Connection[Any]) -> None:
        """Roll back what a failed attempt left open (a broken connection has nothing)."""
        if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):  # the pool drops one it cannot reset
                conn.execute(b"ROLLBACK", prepare=False)

    def write(self, body: Callable[[psycopg.Connection[Any]], T], what: str = "write") -> T:
        """Run ``body`` in one transaction, retried as a whole while the fault passes."""
        deadline = time.monotonic() + self.settings.retry_timeout

        def attempt() -> T:
            with self.connection(deadline) as conn:
                try:
                    self._begin(conn, deadline)
                    result = body(conn)
                except BaseException:
                    self._abandon(conn)
                    raise
                self._commit(conn)
                return result

        return self.retry(attempt, what)

    @staticmethod
    def _commit(conn: psycopg.Connection[Any]) -> None:
        """Commit; a connection that breaks while the commit is in flight leaves it unknown."""
        try:
            conn.execute(b"COMMIT", prepare=False)
        except psycopg.OperationalError as exc:
            if _commit_unknown(conn, exc):
                raise _CommitUnknown(str(exc)) from exc
            raise

    def write_statement(
        self, statement: Any, params: dict[str, Any], what: str = "write"
    ) -> list[Any]:
        """Run one statement as its own transaction (one round trip) and return its rows,
        retried while the fault passes."""
        deadline = time.monotonic() + self.settings.retry_timeout

        def attempt() -> list[Any]:
            with self.connection(deadline) as conn:
                wait = self._lock_wait(deadline)
                try:
                    if wait is None:
                        return conn.execute(statement, params).fetchall()
                    # the settings and the statement in one pipeline: one implicit
                    # transaction, committed by its Sync, one round trip
                    with conn.pipeline():
                        conn.execute(
                            session_settings(self.settings.schema, wait, local=True),
                            prepare=False,
                        )
                        cursor = conn.execute(statement, params)
                    return cursor.fetchall()
                except psycopg.OperationalError as exc:
                    if _commit_unknown(conn, exc):
                        raise _CommitUnknown(str(exc)) from exc
                    self._abandon(conn)
                    raise
                except BaseException:
                    self._abandon(conn)
                    raise

        return self.retry(attempt, what)

    def read(self, body: Callable[[psycopg.Connection[Any]], T], what: str = "read") -> T:
        """Run reads on one connection: in autocommit (each statement its own snapshot), or
        in a transaction when it must carry settings (a transaction pooler, a retry near
        the bound)."""
        deadline = time.monotonic() + self.settings.retry_timeout

        def attempt() -> T:
            with self.connection(deadline) as conn:
                if self._lock_wait(deadline) is None:
                    return body(conn)
                try:
                    self._begin(conn, deadline)
                    result = body(conn)
                    conn.execute(b"COMMIT", prepare=False)  # a read: nothing to lose
                except BaseException:
                    self._abandon(conn)
                    raise
                return result

        return self.retry(attempt, what)

    def read_one(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        """One row of one statement, or None."""
        return self.read(lambda conn: conn.execute(statement, params).fetchone())

    def read_all(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Every row of one statement."""
        return self.read(lambda conn: conn.execute(statement, params).fetchall())

    def close(self) -> None:
        """Close this process's pool (never a parent's)."""
        self._closed = True
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None


def _commit_unknown(conn: psycopg.Connection[Any], exc: BaseException) -> bool:
    """True when a connection broke while a commit was in flight with no word from the
    server: the commit may have happened. A server that reports an error (a SQLSTATE: say
    57P01, terminated by an administrator) sends it in place of the command's success, so
    the transaction was rolled back; after a commit that went through (and a synchronous
    standby's wait cut short) it sends nothing more."""
    return conn.broken and _sqlstate(exc) is None


def _ended_while_idle(conn: psycopg.Connection[Any]) -> bool:
    """True for a pooled connection that cannot be used: closed, broken, or ended by the
    server while idle (a restart, ``pg_terminate_backend``, an idle timeout), which leaves
    a FATAL message or end of file to read where an idle connection has nothing."""
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()
    except AttributeError:  # no poll() (Windows): select() takes any socket there
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


_inherited: list[Any] = []  # pools a forked child must never use nor close


_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|START|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|PREPARE|ABORT)\b", re.IGNORECASE
)
# what a scan for statements skips: comments, quoted strings and names, dollar-quoted bodies
_NOT_CODE = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$(?:[A-Za-z_]\w*)?\$).*?\1",
    re.DOTALL,
)
_BEGIN_ATOMIC = re.compile(r"\bBEGIN\s+ATOMIC\b", re.IGNORECASE)


def transaction_control(text: str) -> str | None:
    """The keyword of the first statement of ``text`` that opens, ends or leaves a
    transaction, or None. Statements sent together run in the open transaction, and a
    COMMIT among them would commit it half done."""
    atomic = False
    for statement in _NOT_CODE.sub(" ", text).split(";"):
        if atomic:  # the body of a BEGIN ATOMIC function, up to its END
            atomic = statement.strip().upper() != "END"
            continue
        atomic = bool(_BEGIN_ATOMIC.search(statement))
        match = _TRANSACTION_CONTROL.match(statement)
        if match:
            return match.group(1).upper()
    return None


class TransactionConnection(LentConnection):
    """A PostgreSQL connection lent to code running inside sqlitejobq's transaction (a
    migration, an on_complete hook): it can read and write, but not end the transaction.

    ``execute`` takes psycopg's placeholders (``%s``, ``%(name)s``); ``commit``,
    ``rollback`` and statements that open or end a transaction are refused. Everything else
    is the psycopg connection's.
    """

    #: The SQL dialect, for code that serves more than one engine.
    dialect = "postgres"

    _conn: psycopg.Connection[Any]

    def execute(self, statement: Any, parameters: Any = None, /) -> psycopg.Cursor[Any]:
        """Run one statement inside the transaction; transaction control is refused."""
        self._refuse_transaction_control(statement)
        return self._conn.execute(statement, parameters)

    def executemany(self, statement: Any, parameters: Any, /) -> None:
        """Run one statement per parameter set inside the transaction (as on SQLite)."""
        self._refuse_transaction_control(statement)
        with self._conn.cursor() as cursor:
            cursor.executemany(statement, parameters)

    def _refuse_transaction_control(self, statement: Any) -> None:
        keyword = transaction_control(statement) if isinstance(statement, str) else None
        if keyword:
            raise self._error(
                f"{keyword} is not allowed in {self._owner}: it already runs in a "
                f"transaction of its own"
            )

    def executescript(self, script: str, /) -> None:
        """Run several statements in one go, inside the transaction."""
        self.execute(script)

    def column_names(self, table: str) -> list[str]:
        """The columns of ``table`` in the queue's schema (empty if there is no such table)."""
        rows = self._conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [row[0] for row in rows]

    def index_exists(self, name: str) -> bool:
        """True if an index of that name exists in the queue's schema."""
        row = self._conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
            (name,),
        ).fetchone()
        return row is not None


def database_now(conn: psycopg.Connection[Any]) -> float:
    """The server's clock."""
    return float(conn.execute(sql.DB_NOW).fetchone()[0])  # type: ignore[index]
