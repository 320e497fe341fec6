"""The PostgreSQL backend itself, on a real server with real processes: many workers without
deadlocks and with exact counts, concurrent migrations, schemas as separate queues, the
caller's transaction and its wake-up, SKIP LOCKED claims, the database's clock, and what a
missing driver says. (The behaviours both engines share are in the contract suite.)"""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from sqlitejobq import (
    InvalidArgument,
    JobNotFound,
    JobStatus,
    MigrationError,
    Queue,
    SqliteJobQError,
    Worker,
)
from sqlitejobq.backends.postgres import schema as library
from sqlitejobq.backends.postgres.queries import channel_name
from sqlitejobq.migrations import Migration, applied_migrations, migrate

from .conftest import ROOT, Database, PgServer, with_schema

pytestmark = pytest.mark.timeout(300)

APP = "tests.integration.apps:registry"
LOCK_ERRORS = ("deadlock", "40P01", "DatabaseBusy", "Traceback")


@pytest.fixture
def engine() -> str:
    """Every test here is about the PostgreSQL engine itself."""
    return "postgres"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def start_worker(target: str, run_log: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SQLITEJOBQ_TEST_LOG": str(run_log), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", target, "--app", APP,
         "--log-level", "INFO", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def runs(run_log: Path) -> collections.Counter[tuple[int, int]]:
    """How many times each (job, attempt) ran, from the handlers' log."""
    if not run_log.exists():
        return collections.Counter()
    lines = run_log.read_text().splitlines()
    return collections.Counter((int(line.split()[0]), int(line.split()[1])) for line in lines)


def deadlocks_so_far(database: Database) -> int:
    """Deadlocks the server detected in the test's database so far."""
    query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    return int(database.value(query))


def db_now(database: Database) -> float:
    return float(database.value("SELECT extract(epoch FROM clock_timestamp())::float8"))


# --- (a) eight worker processes, several queues and batches ------------------------------------

QUEUES = ("alpha", "beta", "gamma", "delta")


def test_eight_worker_processes_drain_2000_jobs_without_deadlock_and_the_counts_match(
    queue: Queue, target: str, database: Database, tmp_path: Path
) -> None:
    run_log = tmp_path / "runs.log"
    batches = [
        queue.enqueue_batch(
            "flaky",
            [{"i": i, "fail_first": i % 7 == 0, "doomed": i % 50 == 0} for i in range(400)],
            queue=name,
            priority=n % 2,
            max_attempts=2,
        )
        for n, name in enumerate(QUEUES)
    ]
    loose = queue.enqueue_many("flaky", [{"fail_first": i % 5 == 0} for i in range(400)],
                               queue="alpha", max_attempts=2)  # fmt: skip
    ids = [i for batch in batches for i in batch.job_ids] + loose
    assert len(set(ids)) == 2000
    deadlocks = deadlocks_so_far(database)
    # workers 0-1 serve every queue, the others two queues each: claims span queues
    serves = [[], []] + [["--queue", QUEUES[n % 4], "--queue", QUEUES[(n + 1) % 4]]
                         for n in range(2, 8)]  # fmt: skip
    workers = [
        start_worker(target, run_log, "--concurrency", "2", "--burst", "--lease", "60", *queues)
        for queues in serves
    ]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
        for text in LOCK_ERRORS:
            assert text not in output, output[-3000:]
    # a deadlock is retried without a word: the server counts it (each worker's backend
    # reported its count when it exited)
    assert deadlocks_so_far(database) == deadlocks
    assert queue.stats().workers_lock.busy_errors == 0

    jobs = {job.id: job for job in queue.jobs(limit=10_000)}
    assert set(jobs) == set(ids)
    ran = runs(run_log)
    assert [key for key, n in ran.items() if n != 1] == []  # no attempt ran twice
    for job_id in ids:
        job = jobs[job_id]
        doomed = bool(job.payload.get("doomed"))
        retried = doomed or bool(job.payload.get("fail_first"))
        expected = JobStatus.FAILED if doomed else JobStatus.COMPLETED
        assert (job.status, job.attempts) == (expected, 2 if retried else 1), job_id
        assert sorted(a for j, a in ran if j == job_id) == list(range(1, job.attempts + 1))
        if expected is JobStatus.COMPLETED:
            assert job.result == {"attempt": job.attempts}  # completed once, by its last run
    assert len({line.split()[2] for line in run_log.read_text().splitlines()}) > 1

    real = collections.Counter((job.queue, job.status.value) for job in jobs.values())
    stats = queue.stats()
    assert {(q, s): n for q, counts in stats.counts.items() for s, n in counts.items() if n} == (
        dict(real)
    )
    assert stats.by_status["queued"] == stats.by_status["processing"] == 0
    for batch in batches:
        progress = queue.batch_progress(batch.id)
        members = collections.Counter(jobs[i].status.value for i in batch.job_ids)
        assert progress.total == 400
        for status in JobStatus:
            assert getattr(progress, status.value) == members[status.value], status
        assert progress.done and progress.failed == 8


# --- (b) ten processes migrate one fresh schema at once ------------------------------------------

APP_MIGRATIONS = [
    Migration(1, "notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"),
    Migration(2, "first note", "INSERT INTO notes (id, body) VALUES (1, 'only once');"),
]


def _open_and_migrate(target: str, dsn: str, schema: str, start: Any, out: Any) -> None:
    try:
        start.wait(60)
        Queue(target).close()
        out.put((migrate(dsn, APP_MIGRATIONS, namespace="notes", schema=schema), None))
    except BaseException:
        out.put(([], traceback.format_exc()))


def test_ten_processes_opening_a_fresh_schema_apply_each_migration_once(
    target: str, database: Database
) -> None:
    assert database.schema is not None
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(10), ctx.Queue()
    args = (target, database.dsn, database.schema, start, out)
    procs = [ctx.Process(target=_open_and_migrate, args=args) for _ in range(10)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * 10
    assert [error for _, error in results if error] == []
    applied_here = collections.Counter(v for versions, _ in results for v in versions)
    assert applied_here == {1: 1, 2: 1}  # each app migration ran in exactly one process
    recorded = database.rows(
        "SELECT namespace, version, count(*) FROM sqlitejobq_migrations "
        "GROUP BY namespace, version ORDER BY namespace, version"
    )
    assert recorded == [("notes", 1, 1), ("notes", 2, 1)] + [
        ("sqlitejobq", m.version, 1) for m in library.MIGRATIONS
    ]
    assert database.rows("SELECT body FROM notes") == [("only once",)]
    assert [m.version for m in applied_migrations(target, "sqlitejobq")] == [
        m.version for m in library.MIGRATIONS
    ]


def test_a_migration_url_may_name_its_schema_or_take_it_as_an_option(
    target: str, database: Database
) -> None:
    assert migrate(target, APP_MIGRATIONS[:1], namespace="notes") == [1]
    assert migrate(database.dsn, APP_MIGRATIONS, namespace="notes", **database.options) == [2]
    assert database.rows("SELECT body FROM notes") == [("only once",)]
    with pytest.raises(MigrationError, match="the URL names schema"):
        migrate(target, APP_MIGRATIONS, namespace="notes", schema="elsewhere")


# --- (c) schemas are separate queues ------------------------------------------------------------


def test_two_schemas_in_one_database_are_two_independent_queues(
    pg_server: PgServer, tmp_path: Path
) -> None:
    names = [pg_server.new_schema(), pg_server.new_schema()]
    try:
        a, b = (Queue(with_schema(pg_server.dsn, name)) for name in names)
        assert a.enqueue("t", "a1", unique_key="k") == 1
        assert b.enqueue("t", "b1", unique_key="k") == 1  # same id, same key: other queue
        b.enqueue_many("t", ["b2", "b3"])
        assert (a.stats().total(), b.stats().total()) == (1, 3)
        [claimed] = a.claim("w", limit=10)
        assert claimed.payload == "a1"
        assert a.claim("w", limit=10) == []
        assert b.get(1).status is JobStatus.QUEUED
        a.complete(claimed, "done")
        assert a.purge(older_than=0) == 1
        assert [j.payload for j in b.jobs(oldest_first=True)] == ["b1", "b2", "b3"]
        registry_b = b.registry
        registry_b.register("t", lambda job: job.payload)
        assert Worker(b, concurrency=1).run(burst=True).completed == 3
        assert a.stats().total() == 0 and b.stats().by_status["completed"] == 3
        assert (a.latest_batch_id(), b.latest_batch_id()) == (None, None)
        a.close()
        b.close()
    finally:
        for name in names:
            pg_server.drop(name)


def test_the_url_and_the_options_name_one_schema(target: str, database: Database) -> None:
    with Queue(database.dsn, **database.options) as q:
        q.enqueue("t")
    with Queue(target) as q:
        assert q.stats().total() == 1 and q.target == target
    with pytest.raises(SqliteJobQError, match="the URL names schema"):
        Queue(target, schema="other")
    with pytest.raises(InvalidArgument, match="schema must be a lower-case SQL identifier"):
        Queue(database.dsn, schema="Robert'); DROP")
    assert database.rows("SELECT count(*) FROM sqlitejobq_jobs") == [(1,)]


def test_a_server_older_than_the_sql_needs_is_refused_by_name_and_nothing_is_created(
    target: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlitejobq.backends.postgres import backend

    # this server is new enough: stand in for an old one by raising the floor past it
    monkeypatch.setattr(backend, "MIN_SERVER_VERSION", 999999)
    with pytest.raises(SqliteJobQError, match=r"runs PostgreSQL [\d.]+.*needs PostgreSQL 12"):
        Queue(target)
    tables = database.rows(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ?",
        (database.schema,),
    )
    assert tables == [(0,)]


def test_the_target_never_shows_the_password(database: Database) -> None:
    assert database.schema is not None
    parts = urlsplit(database.dsn)
    if parts.password is not None or not parts.username:
        pytest.skip("the DSN carries its own credentials: a made-up password would not do")
    host = parts.netloc.split("@", 1)[-1]
    dsn = urlunsplit(parts._replace(netloc=f"{parts.username}:s3cret@{host}"))  # trust auth
    assert "s3cret" in dsn
    with Queue(with_schema(dsn, database.schema)) as q:
        assert "s3cret" not in q.target and "s3cret" not in repr(q)
        assert q.target == with_schema(database.dsn, database.schema)
        with pytest.raises(JobNotFound) as missing:
            q.get(1)
    assert "s3cret" not in str(missing.value)


# --- (d) the caller's transaction, and the wake-up after its commit -------------------------------


def test_a_transactional_enqueue_exists_and_wakes_listeners_only_once_committed(
    queue: Queue, database: Database
) -> None:
    import psycopg
    from psycopg import sql

    assert database.schema is not None
    listener = psycopg.connect(database.dsn, autocommit=True)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_name(database.schema))))

    def notifications(seconds: float) -> list[str]:
        return [n.payload for n in listener.notifies(timeout=seconds, stop_after=1)]

    database.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    caller = database.connect(autocommit=False)
    caller.execute("INSERT INTO orders (id) VALUES (1)")
    rolled_back = queue.enqueue("receipt", {"order": 1}, queue="mail", connection=caller)
    caller.rollback()
    assert notifications(0.5) == []
    with pytest.raises(JobNotFound):
        queue.get(rolled_back)

    caller.execute("INSERT INTO orders (id) VALUES (2)")
    jid = queue.enqueue("receipt", {"order": 2}, queue="mail", connection=caller)
    assert notifications(0.5) == []  # not before the commit
    with pytest.raises(JobNotFound):
        queue.get(jid)
    caller.commit()
    assert notifications(10) == ["mail"]
    assert queue.get(jid).status is JobStatus.QUEUED
    assert database.rows("SELECT id FROM orders") == [(2,)]
    caller.close()
    listener.close()


