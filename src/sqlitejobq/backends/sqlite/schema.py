"""The library's own tables, created and evolved through ``sqlitejobq.migrations``."""

from __future__ import annotations

from typing import Any

from ...migrations.values import Migration

NAMESPACE = "sqlitejobq"

_V1_TABLES = """
CREATE TABLE sqlitejobq_batches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT,
    created_at  REAL    NOT NULL,
    total       INTEGER NOT NULL DEFAULT 0,
    queued      INTEGER NOT NULL DEFAULT 0,
    processing  INTEGER NOT NULL DEFAULT 0,
    completed   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    cancelled   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE sqlitejobq_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    task             TEXT    NOT NULL,
    queue            TEXT    NOT NULL DEFAULT 'default',
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           REAL    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    progress         REAL    NOT NULL DEFAULT 0.0 CHECK (progress BETWEEN 0.0 AND 1.0),
    progress_message TEXT,
    result           TEXT,
    error            TEXT,
    traceback        TEXT,
    created_at       REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    batch_id         INTEGER REFERENCES sqlitejobq_batches (id),
    unique_key       TEXT,
    worker           TEXT,
    lease_until      REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE sqlitejobq_workers (
    id                    TEXT PRIMARY KEY,
    hostname              TEXT    NOT NULL,
    pid                   INTEGER NOT NULL,
    queues                TEXT,
    concurrency           INTEGER NOT NULL,
    started_at            REAL    NOT NULL,
    last_seen             REAL    NOT NULL,
    stopped_at            REAL,
    jobs_completed        INTEGER NOT NULL DEFAULT 0,
    jobs_failed           INTEGER NOT NULL DEFAULT 0,
    writes                INTEGER NOT NULL DEFAULT 0,
    lock_retries          INTEGER NOT NULL DEFAULT 0,
    lock_wait_seconds     REAL    NOT NULL DEFAULT 0.0,
    lock_wait_max_seconds REAL    NOT NULL DEFAULT 0.0,
    busy_errors           INTEGER NOT NULL DEFAULT 0
);
"""

# The claim reads one ordered range of a partial index per queue (only queued jobs), so its
# cost does not grow with the number of finished jobs; the same index answers when the next
# delayed job is due. The others serve lease rescue, batches and unique keys. Every index
# is paid for on the hot path (enqueue, claim, complete), so there is none that a query
# does not need.
_V1_INDEXES = """
CREATE INDEX sqlitejobq_jobs_claim ON sqlitejobq_jobs (queue, priority DESC, run_at, id)
    WHERE status = 'queued';
CREATE INDEX sqlitejobq_jobs_lease ON sqlitejobq_jobs (lease_until)
    WHERE status = 'processing';
CREATE INDEX sqlitejobq_jobs_batch ON sqlitejobq_jobs (batch_id)
    WHERE batch_id IS NOT NULL;
CREATE UNIQUE INDEX sqlitejobq_jobs_unique ON sqlitejobq_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('queued', 'processing');
"""

# Counts of jobs by (queue, status), and each batch's counts by status, are kept by the
# library's own statements in the transaction that changes a job's status, so stats() and
# batch_progress() read a few rows whatever the size of the table, and the hot path pays
# no trigger and no index on status for it. Batch counts keep purged jobs.
_V1_COUNTS = """
CREATE TABLE sqlitejobq_counts (
    queue  TEXT    NOT NULL,
    status TEXT    NOT NULL,
    count  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, status)
) WITHOUT ROWID;
"""

# When a worker that did not know a job's task first handed it back (rolling deploys): the
# job waits for a worker that knows the task for a bounded window from then.
_V4_UNKNOWN_SINCE = """
ALTER TABLE sqlitejobq_jobs ADD COLUMN unknown_since REAL;
"""

# Scheduling. A job may wait for others (status 'waiting', ``waiting_on`` of its
# dependencies not yet finished, what to do if one fails in ``dependency_policy``) and may
# be held to a limit (``limit_key``: its task, or its task and a payload value, "task|value").
# SQLite cannot change a CHECK constraint in place, so the jobs table is rebuilt with the
# new status (once, at the upgrade: a copy of every row). Limited jobs leave the claim index
# for one of their own, read per key, so that jobs held back by a limit cost the plain claim
# nothing however many wait.
_V5_JOBS = """
CREATE TABLE sqlitejobq_jobs_v5 (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    task              TEXT    NOT NULL,
    queue             TEXT    NOT NULL DEFAULT 'default',
    payload           TEXT    NOT NULL,
    status            TEXT    NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'processing', 'completed', 'failed',
                                        'cancelled', 'waiting')),
    priority          INTEGER NOT NULL DEFAULT 0,
    run_at            REAL    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    progress          REAL    NOT NULL DEFAULT 0.0 CHECK (progress BETWEEN 0.0 AND 1.0),
    progress_message  TEXT,
    result            TEXT,
    error             TEXT,
    traceback         TEXT,
    created_at        REAL    NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    batch_id          INTEGER REFERENCES sqlitejobq_batches (id),
    unique_key        TEXT,
    worker            TEXT,
    lease_until       REAL,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    unknown_since     REAL,
    limit_key         TEXT,
    waiting_on        INTEGER NOT NULL DEFAULT 0 CHECK (waiting_on >= 0),
    dependency_policy TEXT CHECK (dependency_policy IN ('cancel', 'run')),
    has_dependents    INTEGER NOT NULL DEFAULT 0
);

INSERT INTO sqlitejobq_jobs_v5
    (id, task, queue, payload, status, priority, run_at, attempts, max_attempts, progress,
     progress_message, result, error, traceback, created_at, started_at, finished_at,
     batch_id, unique_key, worker, lease_until, cancel_requested, unknown_since)
SELECT id, task, queue, payload, status, priority, run_at, attempts, max_attempts, progress,
       progress_message, result, error, traceback, created_at, started_at, finished_at,
       batch_id, unique_key, worker, lease_until, cancel_requested, unknown_since
FROM sqlitejobq_jobs;
"""

