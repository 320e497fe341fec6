"""Copying a queue into another database (``sqlitejobq.transfer``, ``sqlitejobq copy``).

Every test runs on real databases: a SQLite source copied into a SQLite file, and into a
PostgreSQL schema of its own when ``$SQLITEJOBQ_PG_DSN`` is set (``?schema=t_<hex>``,
dropped after the test).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import Job, JobStatus, Queue, Registry, Worker
from sqlitejobq.cli import main
from sqlitejobq.migrations import applied_migrations
from sqlitejobq.transfer import COPY_NAMESPACE, CopyRefused, copy_queue

ROOT = Path(__file__).resolve().parents[1]
PG_DSN_ENV = "SQLITEJOBQ_PG_DSN"
FAR = 3600.0  # seconds: a delayed job stays delayed for the whole test


@dataclass
class Dest:
    """The target of a copy: a SQLite file, or a PostgreSQL schema of the test's own."""

    engine: str
    url: str
    dsn: str | None = None
    schema: str | None = None

    def open(self, **options: Any) -> Queue:
        return Queue(self.url, **options)

    def exists(self) -> bool:
        """Whether anything was created: the file, or the schema."""
        if self.engine == "sqlite":
            return Path(self.url).exists()
        return bool(self.rows("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)))

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on the target (``%s`` placeholders; ``?`` on SQLite)."""
        if self.engine == "sqlite":
            conn = sqlite3.connect(f"file:{self.url}?mode=ro", uri=True)
            try:
                return conn.execute(query.replace("%s", "?"), params).fetchall()
            finally:
                conn.close()
        import psycopg

        assert self.dsn is not None
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (self.schema,))
            return [tuple(row) for row in conn.execute(query.encode(), params).fetchall()]

    def count(self, table: str) -> int | None:
        """Rows in ``table`` of the target, None while it does not exist."""
        try:
            return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])
        except Exception:
            return None


@pytest.fixture(params=["sqlite", "postgres"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dest]:
    if request.param == "sqlite":
        yield Dest("sqlite", str(tmp_path / "target.db"))
        return
    dsn = os.environ.get(PG_DSN_ENV)
    if not dsn:
        pytest.skip(f"set ${PG_DSN_ENV} to copy into PostgreSQL too")
    import psycopg

    schema = f"t_{uuid.uuid4().hex}"
    yield Dest("postgres", f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}", dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@pytest.fixture
def source(tmp_path: Path) -> str:
    """A SQLite queue holding every kind of job (see ``fill``), closed."""
    path = str(tmp_path / "source.db")
    fill(path)
    return path


def fill(path: str) -> None:
    """Each job's payload is {"n": N}, so that source and target jobs can be matched.

    - batch "nightly" (n 0..39, queue "batch"): 12 completed, 28 queued;
    - batch "mixed" (n 50..54, queue "mixed"): 1 completed, 1 failed, 1 cancelled, 2 queued;
    - n 100: delayed by an hour, priority 5, queue "later";
    - n 101: failed once, waiting an hour to retry, with a progress message (queue "retry");
    - n 102: failed for good, with its error and traceback (queue "dead");
    - n 103: queued with unique key "order-7" (queue "keys");
    - n 104: cancelled, and n 105: completed: not copied.
    """
    with Queue(path) as queue:
        nightly = queue.enqueue_batch("t", [{"n": n} for n in range(40)], name="nightly",
                                      queue="batch")  # fmt: skip
        for job in queue.claim("w", queues=["batch"], limit=12):
            assert queue.complete(job, {"done": job.payload["n"]})
        assert queue.batch_progress(nightly.id).queued == 28
        mixed = queue.enqueue_batch("t", [{"n": n} for n in range(50, 55)], name="mixed",
                                    queue="mixed")  # fmt: skip
        [done] = queue.claim("w", queues=["mixed"])
        queue.complete(done)
        [dead] = queue.claim("w", queues=["mixed"])
        queue.fail(dead, "mixed failure", traceback="Traceback: mixed", retry=False)
        assert queue.cancel(mixed.job_ids[2])
        queue.enqueue("t", {"n": 100}, delay=FAR, priority=5, queue="later")
        queue.enqueue("t", {"n": 101}, max_attempts=5, queue="retry")
        [retrying] = queue.claim("w", queues=["retry"])
        queue.set_progress(retrying, 0.5, "half way")
        queue.fail(retrying, "timeout talking to the broker", traceback="Traceback: retry",
                   retry_in=FAR)  # fmt: skip
        queue.enqueue("t", {"n": 102}, queue="dead")
        [failed] = queue.claim("w", queues=["dead"])
        queue.fail(failed, "boom", traceback="Traceback (most recent call last):\n  boom",
                   retry=False)  # fmt: skip
        queue.enqueue("t", {"n": 103}, unique_key="order-7", queue="keys")
        queue.cancel(queue.enqueue("t", {"n": 104}, queue="gone"))
        queue.enqueue("t", {"n": 105}, queue="done")
        [finished] = queue.claim("w", queues=["done"])
        queue.complete(finished)


#: What ``fill`` leaves to copy: the n of every queued or failed job.
TO_COPY = {*range(12, 40), 51, 53, 54, 100, 101, 102, 103}
DUE = {*range(12, 40), 53, 54, 103}  # queued and due: a worker runs these


def by_n(queue: Queue) -> dict[int, Job]:
    jobs = queue.jobs(limit=100_000)
    found: dict[int, Job] = {}
    for job in jobs:
        assert job.payload["n"] not in found, f"job n={job.payload['n']} is there twice"
        found[job.payload["n"]] = job
    return found


def assert_counts_agree(queue: Queue) -> None:
    """The counts kept beside the jobs equal the jobs counted one by one."""
    counted: collections.Counter[tuple[str, str]] = collections.Counter(
        (job.queue, job.status.value) for job in queue.jobs(limit=100_000)
    )
    kept = {(name, status): n for name, counts in queue.stats().counts.items()
            for status, n in counts.items() if n}  # fmt: skip
    assert kept == dict(counted)


def file_state(path: str) -> dict[str, bytes]:
    """The bytes of the database file and of its companions that hold data."""
    state = {}
    for name in (path, path + "-wal"):
        if os.path.exists(name):
            state[name] = Path(name).read_bytes()
    return state


# --- what is copied, and how ----------------------------------------------------------------


def test_copy_keeps_every_field_of_the_queued_delayed_retrying_and_failed_jobs(
    source: str, dest: Dest
) -> None:
    report = copy_queue(source, dest.url)
    assert (report.copied, report.queued, report.failed) == (len(TO_COPY), len(TO_COPY) - 2, 2)
    assert (report.delayed, report.retrying, report.batches) == (2, 1, 2)
    with Queue(source) as old, dest.open() as new:
        before, after = by_n(old), by_n(new)
        assert set(after) == TO_COPY
        fields = ("task", "queue", "payload", "status", "priority", "run_at", "attempts",
                  "max_attempts", "unique_key", "error", "traceback", "created_at", "progress",
                  "progress_message", "started_at", "finished_at", "result")  # fmt: skip
        for n in TO_COPY:
            was, now = before[n].as_dict(), after[n].as_dict()
            assert {f: now[f] for f in fields} == {f: was[f] for f in fields}, f"job n={n}"
            assert now["worker"] is None and now["lease_until"] is None
        delayed, retrying, failed = after[100], after[101], after[102]
        assert delayed.status is JobStatus.QUEUED and delayed.run_at > new.clock() + FAR - 60
        assert retrying.attempts == 1 and retrying.run_at > new.clock() + FAR - 60
        assert retrying.error == "timeout talking to the broker"
        assert retrying.progress_message == "half way"
        assert failed.status is JobStatus.FAILED and failed.error == "boom"
        assert failed.traceback is not None and "most recent call last" in failed.traceback
        assert new.get(after[20].id).unique_key is None and after[103].unique_key == "order-7"
        for n in TO_COPY:  # batch membership follows, to batches named as in the source
            was_batch, now_batch = before[n].batch_id, after[n].batch_id
            assert (was_batch is None) == (now_batch is None)
            if was_batch is not None and now_batch is not None:
                assert new.batch_progress(now_batch).name == old.batch_progress(was_batch).name
                assert (new.batch_progress(now_batch).created_at
                        == old.batch_progress(was_batch).created_at)  # fmt: skip
        assert_counts_agree(new)


def test_batches_read_as_in_the_source_though_only_their_waiting_jobs_are_copied(
    source: str, dest: Dest
) -> None:
    copy_queue(source, dest.url, chunk_size=7)
    with dest.open() as new:
        jobs = by_n(new)
        nightly = new.batch_progress(jobs[20].batch_id)  # type: ignore[arg-type]
        assert (nightly.name, nightly.total, nightly.completed, nightly.queued) == (
            "nightly", 40, 12, 28)  # fmt: skip
        assert nightly.failed == nightly.cancelled == nightly.processing == 0
        mixed = new.batch_progress(jobs[53].batch_id)  # type: ignore[arg-type]
        assert (mixed.total, mixed.completed, mixed.failed, mixed.cancelled, mixed.queued) == (
            5, 1, 1, 1, 2)  # fmt: skip
        assert len(new.batch_jobs(nightly.batch_id)) == 28


def test_the_record_is_a_migration_namespace_of_its_own(source: str, dest: Dest) -> None:
    copy_queue(source, dest.url)
    options = {} if dest.schema is None else {"schema": dest.schema}
    db = dest.url if dest.dsn is None else dest.dsn
    assert [m.version for m in applied_migrations(db, COPY_NAMESPACE, **options)] == [1]
    assert dest.count("sqlitejobq_copy_jobs") == len(TO_COPY)
    assert dest.count("sqlitejobq_copy_batches") == 2


def test_copied_in_chunks_of_the_size_asked(source: str, dest: Dest) -> None:
    report = copy_queue(source, dest.url, chunk_size=10)
    assert report.chunks == -(-len(TO_COPY) // 10)  # 10 jobs to copy a chunk, not 10 ids
    assert report.copied == len(TO_COPY)


# --- reruns ---------------------------------------------------------------------------------


def test_a_source_a_producer_still_writes_to_is_read_whole(source: str, dest: Dest) -> None:
    with Queue(source) as producer:
        producer.enqueue("t", {"n": 600})  # in the WAL, not yet in the main file
        assert os.path.getsize(source + "-wal") > 0
        report = copy_queue(Path(source), dest.url)
        producer.enqueue("t", {"n": 601})
        assert report.copied == len(TO_COPY) + 1
    with dest.open() as new:
        assert set(by_n(new)) == TO_COPY | {600}
    assert copy_queue(source, dest.url).copied == 1


def test_a_rerun_copies_nothing_twice_and_copies_the_jobs_added_since(
    source: str, dest: Dest
) -> None:
    first = copy_queue(source, dest.url)
    again = copy_queue(source, dest.url)
    assert (again.copied, again.already_copied, again.batches) == (0, first.copied, 0)
    with Queue(source) as old:
        old.enqueue("t", {"n": 200})
        added = old.enqueue_batch("t", [{"n": 201}, {"n": 202}], name="later batch")
    third = copy_queue(source, dest.url)
    assert (third.copied, third.batches, third.already_copied) == (3, 1, first.copied)
    with dest.open() as new:
        jobs = by_n(new)  # fails on a job copied twice
        assert set(jobs) == TO_COPY | {200, 201, 202}
        later = new.batch_progress(jobs[201].batch_id)  # type: ignore[arg-type]
        assert (later.name, later.total, later.queued) == ("later batch", 2, 2)
        assert added.id is not None
        assert_counts_agree(new)


def test_the_source_is_known_by_its_identity_not_its_path(
    source: str, dest: Dest, tmp_path: Path
) -> None:
    first = copy_queue(source, dest.url)
    moved = str(tmp_path / "elsewhere" / "renamed.db")
    os.makedirs(os.path.dirname(moved))
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(source + suffix):
            os.rename(source + suffix, moved + suffix)
    with Queue(moved) as old:
        old.enqueue("t", {"n": 300})
    again = copy_queue(moved, dest.url)
    assert again.source_identity == first.source_identity
    assert (again.copied, again.already_copied) == (1, len(TO_COPY))
    with dest.open() as new:
        assert set(by_n(new)) == TO_COPY | {300}


def test_another_source_is_another_identity(source: str, dest: Dest, tmp_path: Path) -> None:
    other = str(tmp_path / "other.db")
    with Queue(other) as queue:
        queue.enqueue("t", {"n": 400})
    first, second = copy_queue(source, dest.url), copy_queue(other, dest.url)
    assert first.source_identity != second.source_identity
    assert second.copied == 1
    with dest.open() as new:
        assert set(by_n(new)) == TO_COPY | {400}


def test_a_byte_copy_of_a_source_shares_its_identity_and_its_own_jobs_are_refused(
    source: str, dest: Dest, tmp_path: Path
) -> None:
    clone = str(tmp_path / "clone.db")
    shutil.copyfile(source, clone)
    with Queue(source) as original, Queue(clone) as copied:
        assert original.enqueue("t", {"n": 700}) == copied.enqueue("t", {"n": 701})
    assert copy_queue(source, dest.url).copied == len(TO_COPY) + 1
    # the clone's jobs from before the cloning are the same jobs: copied already
    with pytest.raises(CopyRefused, match="byte copy of a queue file copied into this target"):
        copy_queue(clone, dest.url)
    with dest.open() as new:
        assert set(by_n(new)) == TO_COPY | {700}


def test_a_job_whose_key_a_copy_from_the_same_source_holds_is_taken_to_be_that_job(
    source: str, dest: Dest
) -> None:
    copy_queue(source, dest.url)
    with Queue(source) as old:
        old.cancel(by_n(old)[103].id)
        assert old.enqueue("t", {"n": 106}, unique_key="order-7", queue="keys")
    again = copy_queue(source, dest.url)
    assert (again.copied, again.deduplicated) == (0, 1)
    with dest.open() as new:
        jobs = by_n(new)
        assert 106 not in jobs and jobs[103].status is JobStatus.QUEUED
    assert copy_queue(source, dest.url).deduplicated == 0  # recorded: skipped from now on


# --- refusals -------------------------------------------------------------------------------


def test_processing_jobs_refuse_the_copy_and_nothing_is_copied(source: str, dest: Dest) -> None:
    with Queue(source) as old:
        [claimed] = old.claim("w", queues=["batch"])
    with pytest.raises(CopyRefused, match=r"1 job\(s\) of .* are processing \(ids \d+\)") as err:
        copy_queue(source, dest.url)
    assert "stop every worker" in str(err.value).lower()
    assert not dest.exists()
    with Queue(source) as old:
        assert old.complete(claimed)
    assert copy_queue(source, dest.url).copied == len(TO_COPY) - 1


def test_a_unique_key_held_in_the_target_by_another_job_refuses_the_copy(
    source: str, dest: Dest
) -> None:
    with dest.open() as new:
        own = new.enqueue("t", {"n": 999}, unique_key="order-7")
    with pytest.raises(CopyRefused, match=r"'order-7'.*source job \d+, target job \d+"):
        copy_queue(source, dest.url)
    with pytest.raises(CopyRefused, match="order-7"):
        copy_queue(source, dest.url, dry_run=True)
    with dest.open() as new:
        assert set(by_n(new)) == {999}  # nothing copied
        assert new.cancel(own)
    assert copy_queue(source, dest.url).copied == len(TO_COPY)
    # the key is now held by the job copied from this source: no refusal on a rerun
    assert copy_queue(source, dest.url).already_copied == len(TO_COPY)


def test_a_database_is_not_copied_into_itself(source: str, tmp_path: Path) -> None:
    with pytest.raises(CopyRefused, match="itself, or a copy of it"):
        copy_queue(source, source)
    backup = str(tmp_path / "backup.db")
    shutil.copyfile(source, backup)
    with pytest.raises(CopyRefused, match="itself, or a copy of it"):
        copy_queue(source, backup)


def test_a_source_that_is_not_a_queue_is_refused_and_left_alone(tmp_path: Path, dest: Dest) -> None:
    missing = str(tmp_path / "missing.db")
    with pytest.raises(Exception, match="does not exist"):
        copy_queue(missing, dest.url)
    assert not os.path.exists(missing)
    other = str(tmp_path / "app.db")
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = file_state(other)
    with pytest.raises(Exception, match="not a sqlitejobq queue"):
        copy_queue(other, dest.url)
    assert file_state(other) == before
    assert not dest.exists()


# --- nothing changes that should not ---------------------------------------------------------


def test_the_source_is_unchanged_byte_for_byte(source: str, dest: Dest) -> None:
    before = file_state(source)
    assert list(before) == [source]  # closed: the WAL was folded in and removed
    copy_queue(source, dest.url, dry_run=True)
    copy_queue(source, dest.url, chunk_size=5)
    copy_queue(source, dest.url)
    after = file_state(source)
    assert after[source] == before[source]
    # the read-only connection may leave SQLite's empty WAL behind, never a frame in it
    assert after.get(source + "-wal", b"") == b""


def test_a_dry_run_changes_nothing(source: str, dest: Dest) -> None:
    planned = copy_queue(source, dest.url, dry_run=True)
    assert planned.dry_run and (planned.copied, planned.batches) == (len(TO_COPY), 2)
    assert not dest.exists()  # not even created
    copy_queue(source, dest.url)
    with Queue(source) as old:
        old.enqueue("t", {"n": 500})
    jobs_before = dest.rows("SELECT id, status FROM sqlitejobq_jobs ORDER BY id")
    records_before = dest.count("sqlitejobq_copy_jobs")
    planned = copy_queue(source, dest.url, dry_run=True)
    assert (planned.copied, planned.already_copied) == (1, len(TO_COPY))
    assert dest.rows("SELECT id, status FROM sqlitejobq_jobs ORDER BY id") == jobs_before
    assert dest.count("sqlitejobq_copy_jobs") == records_before


# --- the target's workers --------------------------------------------------------------------


def counting_registry(runs: collections.Counter[int]) -> Registry:
    registry = Registry()
    lock = threading.Lock()

    @registry.task("t")
    def t(job: Job) -> None:
        with lock:
            runs[job.payload["n"]] += 1

    return registry


def test_a_worker_on_the_target_runs_the_copied_jobs_exactly_once(source: str, dest: Dest) -> None:
    copy_queue(source, dest.url)
    runs: collections.Counter[int] = collections.Counter()
    with dest.open(registry=counting_registry(runs)) as new:
        Worker(new, concurrency=4).run(burst=True)
        assert runs == collections.Counter(DUE)  # each due job once; none delayed, none failed
        copy_queue(source, dest.url)  # a rerun after the jobs ran copies none again
        Worker(new, concurrency=4).run(burst=True)
        assert runs == collections.Counter(DUE)
        jobs = by_n(new)
        assert jobs[100].status is JobStatus.QUEUED and jobs[101].status is JobStatus.QUEUED
        assert jobs[102].status is JobStatus.FAILED
        nightly = new.batch_progress(jobs[20].batch_id)  # type: ignore[arg-type]
        assert (nightly.total, nightly.completed, nightly.queued, nightly.percent) == (
            40, 40, 0, 100.0)  # fmt: skip
        assert_counts_agree(new)


def test_copied_jobs_wake_the_target_workers_of_another_process(source: str, dest: Dest) -> None:
    runs: collections.Counter[int] = collections.Counter()
    with dest.open(registry=counting_registry(runs)) as new:
        # without a wake-up this worker would not look for work for a minute
        worker = Worker(new, concurrency=4, poll_interval=60.0, rescue_interval=60.0)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not new.backend.waker.watching and dest.engine == "postgres":
                assert time.monotonic() < deadline, "the worker's listener did not start"
                time.sleep(0.01)
            time.sleep(0.5)  # the worker goes idle
            done = subprocess.run(
                [sys.executable, "-m", "sqlitejobq", "copy", "--db", source, "--to", dest.url],
                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            copied_at = time.monotonic()
            while sum(runs.values()) < len(DUE):
                assert time.monotonic() - copied_at < 5, f"only {sum(runs.values())} ran"
                time.sleep(0.01)
        finally:
            worker.stop(timeout=10)
            thread.join(10)
        assert not thread.is_alive()
        assert runs == collections.Counter(DUE)


# --- a crash in the middle -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_copy_killed_mid_way_leaves_whole_chunks_and_a_rerun_copies_every_job_once(
    tmp_path: Path, dest: Dest
) -> None:
    total, batched = 20_000, 10_000
    big = str(tmp_path / "big.db")
    with Queue(big) as queue:
        queue.enqueue_batch("t", [{"n": n} for n in range(batched)], name="big")
        queue.enqueue_many("t", [{"n": n} for n in range(batched, total)])
    copying = subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "copy", "--db", big, "--to", dest.url,
         "--chunk-size", "40"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not dest.count("sqlitejobq_copy_jobs"):
            assert copying.poll() is None, f"the copy ended first: {copying.communicate()}"
            assert time.monotonic() < deadline, "no chunk was copied within 120 s"
            time.sleep(0.002)
        os.kill(copying.pid, signal.SIGKILL)
    finally:
        copying.kill()
        copying.communicate(timeout=60)
    assert copying.returncode == -signal.SIGKILL
    recorded = dest.count("sqlitejobq_copy_jobs")
    assert recorded is not None and 0 < recorded < total, "the kill did not land mid-copy"
    # nothing half-copied: every job in the target is recorded, and every record has its job
    assert dest.count("sqlitejobq_jobs") == recorded
    assert recorded % 40 == 0
    report = copy_queue(big, dest.url, chunk_size=1000)
    assert (report.copied, report.already_copied) == (total - recorded, recorded)
    payloads = dest.rows("SELECT payload FROM sqlitejobq_jobs")
    seen = collections.Counter(json.loads(p)["n"] for (p,) in payloads)
    assert len(payloads) == total and set(seen) == set(range(total))
    assert max(seen.values()) == 1
    assert dest.count("sqlitejobq_copy_jobs") == total
    with dest.open() as new:
        assert new.stats().by_status["queued"] == total
        # the batch, begun before the kill and ended after it, counts each job once
        big_batch = new.batch_progress(by_n(new)[0].batch_id)  # type: ignore[arg-type]
        assert (big_batch.total, big_batch.queued) == (batched, batched)
        assert dest.count("sqlitejobq_batches") == 1


# --- other engines as the source --------------------------------------------------------------


@pytest.mark.parametrize("dest", ["postgres"], indirect=True)
def test_a_postgresql_queue_copies_back_into_a_sqlite_file(
    source: str, dest: Dest, tmp_path: Path
) -> None:
    copy_queue(source, dest.url)
    back = str(tmp_path / "back.db")
    report = copy_queue(dest.url, back)
    assert report.copied == len(TO_COPY) and report.source_identity.startswith("postgres:")
    with Queue(back) as queue:
        jobs = by_n(queue)
        assert set(jobs) == TO_COPY
        nightly = queue.batch_progress(jobs[20].batch_id)  # type: ignore[arg-type]
        assert (nightly.total, nightly.completed, nightly.queued) == (40, 12, 28)
        assert_counts_agree(queue)
    assert copy_queue(dest.url, back).already_copied == len(TO_COPY)


# --- the command ----------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_copies_and_prints_a_summary(
    capsys: pytest.CaptureFixture[str], source: str, dest: Dest
) -> None:
    code, out, _ = cli(capsys, "copy", "--db", source, "--to", dest.url, "--dry-run")
    assert code == 0 and out.startswith(f"would copy {len(TO_COPY)} jobs")
    assert "dry run: nothing was written" in out and not dest.exists()
    code, out, _ = cli(capsys, "copy", "--db", source, "--to", dest.url, "--json")
    assert code == 0
    summary = json.loads(out)
    assert (summary["copied"], summary["failed"], summary["batches"]) == (len(TO_COPY), 2, 2)
    assert summary["dry_run"] is False and summary["source_identity"].startswith("sqlite:")
    code, out, _ = cli(capsys, "copy", "--db", source, "--to", dest.url)
    assert code == 0
    with dest.open() as new:
        shown = new.target
    assert out.splitlines()[:2] == [
        f"copied 0 jobs from {source} to {shown}: 0 queued (0 delayed, 0 waiting "
        f"to retry), 0 failed; batches created: 0",
        f"skipped {len(TO_COPY)} jobs copied before",
    ]


def test_the_command_refuses_with_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], source: str, dest: Dest
) -> None:
    with Queue(source) as old:
        old.claim("w", queues=["batch"])
    code, out, err = cli(capsys, "copy", "--db", source, "--to", dest.url)
    assert code == 1 and out == ""
    assert err.startswith("sqlitejobq: error: 1 job(s) of") and err.count("\n") == 1
    assert not dest.exists()


@pytest.mark.parametrize(
    "args",
    [["copy", "--db", "x.db"], ["copy", "--db", "x.db", "--to", "y.db", "--chunk-size", "0"]],
)
def test_the_command_exits_2_on_bad_usage(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "usage: sqlitejobq copy" in capsys.readouterr().err


def test_the_command_help_names_every_option() -> None:
    done = subprocess.run([sys.executable, "-m", "sqlitejobq", "copy", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0
    for option in ("--db", "--to", "--dry-run", "--json", "--chunk-size"):
        assert option in done.stdout