def test_a_transactional_enqueue_the_server_refuses_says_why(
    queue: Queue, database: Database
) -> None:
    caller = database.connect(autocommit=False)
    caller.execute("SET TRANSACTION READ ONLY")
    with pytest.raises(SqliteJobQError, match="read-only") as refused:
        queue.enqueue("t", connection=caller)
    assert "transaction is aborted" not in str(refused.value)
    caller.rollback()
    caller.close()
    assert queue.stats().total() == 0


def test_an_idle_worker_process_runs_a_transactional_job_once_it_is_committed(
    queue: Queue, target: str, database: Database, tmp_path: Path
) -> None:
    run_log = tmp_path / "runs.log"
    worker = start_worker(target, run_log, "--concurrency", "1")
    try:
        wait_until(lambda: bool(queue.workers(alive_only=True)), 60, "the worker to start")
        caller = database.connect(autocommit=False)
        jid = queue.enqueue("noop", connection=caller)
        time.sleep(1.5)  # longer than a worker without a listener waits between looks
        assert not run_log.exists()
        committed = caller.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        committed = committed.fetchone()[0]
        caller.commit()
        wait_until(lambda: queue.get(jid).status is JobStatus.COMPLETED, 30, "the job")
        job = queue.get(jid)
        assert job.started_at is not None and job.started_at > committed
        assert runs(run_log) == {(jid, 1): 1}
        caller.close()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0]
    assert "Traceback" not in output