_V5_INDEXES = """
CREATE INDEX sqlitejobq_jobs_claim ON sqlitejobq_jobs (queue, priority DESC, run_at, id)
    WHERE status = 'queued' AND limit_key IS NULL;
CREATE INDEX sqlitejobq_jobs_lease ON sqlitejobq_jobs (lease_until)
    WHERE status = 'processing';
CREATE INDEX sqlitejobq_jobs_batch ON sqlitejobq_jobs (batch_id)
    WHERE batch_id IS NOT NULL;
CREATE UNIQUE INDEX sqlitejobq_jobs_unique ON sqlitejobq_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('queued', 'processing', 'waiting');
CREATE INDEX sqlitejobq_jobs_limited ON sqlitejobq_jobs (limit_key, priority DESC, run_at, id)
    WHERE status = 'queued' AND limit_key IS NOT NULL;
CREATE INDEX sqlitejobq_jobs_limited_due ON sqlitejobq_jobs (run_at)
    WHERE status = 'queued' AND limit_key IS NOT NULL;
"""

# Who waits for whom (rows go when the dependent is released); the periodic schedules and
# the latest slot each created a job for; the starts of rate-limited keys within their
# period; a batch's waiting jobs.
_V5_TABLES = """
CREATE TABLE sqlitejobq_dependencies (
    depends_on INTEGER NOT NULL,
    job_id     INTEGER NOT NULL,
    PRIMARY KEY (depends_on, job_id)
) WITHOUT ROWID;

CREATE TABLE sqlitejobq_schedules (
    name        TEXT PRIMARY KEY,
    task        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    timezone    TEXT NOT NULL,
    last_slot   REAL,
    last_job_id INTEGER,
    declared_at REAL NOT NULL
);

CREATE TABLE sqlitejobq_starts (
    limit_key  TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE INDEX sqlitejobq_starts_key ON sqlitejobq_starts (limit_key, started_at);

ALTER TABLE sqlitejobq_batches ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
"""


# A job someone waits for (``Queue.wait``): the transaction that ends it wakes the waiters.
_V6_WATCHED = """
ALTER TABLE sqlitejobq_jobs ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
"""


# What a job went through besides its last attempt (failed attempts, expired leases,
# abandoned runs, cancel requests, operator retries, hand-backs of a task a worker did not
# know): a JSON array, NULL until one of those happens. Only those paths append to it, so
# the hot path (claim, complete) writes nothing more. Jobs completed and failed per minute
# (the epoch second the minute starts), added by the workers' reports and kept a week. The
# failed and cancelled jobs in id order, so that they are listed and retried without
# reading the completed ones; the dependency rows by dependent, for a job's page.
_V7_HISTORY = """
ALTER TABLE sqlitejobq_jobs ADD COLUMN history TEXT;

CREATE INDEX sqlitejobq_jobs_finished_badly ON sqlitejobq_jobs (id)
    WHERE status IN ('failed', 'cancelled');

CREATE INDEX sqlitejobq_dependencies_job ON sqlitejobq_dependencies (job_id);

CREATE TABLE sqlitejobq_throughput (
    minute    INTEGER PRIMARY KEY,
    completed INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0
);
"""


def _v5(conn: Any) -> None:
    """Rebuild the jobs table (new status, new columns), keeping ids and the id sequence."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sqlitejobq_jobs'").fetchone()
    conn.executescript(_V5_JOBS)
    conn.execute("DROP TABLE sqlitejobq_jobs")
    conn.execute("ALTER TABLE sqlitejobq_jobs_v5 RENAME TO sqlitejobq_jobs")
    if row is not None:  # ids of purged jobs are never handed out again
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'sqlitejobq_jobs'")
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('sqlitejobq_jobs', ?)", (row[0],)
        )
    conn.executescript(_V5_INDEXES)
    conn.executescript(_V5_TABLES)


# How often a job's handler put it off (``raise Snooze``), bounded by the queue's
# ``max_snoozes``; when a job not started is worthless (``expires``), the jobs that have an
# expiry found by it (only those: no other job pays for the index); the queues an operator
# paused (no worker claims from them until resumed).
_V8_STEERING = """
ALTER TABLE sqlitejobq_jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;

ALTER TABLE sqlitejobq_jobs ADD COLUMN expires_at REAL;

CREATE INDEX sqlitejobq_jobs_expiry ON sqlitejobq_jobs (expires_at)
    WHERE status IN ('queued', 'waiting') AND expires_at IS NOT NULL;

CREATE TABLE sqlitejobq_queues (
    name      TEXT PRIMARY KEY,
    paused_at REAL
);
"""


MIGRATIONS = [
    Migration(1, "jobs, batches and workers tables", _V1_TABLES),
    Migration(2, "indexes for claims, timers, leases, batches and unique keys", _V1_INDEXES),
    Migration(3, "job counts by queue and status", _V1_COUNTS),
    Migration(4, "when a job first met a worker that did not know its task", _V4_UNKNOWN_SINCE),
    Migration(5, "dependencies, limits and schedules", _v5),
    Migration(6, "jobs someone waits for", _V6_WATCHED),
    Migration(7, "job history, throughput per minute, failed jobs by id", _V7_HISTORY),
    Migration(8, "snoozes and expiry of a job, paused queues", _V8_STEERING),
]
