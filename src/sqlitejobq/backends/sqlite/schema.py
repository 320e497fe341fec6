"""The library's own tables, created and evolved through ``sqlitejobq.migrations``."""

from __future__ import annotations

from ..base import Migration

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

MIGRATIONS = [
    Migration(1, "jobs, batches and workers tables", _V1_TABLES),
    Migration(2, "indexes for claims, timers, leases, batches and unique keys", _V1_INDEXES),
    Migration(3, "job counts by queue and status", _V1_COUNTS),
    Migration(4, "when a job first met a worker that did not know its task", _V4_UNKNOWN_SINCE),
]
