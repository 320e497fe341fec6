"""PostgreSQL through PgBouncer, in session and in transaction pooling, as managed
PostgreSQL is usually reached: the queue opens and migrates through it, enqueues past the
point where statements would be prepared, worker processes drain it exactly, the queue's
schema and lock wait hold, and none of its session settings is left on the pooler's
server connections. A transaction pooler the queue was not told of is named in the error.

Each test runs against a real PgBouncer started for it (``tests/pgbouncer.py``) in front
of the session's PostgreSQL server.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlitejobq import DatabaseBusy, JobStatus, Queue, SqliteJobQError

from ..pgbouncer import PgBouncer
from . import apps
from .conftest import PostgresEngine, finish, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.engines("postgres")]

MODES = ("session", "transaction")


@pytest.fixture(scope="module", params=MODES)
def bouncer(request: pytest.FixtureRequest, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[PgBouncer]:  # fmt: skip
    directory = Path(f"/tmp/sqjq-pgb-{request.param}-{id(request)}")
    # a session pooler gives each client connection a server connection of its own for its
    # life: enough of them for the test's queue and two worker processes
    pool_size = 40 if request.param == "session" else 4
    running = PgBouncer.start(pg_dsn, request.param, directory, pool_size)
    try:
        yield running
    finally:
        running.stop()
        with contextlib.suppress(OSError):
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()


class BouncedEngine(PostgresEngine):
    """A schema of its own, reached through PgBouncer (plain SQL goes to the server)."""

    def __init__(self, tmp_path: Path, dsn: str, bouncer: PgBouncer, told: bool = True) -> None:
        super().__init__(tmp_path, dsn)
        pooler = "&pooler=transaction" if told and bouncer.mode == "transaction" else ""
        self.target = f"{bouncer.url()}?schema={self.schema}{pooler}"


@pytest.fixture
def engine(bouncer: PgBouncer, pg_dsn: str, tmp_path: Path) -> Iterator[BouncedEngine]:
    chosen = BouncedEngine(tmp_path, pg_dsn, bouncer)
    try:
        yield chosen
    finally:
        chosen.close()


def test_a_queue_through_pgbouncer_migrates_enqueues_and_drains_exactly(
    engine: BouncedEngine,
) -> None:
    queue = engine.open()
    errors: list[BaseException] = []

    def enqueue_singly(n: int) -> None:
        try:
            for _ in range(n):  # well past psycopg's threshold for preparing a statement
                queue.enqueue("sleep", {"seconds": 0})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueue_singly, args=(60,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    many = queue.enqueue_many("sleep", [{"seconds": 0}] * 100)
    batch = queue.enqueue_batch("sleep", [{"seconds": 0}] * 20)
    keyed = queue.enqueue("sleep", {"seconds": 0}, unique_key="k")
    assert queue.enqueue("sleep", {"seconds": 0}, unique_key="k") == keyed
    last = queue.enqueue("sleep", {"seconds": 0}, depends_on=[keyed, many[0]])
    total = 240 + 100 + 20 + 2
    assert queue.stats().total() == total

    workers = [engine.worker("--concurrency", "4", "--lease", "30", "--burst") for _ in range(2)]
    outputs = [finish(process, 180) for process in workers]
    assert queue.stats().by_status["completed"] == total, outputs
    assert all(process.returncode == 0 for process in workers), outputs
    assert not any("Traceback" in output for output in outputs), outputs
    runs = engine.runs()
    assert len(runs) == total and set(runs.values()) == {1}, "a job ran twice or never"
    assert queue.batch_progress(batch.id).completed == 20
    assert queue.get(last).status is JobStatus.COMPLETED
    # the tables are in the URL's schema, whatever search_path the pooler's servers have
    assert engine.execute("SELECT count(*) FROM sqlitejobq_jobs") == [(total,)]
    queue.close()


def test_the_lock_wait_stays_bounded_through_pgbouncer(engine: BouncedEngine) -> None:
    # the queue's lock_timeout reaches the server without startup options: a write that
    # waits for a lock held 8 s gives up after retry_timeout, not when the lock goes
    queue = engine.open(retry_timeout=1.0)
    queue.enqueue("sleep", {"seconds": 0})
    with engine.writes_blocked(8.0):
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match="for more than 1s"):
            queue.enqueue("sleep", {"seconds": 0})
        waited = time.monotonic() - started
    assert waited < 6.0, f"the write waited {waited:.1f}s for the lock: lock_timeout was lost"
    assert queue.stats().total() == 1
    queue.close()


def test_no_session_setting_of_the_queue_stays_on_the_poolers_connections(
    engine: BouncedEngine, bouncer: PgBouncer
) -> None:
    import psycopg

    queue = engine.open(lock_timeout=3.0)
    queue.enqueue_many("sleep", [{"seconds": 0}] * 10)
    assert queue.stats().total() == 10
    if bouncer.mode == "session":
        queue.close()  # a session pooler resets a server connection when its client leaves
    # every server connection of the pool at once (each held by an open transaction)
    clients = [psycopg.connect(bouncer.url(), autocommit=True) for _ in range(bouncer.pool_size)]
    try:
        seen = set()
        for client in clients:
            client.execute("BEGIN")
            row = client.execute(
                "SELECT pg_backend_pid(), current_setting('search_path'), "
                "current_setting('lock_timeout')"
            ).fetchone()
            assert row is not None
            seen.add(row[0])
            assert row[1:] == ('"$user", public', "0"), f"a setting of the queue stayed: {row}"
        assert len(seen) == bouncer.pool_size
    finally:
        for client in clients:
            client.close()
    queue.close()


def test_workers_through_pgbouncer_are_woken_by_listen_where_it_works(
    engine: BouncedEngine, bouncer: PgBouncer, pg_dsn: str
) -> None:
    queue = engine.open()
    if bouncer.mode == "session":
        assert queue.capabilities.listener  # LISTEN keeps its session through the pooler
    else:
        assert not queue.capabilities.listener  # nothing listens through it: workers poll
        queue.close()
        # a direct connection for LISTEN (outside the pooler) gives the wake-ups back
        queue = engine.open(listen_url=pg_dsn)
        assert queue.capabilities.listener
    waker = queue.backend.waker
    listening = threading.Event()
    waker.listen(listening)
    try:
        wait_until(lambda: waker.watching, 30, "the LISTEN connection")
        listening.clear()
        # an enqueue from another process reaches this one's listener
        other = engine.cli("enqueue", "sleep", '{"seconds": 0}')
        assert other.returncode == 0, other.stderr
        assert listening.wait(30), "no wake-up reached the listener"
    finally:
        waker.listen(listening, active=False)
    worker = engine.worker("--concurrency", "2", "--burst")
    output = finish(worker, 120)
    assert worker.returncode == 0, output
    assert queue.stats().by_status["completed"] == 1
    queue.close()


def test_a_transaction_pooler_the_queue_was_not_told_of_is_named_in_the_error(
    pg_dsn: str, tmp_path: Path
) -> None:
    # one server connection behind the pooler: two client connections that each prepare
    # their statements clash on it, and the error says what to change
    bouncer = PgBouncer.start(pg_dsn, "transaction", Path(f"/tmp/sqjq-pgb-one-{id(tmp_path)}"),
                              pool_size=1)  # fmt: skip
    engine = BouncedEngine(tmp_path, pg_dsn, bouncer, told=False)
    try:
        queue = engine.open(pool_size=4)
        errors: list[BaseException] = []

        def enqueue() -> None:
            with contextlib.suppress(SqliteJobQError):
                for _ in range(40):
                    try:
                        queue.enqueue("sleep", {"seconds": 0})
                    except SqliteJobQError as exc:
                        errors.append(exc)
                        raise

        threads = [threading.Thread(target=enqueue) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors, "no clash: the pooler kept each client on its own server connection"
        assert all("?pooler=transaction" in str(exc) for exc in errors), errors
        queue.close()
    finally:
        engine.close()
        bouncer.stop()


def test_a_pgbouncer_that_goes_away_gives_a_clear_error_within_the_bound(
    pg_dsn: str, tmp_path: Path
) -> None:
    bouncer = PgBouncer.start(pg_dsn, "transaction", Path(f"/tmp/sqjq-pgb-gone-{id(tmp_path)}"))
    engine = BouncedEngine(tmp_path, pg_dsn, bouncer)
    try:
        queue = engine.open(retry_timeout=2.0)
        queue.enqueue("sleep", {"seconds": 0})
        bouncer.stop()
        started = time.monotonic()
        with pytest.raises(SqliteJobQError, match="cannot reach the PostgreSQL server"):
            queue.enqueue("sleep", {"seconds": 0})
        assert time.monotonic() - started < 15  # the bound, not a hang
        assert engine.execute("SELECT count(*) FROM sqlitejobq_jobs") == [(1,)]
        queue.close()
    finally:
        engine.close()
        bouncer.stop()


def test_apps_enqueue_through_pgbouncer_in_their_own_transaction(engine: BouncedEngine) -> None:
    # the caller's transaction on a pooled connection: the job commits with it or not at all
    import psycopg

    from sqlitejobq.backends.postgres.connection import url_options

    queue = engine.open()
    plain, _ = url_options(engine.target)
    with psycopg.connect(plain, prepare_threshold=None) as conn:
        with conn.transaction():
            kept = queue.enqueue("sleep", {"seconds": 0}, connection=conn)
        with contextlib.suppress(RuntimeError), conn.transaction():
            queue.enqueue("sleep", {"seconds": 0}, connection=conn)
            raise RuntimeError("the caller rolls back")
    assert [job.id for job in queue.jobs()] == [kept]
    assert collections.Counter(job.status for job in queue.jobs()) == {JobStatus.QUEUED: 1}
    queue.close()


def test_queue_options_and_url_agree_on_the_pooler(engine: BouncedEngine) -> None:
    with pytest.raises(SqliteJobQError, match="pooler must be"):
        Queue(engine.target.split("&pooler")[0], pooler="statement", registry=apps.registry)
    if "pooler=transaction" in engine.target:
        with pytest.raises(SqliteJobQError, match="the URL names pooler"):
            Queue(engine.target, pooler="session", registry=apps.registry)