# --- (e) SKIP LOCKED: a claim takes no more than its limit, none twice ---------------------------


def _claim_against(target: str, name: str, start: Any, out: Any) -> None:
    try:
        rng = random.Random(name)
        mine: list[int] = []
        over: list[str] = []
        with Queue(target) as queue:
            database = Database("postgres", target)
            conn = database.connect()
            start.wait(60)
            while True:
                limit = rng.randint(1, 7)
                queues = rng.choice([None, ["a"], ["a", "b"]])
                jobs = queue.claim(name, queues=queues, limit=limit, lease=60)
                held = conn.execute(
                    "SELECT count(*) FROM sqlitejobq_jobs "
                    "WHERE worker = %s AND status = 'processing'", (name,)
                ).fetchone()[0]  # fmt: skip
                if len(jobs) > limit or held != len(jobs):
                    over.append(f"limit {limit}, returned {len(jobs)}, holds {held}")
                if not jobs:
                    if queue.stats().by_status["queued"] == 0:
                        break
                    continue
                assert all(queue.complete_many([(j, name) for j in jobs]))
                mine.extend(j.id for j in jobs)
            conn.close()
        out.put((mine, over, None))
    except BaseException:
        out.put(([], [], traceback.format_exc()))


def test_two_processes_claiming_at_once_take_no_more_than_their_limit_and_nothing_twice(
    queue: Queue, target: str
) -> None:
    ids = queue.enqueue_many("t", list(range(900)), queue="a")
    ids += queue.enqueue_many("t", list(range(600)), queue="b")
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claim_against, args=(target, name, start, out))
             for name in ("p1", "p2")]  # fmt: skip
    for proc in procs:
        proc.start()
    results = [out.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert [error for _, _, error in results if error] == []
    assert [over for _, over, _ in results] == [[], []]
    claimed = collections.Counter(i for mine, _, _ in results for i in mine)
    assert [i for i, n in claimed.items() if n > 1] == []  # none claimed twice
    assert set(claimed) == set(ids)
    assert all(mine for mine, _, _ in results)  # both claimed: they really ran at once
    assert queue.stats().by_status["completed"] == 1500


# --- (f) whose clock ----------------------------------------------------------------------------

# A process whose clock is an hour fast (a host with a wrong clock): what it stamps
_SKEWED = """
import json, sys, time
_real = time.time
time.time = lambda: _real() + 3600.0
from sqlitejobq import Queue
with Queue(sys.argv[1]) as q:
    now_id = q.enqueue("t")
    later_id = q.enqueue("t", delay=60)
    claimed = q.claim("skewed", limit=10, lease=30)
    later = q.get(later_id)
    print(json.dumps({
        "claimed": [j.id for j in claimed], "now_id": now_id, "process_time": time.time(),
        "started_at": claimed[0].started_at if claimed else None,
        "lease_until": claimed[0].lease_until if claimed else None,
        "created_at": q.get(now_id).created_at, "later_run_at": later.run_at,
        "queue_clock": q.clock(),
    }))
"""


def test_leases_and_due_times_follow_the_database_clock_not_the_process_clock(
    queue: Queue, target: str, database: Database
) -> None:
    import json

    before = db_now(database)
    done = subprocess.run(
        [sys.executable, "-c", _SKEWED, target], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    after = db_now(database)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["process_time"] > after + 3000  # the process's clock is an hour off
    assert seen["claimed"] == [seen["now_id"]]  # the delayed job is not due by the database
    for stamp in ("created_at", "started_at", "queue_clock"):
        assert before <= seen[stamp] <= after, stamp
    assert seen["lease_until"] == pytest.approx(seen["started_at"] + 30, abs=1e-6)
    assert seen["later_run_at"] == pytest.approx(seen["created_at"] + 60, abs=1.0)
    job = queue.get(seen["now_id"])
    assert (job.status, job.worker) == (JobStatus.PROCESSING, "skewed")


def test_an_injected_clock_stamps_instead_of_the_database(target: str) -> None:
    ticks = [1_900_000_000.0]
    with Queue(target, clock=lambda: ticks[0]) as q:
        jid = q.enqueue("t", delay=5)
        assert q.get(jid).run_at == 1_900_000_005.0
        assert q.claim("w") == []
        ticks[0] += 5
        [job] = q.claim("w", lease=7)
        assert (job.started_at, job.lease_until) == (1_900_000_005.0, 1_900_000_012.0)
        ticks[0] += 8
        assert q.rescue_expired() == [jid]


# --- (g) the driver is an extra -----------------------------------------------------------------

_WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as if the extra were not installed
from sqlitejobq import Queue, SqliteJobQError
from sqlitejobq.migrations import migrate
for attempt in (lambda: Queue(sys.argv[1]), lambda: migrate(sys.argv[1], [])):
    try:
        attempt()
    except SqliteJobQError as exc:
        print(type(exc).__name__, "|", exc, "|", exc.__cause__, "|", exc.__suppress_context__)
"""


def test_without_the_driver_a_postgres_url_gets_one_clear_error_naming_the_extra(
    target: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PSYCOPG, target], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for line in lines:
        name, message, cause, context_hidden = line.split(" | ")
        assert name == "SqliteJobQError"
        assert "pip install 'sqlitejobq[postgres]'" in message
        assert (cause, context_hidden) == ("None", "True")  # one error, not a chain of them
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("said", "refused", "advice"),
    [
        ('FATAL:  database "x" does not exist', True, "create that database"),
        ('FATAL:  role "x" does not exist', True, "create that role"),
        ('FATAL:  password authentication failed for user "u"', True, "user name and password"),
        ("fe_sendauth: no password supplied", True, "user name and password"),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.9"', True, "pg_hba.conf"),
        ("FATAL:  unsupported startup parameter: options", True, "remove it"),
        ("FATAL:  the database system is starting up", False, None),
        ("FATAL:  sorry, too many clients already", False, None),
        ("FATAL:  no more connections allowed (max_client_conn)", False, None),
        ("Connection refused\n\tIs the server running on that host?", False, None),
    ],
)  # fmt: skip
def test_a_connection_refused_for_good_is_told_from_one_that_may_pass(
    said: str, refused: bool, advice: str | None
) -> None:
    import psycopg

    from sqlitejobq.backends.postgres.connection import _ConnectFailed, is_transient, server_error

    failed = _ConnectFailed(psycopg.OperationalError(
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: {said}'
    ))  # fmt: skip
    assert failed.refused is refused and is_transient(failed) is not refused
    message = str(server_error(failed, "postgresql://u@h/db", "open"))
    if refused:
        assert "refused the connection" in message and advice in message
        assert said.removeprefix("FATAL:").split()[0] in message  # the server's own words
    else:
        assert "cannot reach" in message
