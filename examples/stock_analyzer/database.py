"""The app's side of the queue's database: reads and writes on connections of its own, and
the queue that a handler reads and enqueues through.

A handler is given its job, not its queue, so the two handlers that need the queue (the
batch summary and the daily refresh) find it here, by the worker that claimed the job
(``job.worker``): the queue of a worker made with ``app_worker`` in this process (the
script's, the API's), or, in a worker started apart (``sqlitejobq worker``), a queue
opened for the call on the database named by ``$SQLITEJOBQ_DB`` (``sqlitejobq worker``
sets it to its ``--db``).
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from typing import Any

from sqlitejobq import Job, Queue, Registry, Worker
from sqlitejobq.backends import is_postgres_target
from sqlitejobq.cli import DB_ENV

from .schema import migrate_app

#: How long an app transaction on SQLite waits for the write lock (the workers' writes are
#: short; a wait this long means something holds the lock for good).
SQLITE_LOCK_WAIT = 30.0

#: The queue of each worker made by ``app_worker``, by worker id (gone with the queue).
_queue_of_worker: weakref.WeakValueDictionary[str, AppQueue] = weakref.WeakValueDictionary()


class AppQueue(Queue):
    """The app's job queue: it keeps the database string it was opened with, because
    ``target`` hides the password of a URL and the app's reads connect on their own."""

    def __init__(self, db: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(db, **options)
        self.database = os.fspath(db)


def open_app_queue(db: str | os.PathLike[str], registry: Registry) -> AppQueue:
    """The queue on ``db``, running ``registry``, with the app's tables brought up to date."""
    queue = AppQueue(db, registry=registry)
    try:
        migrate_app(queue.database)
    except BaseException:
        queue.close()
        raise
    return queue


def app_worker(queue: AppQueue, **options: Any) -> Worker:
    """A worker on ``queue`` (``options`` as for ``Worker``) whose handlers can reach the
    queue through ``handler_queue``."""
    worker = Worker(queue, **options)
    _queue_of_worker[worker.id] = queue
    return worker


@contextmanager
def handler_queue(job: Job, registry: Registry) -> Iterator[AppQueue]:
    """The queue ``job`` came from, for its handler: its worker's (``app_worker``), or one
    opened for the call on ``$SQLITEJOBQ_DB`` (a worker started apart)."""
    own = None if job.worker is None else _queue_of_worker.get(job.worker)
    if own is not None:
        yield own
        return
    database = os.environ.get(DB_ENV)
    if not database:
        raise RuntimeError(
            f"no database for job {job.id} {job.task}: run it with `sqlitejobq worker --db ...` "
            f"(which sets ${DB_ENV}), set ${DB_ENV}, or make worker {job.worker!r} with "
            f"app_worker()"
        )
    queue = open_app_queue(database, registry)
    try:
        yield queue
    finally:
        queue.close()


def read_rows(queue: Queue, queries: Mapping[str, str], params: Sequence[Any]) -> list[Any]:
    """The rows of one query (given in each engine's SQL) on the queue's database, on a
    connection of its own. It blocks: asyncio code runs it in a thread (``to_thread``)."""
    database = _database(queue)
    if not is_postgres_target(database):
        with closing(sqlite3.connect(database)) as conn:
            return conn.execute(queries["sqlite"], params).fetchall()
    with _pg_connect(database) as conn:
        rows: list[Any] = conn.execute(queries["postgres"], params).fetchall()
        return rows


@contextmanager
def app_transaction(queue: Queue) -> Iterator[tuple[Any, str]]:
    """A write transaction on the queue's database, on a connection of its own: yields
    (connection, dialect); commits when the block ends, rolls back if it raises.

    The connection is what ``enqueue(..., connection=)`` takes, so jobs and the app's rows
    written in the block commit together or not at all.
    """
    database = _database(queue)
    if is_postgres_target(database):
        with _pg_connect(database) as pg, pg.transaction():
            yield pg, "postgres"
        return
    with closing(sqlite3.connect(database, timeout=SQLITE_LOCK_WAIT,
                                 isolation_level=None)) as conn:  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: nothing later waits for it
        try:
            yield conn, "sqlite"
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _database(queue: Queue) -> str:
    return queue.database if isinstance(queue, AppQueue) else queue.target


def _pg_connect(database: str) -> Any:
    """A psycopg connection (autocommit) whose search path is the URL's schema."""
    import psycopg  # only a URL needs the driver (the postgres extra)

    from sqlitejobq.backends.postgres.connection import split_schema

    url, schema = split_schema(database)
    return psycopg.connect(url, autocommit=True, connect_timeout=5,
                           options=f"-c search_path={schema or 'public'}")  # fmt: skip
