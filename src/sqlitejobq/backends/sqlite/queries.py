"""Every SQL statement of the SQLite backend, by name. Values are always bound parameters.

Times are epoch seconds; ``:now`` is the clock of the process (or the queue's injected
clock), and durations (``:lease``, ``:delay``, ``:window``) are seconds from it.
"""

from __future__ import annotations

from functools import lru_cache

from ..base import EXPIRED_ERROR as EXPIRED

JOB_COLUMNS = (
    "id, task, queue, payload, status, priority, attempts, max_attempts, progress, "
    "progress_message, result, error, traceback, run_at, created_at, started_at, finished_at, "
    "batch_id, unique_key, worker, lease_until, cancel_requested"
)

# --- enqueue ----------------------------------------------------------------------------

INSERT_JOB_PLAIN = """
INSERT INTO sqlitejobq_jobs
    (task, queue, payload, status, priority, run_at, max_attempts, unique_key, limit_key,
     batch_id, created_at)
VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)
"""

INSERT_JOB_UNLIMITED = """
INSERT INTO sqlitejobq_jobs
    (task, queue, payload, status, priority, run_at, max_attempts, unique_key, batch_id,
     created_at)
VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)
"""

# A job whose unique key an active job holds is not inserted (no row comes back).
INSERT_JOB = INSERT_JOB_PLAIN + "ON CONFLICT DO NOTHING RETURNING id"
INSERT_ONE_UNLIMITED = INSERT_JOB_UNLIMITED + "ON CONFLICT DO NOTHING RETURNING id"

MAX_JOB_ID = "SELECT max(id) FROM sqlitejobq_jobs"

JOB_IDS_AFTER = "SELECT id FROM sqlitejobq_jobs WHERE id > ? ORDER BY id"

ACTIVE_JOB_WITH_KEY = """
SELECT id FROM sqlitejobq_jobs
WHERE unique_key = :key AND status IN ('queued', 'processing', 'waiting')
"""

INSERT_BATCH = """
INSERT INTO sqlitejobq_batches (name, created_at) VALUES (:name, :now) RETURNING id
"""

# --- claim ------------------------------------------------------------------------------

_CLAIM = f"""
UPDATE sqlitejobq_jobs
SET status = 'processing', attempts = attempts + 1, worker = :worker,
    lease_until = :lease_until, started_at = :now
WHERE id IN ({{candidates}})
RETURNING {JOB_COLUMNS}
"""

# Whether the queue named by the SQL expression {name} is paused (a probe of the primary
# key of the small table of paused queues).
_PAUSED = (
    "EXISTS (SELECT 1 FROM sqlitejobq_queues AS p"
    " WHERE p.name = {name} AND p.paused_at IS NOT NULL)"
)

# A queue's name while it is not paused, else NULL: the queue's jobs are sought in the
# claim index by this value, evaluated once per statement, so a paused queue's range is
# never read however long its backlog. (A filter on each row would step through all of it.)
_UNPAUSED = f"(SELECT {{name}} WHERE NOT {_PAUSED})"

_CANDIDATES_ONE_QUEUE = f"""
SELECT id{{extra}} FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
WHERE status = 'queued' AND limit_key IS NULL AND queue = {_UNPAUSED.format(name=":q{n}")}
  AND run_at <= :now{{excluding}}
ORDER BY priority DESC, run_at, id LIMIT :limit
"""
# Tasks the claiming worker does not know (a rolling deploy), as a JSON array: left for
# workers that do.
_EXCLUDING = "\n  AND task NOT IN (SELECT value FROM json_each(:exclude))"

# The names of the queues that hold queued jobs: a skip from one distinct name to the
# next over the claim index, so it costs one seek per queue, not one step per job. Paused
# queues are left out.
_QUEUED_QUEUE_NAMES = """
WITH RECURSIVE queues (name) AS (
    SELECT min(queue) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
    WHERE status = 'queued' AND limit_key IS NULL
    UNION ALL
    SELECT (SELECT min(queue) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
            WHERE status = 'queued' AND limit_key IS NULL AND queue > queues.name)
    FROM queues WHERE name IS NOT NULL
)
"""

QUEUES_WITH_QUEUED_JOBS = (
    _QUEUED_QUEUE_NAMES
    + """SELECT name FROM queues
WHERE name IS NOT NULL AND NOT """
    + _PAUSED.format(name="queues.name")
)


@lru_cache(maxsize=128)
def claim_from_queues(count: int, excluding: bool = False) -> str:
    """The claim statement for ``count`` named queues (parameters :q0 .. :q{count-1}), and
    with ``excluding``, leaving out the tasks of the JSON array :exclude.

    Each queue is read through its own ordered index range and the ranges are merged, so
    the cost stays flat however many jobs wait in other queues.
    """
    clause = _EXCLUDING if excluding else ""
    if count == 1:
        return _CLAIM.format(
            candidates=_CANDIDATES_ONE_QUEUE.format(extra="", n=0, excluding=clause)
        )
    parts = " UNION ALL ".join(
        "SELECT * FROM ("
        + _CANDIDATES_ONE_QUEUE.format(extra=", priority, run_at", n=n, excluding=clause)
        + ")"
        for n in range(count)
    )
    merged = f"SELECT id FROM ({parts}) ORDER BY priority DESC, run_at, id LIMIT :limit"
    return _CLAIM.format(candidates=merged)


# A claim is fenced by (id, attempts, worker): a worker whose lease expired and whose job
# was taken over (or rescued) matches no row, so it changes nothing.
_FENCE = "id = :id AND attempts = :attempts AND worker = :worker AND status = 'processing'"

COMPLETE = f"""
UPDATE sqlitejobq_jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END,
    result = :result, error = NULL, traceback = NULL,
    progress = CASE WHEN cancel_requested THEN progress ELSE 1.0 END,
    progress_message = coalesce(:message, progress_message),
    finished_at = :now, lease_until = NULL
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

_COMPLETE_MANY = """
WITH done (id, attempts, worker, result, message, finished_at) AS (VALUES {rows})
UPDATE sqlitejobq_jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END,
    result = done.result, error = NULL, traceback = NULL,
    progress = CASE WHEN cancel_requested THEN progress ELSE 1.0 END,
    progress_message = coalesce(done.message, progress_message),
    finished_at = done.finished_at, lease_until = NULL
FROM done
WHERE sqlitejobq_jobs.id = done.id AND sqlitejobq_jobs.attempts = done.attempts
  AND sqlitejobq_jobs.worker = done.worker AND sqlitejobq_jobs.status = 'processing'
RETURNING sqlitejobq_jobs.id, sqlitejobq_jobs.status, sqlitejobq_jobs.queue,
          sqlitejobq_jobs.batch_id, sqlitejobq_jobs.has_dependents, sqlitejobq_jobs.limit_key,
          sqlitejobq_jobs.watched
"""

#: COMPLETE_MANY takes rows of (id, attempts, worker, result, message, finished_at), padded
#: with NULL rows to one of these sizes so that a handful of statements serve every batch.
COMPLETE_MANY_SIZES = (1, 4, 16, 64, 256)


@lru_cache(maxsize=len(COMPLETE_MANY_SIZES))
def complete_many(size: int) -> str:
    """Complete ``size`` claimed jobs in one statement (fenced like COMPLETE, row by row)."""
    return _COMPLETE_MANY.format(rows=", ".join(["(?, ?, ?, ?, ?, ?)"] * size))


def _appended(
    event: str,
    outcome: str,
    *,
    attempt: str = "attempts",
    worker: str = "worker",
    started_at: str = "started_at",
    error: str = "NULL",
    traceback: str = "NULL",
) -> str:
    """The job's history with one entry appended (each argument an SQL expression of this
    module). In an UPDATE's SET, columns are the row's values before the change: those of
    the attempt that ends, while ``outcome`` must say the status it moves to."""
    return (
        f"json_insert(coalesce(history, '[]'), '$[#]', json_object("
        f"'event', '{event}', 'at', :now, 'attempt', {attempt}, 'worker', {worker}, "
        f"'started_at', {started_at}, 'error', {error}, 'traceback', {traceback}, "
        f"'outcome', {outcome}))"
    )


_FAIL_STATUS = "CASE WHEN cancel_requested THEN 'cancelled' ELSE :status END"

FAIL = f"""
UPDATE sqlitejobq_jobs
SET status = {_FAIL_STATUS},
    run_at = CASE WHEN cancel_requested THEN run_at ELSE :now + :delay END,
    error = :error, traceback = :traceback, lease_until = NULL, unknown_since = NULL,
    progress_message = coalesce(:message, progress_message),
    finished_at = CASE WHEN cancel_requested OR :status != 'queued' THEN :now END,
    history = {_appended("attempt failed", _FAIL_STATUS, error=":error", traceback=":traceback")}
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

HEARTBEAT = f"""
UPDATE sqlitejobq_jobs SET lease_until = :now + :lease
WHERE {_FENCE}
RETURNING cancel_requested
"""

SET_PROGRESS = f"""
UPDATE sqlitejobq_jobs
SET progress = :progress, progress_message = coalesce(:message, progress_message),
    lease_until = :now + :lease
WHERE {_FENCE}
RETURNING cancel_requested
"""

# Claimed but never started (a worker stopping): back to the queue, the attempt not counted.
RELEASE = f"""
UPDATE sqlitejobq_jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    attempts = attempts - 1, lease_until = NULL, started_at = NULL,
    finished_at = CASE WHEN cancel_requested THEN :now END
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# A run that ended without an outcome (lease expired, worker interrupted) counts as an
# attempt: back to the queue while attempts remain, else failed.
_ABANDON_STATUS = """CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempts >= max_attempts THEN 'failed'
                  ELSE 'queued' END"""


def _abandon_set(event: str, run_at: str) -> str:
    """The SET of a run that ended without an outcome, recorded in the history as ``event``,
    due again at ``run_at``."""
    return f"""
SET status = {_ABANDON_STATUS},
    run_at = {run_at}, lease_until = NULL, error = :error, traceback = NULL, unknown_since = NULL,
    finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN :now END,
    history = {_appended(event, _ABANDON_STATUS, error=":error")}
"""


ABANDON = f"""
UPDATE sqlitejobq_jobs {_abandon_set("abandoned", ":now + :delay")}
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

RESCUE_EXPIRED = f"""
UPDATE sqlitejobq_jobs {_abandon_set("lease expired", ":now")}
WHERE id IN (SELECT id FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_lease
             WHERE status = 'processing' AND lease_until < :now)
RETURNING id, task, status, attempts, max_attempts, worker, queue, batch_id, has_dependents,
          limit_key, watched
"""

# Rescued jobs due later, after their task's backoff: :delays is a JSON list of [id, seconds].
DELAY_JOBS = """
UPDATE sqlitejobq_jobs
SET run_at = :now + json_extract(d.value, '$[1]')
FROM json_each(:delays) AS d
WHERE sqlitejobq_jobs.id = json_extract(d.value, '$[0]') AND sqlitejobq_jobs.status = 'queued'
"""

# Claimed by a worker that does not know the task (an older worker during a rolling deploy):
# back to the queue for a worker that does, the attempt not counted, until the job has
# waited for one since ``unknown_since`` past the window; then failed with UnknownTask.
# The history records the first hand-back and the end (failed or cancelled), not the
# rechecks in between, which a worker that keeps handing it back would repeat for the
# whole window.
_GIVE_UP = "coalesce(unknown_since, :now) <= (:now - :window)"
_DEFER_STATUS = f"""CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN {_GIVE_UP} THEN 'failed'
                  ELSE 'queued' END"""
_DEFER_ERROR = f"""CASE WHEN cancel_requested THEN error
                 WHEN {_GIVE_UP} THEN :failed_error
                 ELSE :waiting_error END"""
DEFER_UNKNOWN = f"""
UPDATE sqlitejobq_jobs
SET status = {_DEFER_STATUS},
    error = {_DEFER_ERROR},
    finished_at = CASE WHEN cancel_requested OR {_GIVE_UP} THEN :now END,
    attempts = attempts - 1, run_at = :now + :recheck,
    unknown_since = coalesce(unknown_since, :now),
    lease_until = NULL, started_at = NULL,
    history = CASE WHEN unknown_since IS NULL OR cancel_requested OR {_GIVE_UP}
                   THEN {_appended("deferred", _DEFER_STATUS, error=_DEFER_ERROR)}
                   ELSE history END
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# A handler said "not yet" (raise Snooze): back to the queue, due after :delay, the attempt
# not counted; failed instead once the job was put off :max_snoozes times.
_SNOOZE_ENDS = "(cancel_requested OR snoozes >= :max_snoozes)"
_SNOOZE_STATUS = """CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN snoozes >= :max_snoozes THEN 'failed' ELSE 'queued' END"""
SNOOZE = f"""
UPDATE sqlitejobq_jobs
SET status = {_SNOOZE_STATUS},
    attempts = attempts - CASE WHEN {_SNOOZE_ENDS} THEN 0 ELSE 1 END,
    snoozes = snoozes + 1, run_at = :now + :delay, lease_until = NULL,
    error = CASE WHEN NOT cancel_requested AND snoozes >= :max_snoozes THEN :error ELSE error END,
    finished_at = CASE WHEN {_SNOOZE_ENDS} THEN :now END,
    history = {_appended("snoozed", _SNOOZE_STATUS, error=":note")}
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

NEXT_LEASE_EXPIRY = """
SELECT min(lease_until) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_lease
WHERE status = 'processing'
"""

# --- dependencies -----------------------------------------------------------------------

# The jobs a new job names in depends_on, flagged as having dependents (so that their end
# releases it); the statuses tell which are finished already.
FLAG_DEPENDENCIES = """
UPDATE sqlitejobq_jobs SET has_dependents = 1
WHERE id IN (SELECT value FROM json_each(:ids))
RETURNING id, status
"""

WAIT_FOR = """
UPDATE sqlitejobq_jobs
SET status = 'waiting', waiting_on = :waiting_on, dependency_policy = :policy
WHERE id = :id
"""

ADD_DEPENDENCY = "INSERT INTO sqlitejobq_dependencies (depends_on, job_id) VALUES (?, ?)"

# A job cancelled at enqueue because a dependency had already failed or been cancelled.
CANCEL_AT_ENQUEUE = """
UPDATE sqlitejobq_jobs
SET status = 'cancelled', error = :error, finished_at = :now
WHERE id = :id
"""

# The waiting jobs of finished dependencies: :finished is a JSON array of [id, ok] (ok: it
# completed). Each dependent counts its finished dependencies off; one that failed or was
# cancelled cancels it (policy 'cancel') or counts as done (policy 'run'). Released jobs
# are due at once.
RELEASE_DEPENDENTS = """
WITH finished (id, ok) AS (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:finished)
), counted (job_id, n, bad, first_bad) AS (
    SELECT d.job_id, count(*), max(NOT f.ok), min(CASE WHEN NOT f.ok THEN f.id END)
    FROM sqlitejobq_dependencies AS d JOIN finished AS f ON f.id = d.depends_on
    GROUP BY d.job_id
)
UPDATE sqlitejobq_jobs
SET waiting_on = max(0, waiting_on - counted.n),
    status = CASE WHEN counted.bad AND dependency_policy = 'cancel' THEN 'cancelled'
                  WHEN waiting_on - counted.n <= 0 THEN 'queued'
                  ELSE 'waiting' END,
    error = CASE WHEN counted.bad AND dependency_policy = 'cancel'
                 THEN 'cancelled: dependency ' || counted.first_bad || ' did not complete'
                 ELSE error END,
    finished_at = CASE WHEN counted.bad AND dependency_policy = 'cancel' THEN :now END,
    run_at = CASE WHEN waiting_on - counted.n <= 0 THEN max(run_at, :now) ELSE run_at END
FROM counted
WHERE sqlitejobq_jobs.id = counted.job_id AND sqlitejobq_jobs.status = 'waiting'
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

FORGET_DEPENDENCIES = """
DELETE FROM sqlitejobq_dependencies
WHERE depends_on IN (SELECT json_extract(value, '$[0]') FROM json_each(:finished))
"""

# --- limits -------------------------------------------------------------------------------

# Processing jobs per limit key, read through the lease index: the processing set is small
# (what the workers hold), so it needs no index of its own on the hot path of inserts.
LIMITED_RUNNING = """
SELECT limit_key, count(*) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_lease
WHERE status = 'processing' AND limit_key IS NOT NULL
GROUP BY limit_key
"""

# The limit keys that have queued jobs: a skip from one key to the next over their index.
LIMITED_KEYS = """
WITH RECURSIVE keys (name) AS (
    SELECT min(limit_key) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_limited
    WHERE status = 'queued' AND limit_key IS NOT NULL
    UNION ALL
    SELECT (SELECT min(limit_key) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_limited
            WHERE status = 'queued' AND limit_key IS NOT NULL AND limit_key > keys.name)
    FROM keys WHERE name IS NOT NULL
)
SELECT name FROM keys WHERE name IS NOT NULL
"""

# Up to :limit due jobs of one key in the claim's queues (a JSON array, or NULL: all) that
# are not paused, best first.
LIMITED_CANDIDATES = f"""
SELECT id, priority, run_at, task FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_limited
WHERE status = 'queued' AND limit_key = :key AND run_at <= :now
  AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
  AND NOT {_PAUSED.format(name="sqlitejobq_jobs.queue")}
  AND task NOT IN (SELECT value FROM json_each(:exclude))
ORDER BY priority DESC, run_at, id LIMIT :limit
"""

CLAIM_IDS = f"""
UPDATE sqlitejobq_jobs
SET status = 'processing', attempts = attempts + 1, worker = :worker,
    lease_until = :lease_until, started_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued'
RETURNING {JOB_COLUMNS}
"""

# A job of a limited task enqueued without its limit key (by a producer whose registry did
# not declare the limit), just claimed by the plain claim: back to the queue, the attempt
# not counted, with its key, for the limited claim.
HOLD_FOR_LIMIT = """
UPDATE sqlitejobq_jobs
SET status = 'queued', attempts = attempts - 1, lease_until = NULL, started_at = NULL,
    limit_key = :key
WHERE id = :id
"""

# Starts of a rate-limited key within its period, oldest first.
RECENT_STARTS = """
SELECT started_at FROM sqlitejobq_starts
WHERE limit_key = :key AND started_at > :since ORDER BY started_at
"""

RECORD_START = "INSERT INTO sqlitejobq_starts (limit_key, started_at) VALUES (?, ?)"

FORGET_STARTS = "DELETE FROM sqlitejobq_starts WHERE limit_key = :key AND started_at <= :since"

# The earliest run_at of a queued limited job that is not due yet.
NEXT_LIMITED_RUN = """
SELECT min(run_at) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_limited_due
WHERE status = 'queued' AND limit_key IS NOT NULL AND run_at > :now
"""

# For status: per key, its queued and processing jobs (bounded: the first keys by name).
LIMIT_USAGE = """
SELECT limit_key,
       sum(status = 'queued'), sum(status = 'processing'),
       min(CASE WHEN status = 'queued' THEN run_at END)
FROM sqlitejobq_jobs
WHERE limit_key IS NOT NULL AND status IN ('queued', 'processing')
GROUP BY limit_key ORDER BY limit_key LIMIT :limit
"""

# --- schedules -------------------------------------------------------------------------------

DECLARE_SCHEDULE = """
INSERT INTO sqlitejobq_schedules (name, task, spec, timezone, declared_at)
VALUES (:name, :task, :spec, :timezone, :now)
ON CONFLICT (name) DO UPDATE
SET task = excluded.task, spec = excluded.spec, timezone = excluded.timezone,
    declared_at = excluded.declared_at
"""

LAST_SLOTS = "SELECT name, last_slot FROM sqlitejobq_schedules"

# Take a slot: only the first to move last_slot past it gets a row back, and only it
# inserts the slot's job, in the same transaction.
TAKE_SLOT = """
UPDATE sqlitejobq_schedules SET last_slot = :slot
WHERE name = :name AND (last_slot IS NULL OR last_slot < :slot)
RETURNING name
"""

SLOT_JOB = "UPDATE sqlitejobq_schedules SET last_job_id = :job_id WHERE name = :name"

SCHEDULES = """
SELECT s.name, s.task, s.spec, s.timezone, s.last_slot, s.last_job_id, j.status, s.declared_at
FROM sqlitejobq_schedules AS s LEFT JOIN sqlitejobq_jobs AS j ON j.id = s.last_job_id
ORDER BY s.name
"""

# --- waiting -----------------------------------------------------------------------------------

WATCH = "UPDATE sqlitejobq_jobs SET watched = 1 WHERE id = :id RETURNING status"

WATCH_BATCH = """
UPDATE sqlitejobq_jobs SET watched = 1
WHERE batch_id = :batch_id AND status IN ('queued', 'processing', 'waiting')
"""

# --- operator actions -------------------------------------------------------------------

# The history records the first request only: asking again changes nothing.
_CANCEL_STATUS = "CASE WHEN status IN ('queued', 'waiting') THEN 'cancelled' ELSE status END"
_CANCEL_ENTRY = _appended(
    "cancel requested", _CANCEL_STATUS, attempt="nullif(attempts, 0)",
    worker="CASE WHEN status = 'processing' THEN worker END",
    started_at="CASE WHEN status = 'processing' THEN started_at END",
)  # fmt: skip
CANCEL = f"""
UPDATE sqlitejobq_jobs
SET status = {_CANCEL_STATUS},
    cancel_requested = 1,
    finished_at = CASE WHEN status IN ('queued', 'waiting') THEN :now ELSE finished_at END,
    history = CASE WHEN cancel_requested THEN history ELSE {_CANCEL_ENTRY} END
WHERE id = :id AND status IN ('queued', 'processing', 'waiting')
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

STATUS_QUEUE_BATCH = "SELECT status, queue, batch_id FROM sqlitejobq_jobs WHERE id = :id"

# A queue paused (a row comes back only if it was not paused already), resumed (its row
# stays, paused_at cleared: the table may hold other settings of a queue), and the paused
# queues by name.
PAUSE_QUEUE = """
INSERT INTO sqlitejobq_queues (name, paused_at) VALUES (:name, :now)
ON CONFLICT (name) DO UPDATE SET paused_at = excluded.paused_at
WHERE sqlitejobq_queues.paused_at IS NULL
RETURNING name
"""

RESUME_QUEUE = """
UPDATE sqlitejobq_queues SET paused_at = NULL
WHERE name = :name AND paused_at IS NOT NULL
RETURNING name
"""

PAUSED_QUEUES = """
SELECT name, paused_at FROM sqlitejobq_queues WHERE paused_at IS NOT NULL ORDER BY name
"""

UNIQUE_KEY = "SELECT unique_key FROM sqlitejobq_jobs WHERE id = :id"

# A new job not started within :expires seconds never runs.
SET_EXPIRY = "UPDATE sqlitejobq_jobs SET expires_at = :now + :expires WHERE id = :id"

# The jobs of status :status (queued or waiting) whose expiry has passed, cancelled, found
# through the index of the jobs that have an expiry (empty when none does).
EXPIRE_DUE = f"""
UPDATE sqlitejobq_jobs
SET status = 'cancelled', finished_at = :now, error = '{EXPIRED}',
    history = {
    _appended(
        "expired",
        "'cancelled'",
        attempt="nullif(attempts, 0)",
        worker="NULL",
        started_at="NULL",
        error=f"'{EXPIRED}'",
    )
}
WHERE id IN (SELECT id FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_expiry
             WHERE status IN ('queued', 'waiting') AND expires_at IS NOT NULL
               AND status = :status AND expires_at <= :now)
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# The job's status, queue and batch before an operator changes it (the write lock is held).
LOCK_JOB_STATE = STATUS_QUEUE_BATCH

# A job that has not started gets another priority, queue or due time (:delay from now, or
# :run_at); the history records what changed (:note).
UPDATE_WAITING = f"""
UPDATE sqlitejobq_jobs
SET priority = coalesce(:priority, priority),
    queue = coalesce(:queue, queue),
    run_at = CASE WHEN :delay IS NOT NULL THEN :now + :delay ELSE coalesce(:run_at, run_at) END,
    history = {
    _appended(
        "updated",
        "status",
        attempt="nullif(attempts, 0)",
        worker="NULL",
        started_at="NULL",
        error=":note",
    )
}
WHERE id = :id AND status IN ('queued', 'waiting')
RETURNING status
"""

# The history records the attempts the job had before they start again from 0.
RETRY = f"""
UPDATE sqlitejobq_jobs
SET status = 'queued', attempts = 0, run_at = :now, cancel_requested = 0,
    finished_at = NULL, lease_until = NULL, progress = 0.0, progress_message = NULL,
    unknown_since = NULL, waiting_on = 0,
    history = {_appended("retried", "'queued'", worker="NULL", started_at="NULL")}
WHERE id = :id AND status IN ('failed', 'cancelled')
RETURNING id
"""

# A page of failed jobs' ids after :after, read through the index of failed and cancelled
# jobs (the IN term lets SQLite use that partial index), with the filters of LIST_JOBS.
FAILED_IDS = """
SELECT id FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_finished_badly
WHERE status IN ('failed', 'cancelled') AND status = 'failed' AND id > :after
  AND (:queue IS NULL OR queue = :queue)
  AND (:task IS NULL OR task = :task)
  AND (:batch_id IS NULL OR batch_id = :batch_id)
  AND (:error IS NULL OR error LIKE :error ESCAPE '\\')
ORDER BY id LIMIT :limit
"""

PURGE_FINISHED = """
DELETE FROM sqlitejobq_jobs WHERE id IN (
    SELECT id FROM sqlitejobq_jobs
    WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < :cutoff
    LIMIT :chunk)
RETURNING queue, status
"""

# A batch goes once none of its jobs is left and none is queued or processing.
PURGE_BATCHES = """
DELETE FROM sqlitejobq_batches
WHERE created_at < :cutoff AND queued = 0 AND processing = 0 AND waiting = 0
  AND NOT EXISTS (SELECT 1 FROM sqlitejobq_jobs j WHERE j.batch_id = sqlitejobq_batches.id)
"""

# A worker's row goes once it stopped, or went silent (died), before the cutoff: a live
# worker keeps its row whatever the cutoff.
PURGE_WORKERS = """
DELETE FROM sqlitejobq_workers
WHERE last_seen < :cutoff AND (stopped_at IS NOT NULL OR last_seen < :dead_before)
"""

# --- reads ------------------------------------------------------------------------------

GET_JOB = f"SELECT {JOB_COLUMNS} FROM sqlitejobq_jobs WHERE id = :id"

JOB_WITH_HISTORY = f"SELECT {JOB_COLUMNS}, history FROM sqlitejobq_jobs WHERE id = :id"

JOB_STATUS = "SELECT status FROM sqlitejobq_jobs WHERE id = :id"

CANCEL_REQUESTED = "SELECT cancel_requested FROM sqlitejobq_jobs WHERE id = :id"

COUNTS = "SELECT queue, status, count FROM sqlitejobq_counts WHERE count != 0"

# --- counts kept beside the jobs ----------------------------------------------------------

ADD_TO_COUNT = """
INSERT INTO sqlitejobq_counts (queue, status, count) VALUES (?, ?, ?)
ON CONFLICT (queue, status) DO UPDATE SET count = count + excluded.count
"""

ADD_TO_BATCH = """
UPDATE sqlitejobq_batches
SET total = total + :total, queued = queued + :queued, processing = processing + :processing,
    completed = completed + :completed, failed = failed + :failed,
    cancelled = cancelled + :cancelled, waiting = waiting + :waiting
WHERE id = :id
"""

# The earliest run_at of queued jobs, without an index of its own: the claim index is
# ordered (queue, priority, run_at), so the earliest run_at of each (queue, priority) pair
# is one seek, and the pairs are found by skipping from one to the next. The jobs of a
# paused queue do not count: nothing is due there until it is resumed.
_LOWER_PRIORITY = """(SELECT max(priority) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
    WHERE status = 'queued' AND limit_key IS NULL AND queue = pairs.queue
      AND priority < pairs.priority)"""
_NEXT_QUEUE = """(SELECT min(queue) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
    WHERE status = 'queued' AND limit_key IS NULL AND queue > pairs.queue)"""
_EARLIEST_OF_PAIRS = f"""
SELECT min((SELECT min(run_at) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
            WHERE status = 'queued' AND limit_key IS NULL AND queue = pairs.queue
              AND priority = pairs.priority))
FROM pairs WHERE queue IS NOT NULL AND priority IS NOT NULL
  AND NOT {_PAUSED.format(name="pairs.queue")}
"""

NEXT_RUN_ANY_QUEUE = f"""
WITH RECURSIVE pairs (queue, priority) AS (
    SELECT queue, max(priority) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
    WHERE status = 'queued' AND limit_key IS NULL AND queue = (
        SELECT min(queue) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
        WHERE status = 'queued' AND limit_key IS NULL)
    UNION ALL
    SELECT CASE WHEN {_LOWER_PRIORITY} IS NULL THEN {_NEXT_QUEUE} ELSE queue END,
           coalesce({_LOWER_PRIORITY}, (
               SELECT max(priority) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
               WHERE status = 'queued' AND limit_key IS NULL AND queue = {_NEXT_QUEUE}))
    FROM pairs WHERE queue IS NOT NULL
)
{_EARLIEST_OF_PAIRS}
"""

NEXT_RUN_IN_QUEUE = f"""
WITH RECURSIVE pairs (queue, priority) AS (
    SELECT :queue, max(priority) FROM sqlitejobq_jobs INDEXED BY sqlitejobq_jobs_claim
    WHERE status = 'queued' AND limit_key IS NULL AND queue = {_UNPAUSED.format(name=":queue")}
    UNION ALL
    SELECT queue, {_LOWER_PRIORITY} FROM pairs WHERE priority IS NOT NULL
)
{_EARLIEST_OF_PAIRS}
"""

BATCH = """
SELECT id, name, total, queued, processing, completed, failed, cancelled, created_at, waiting
FROM sqlitejobq_batches WHERE id = :id
"""

LATEST_BATCH_ID = "SELECT max(id) FROM sqlitejobq_batches"

# Newest first, below :before (NULL: any): a range of the primary key, :limit rows.
BATCHES = """
SELECT id, name, total, queued, processing, completed, failed, cancelled, created_at, waiting
FROM sqlitejobq_batches
WHERE id < coalesce(:before, 9223372036854775807)
ORDER BY id DESC LIMIT :limit
"""

BATCH_JOBS = f"""
SELECT {JOB_COLUMNS} FROM sqlitejobq_jobs WHERE batch_id = :batch_id ORDER BY id
"""

_LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM sqlitejobq_jobs{{indexed}}
WHERE {{status}}
  AND (:queue IS NULL OR queue = :queue)
  AND (:task IS NULL OR task = :task)
  AND {{batch}}
  AND (:error IS NULL OR error LIKE :error ESCAPE '\\')
  AND id >= {{lowest}} AND id <= {{highest}}
ORDER BY id {{order}} LIMIT :limit
"""

# The ids a page may read: past its cursor (below :before, above :after), and within :scan
# ids of it (going newest first, below :before or from the newest job; oldest first, above
# :after or from the oldest), so that a page with selective filters reads at most :scan
# rows whatever the size of the table (NULL :scan: no window). One lower and one upper
# bound, each a constant of the statement: the search range of the index.
_AFTER = "coalesce(:after + 1, 0)"
_BEFORE = "coalesce(:before - 1, 9223372036854775807)"
_NEWEST_LOWEST = (
    f"max({_AFTER}, coalesce(coalesce(:before, (SELECT max(id) FROM sqlitejobq_jobs) + 1) "
    f"- :scan, 0))"
)
_OLDEST_HIGHEST = (
    f"min({_BEFORE}, coalesce(coalesce(:after, (SELECT min(id) FROM sqlitejobq_jobs) - 1) "
    f"+ :scan, 9223372036854775807))"
)

#: What a listing reads: the primary key, a batch's jobs through the batch index, or the
#: failed and cancelled jobs through theirs (the IN term makes that partial index usable
#: whatever :status holds; the caller picks it only for those two statuses).
LIST_JOBS_BY = ("id", "batch", "finished_badly")


@lru_cache(maxsize=2 * len(LIST_JOBS_BY))
def list_jobs(oldest_first: bool, by: str = "id") -> str:
    """The listing of jobs by id (see LIST_JOBS_BY for ``by``), newest or oldest first."""
    if by not in LIST_JOBS_BY:
        raise ValueError(f"by must be one of {LIST_JOBS_BY}, got {by!r}")
    return _LIST_JOBS.format(
        indexed={
            "id": "",
            "batch": " INDEXED BY sqlitejobq_jobs_batch",
            "finished_badly": " INDEXED BY sqlitejobq_jobs_finished_badly",
        }[by],
        status="status IN ('failed', 'cancelled') AND status = :status"
        if by == "finished_badly"
        else "(:status IS NULL OR status = :status)",
        batch="batch_id = :batch_id"
        if by == "batch"
        else "(:batch_id IS NULL OR batch_id = :batch_id)",
        lowest=_AFTER if oldest_first else _NEWEST_LOWEST,
        highest=_OLDEST_HIGHEST if oldest_first else _BEFORE,
        order="ASC" if oldest_first else "DESC",
    )


DATA_VERSION = "PRAGMA data_version"

# --- a job's dependencies ---------------------------------------------------------------------

# The jobs a waiting job still waits for (through the index by dependent), and the waiting
# jobs that wait for a job (the primary key): rows of a dependent that is no longer waiting
# (cancelled, retried) are left for the dependency's end to delete, so they are skipped.
WAITS_ON = """
SELECT d.depends_on FROM sqlitejobq_dependencies AS d
JOIN sqlitejobq_jobs AS j ON j.id = d.job_id
WHERE d.job_id = :id AND j.status = 'waiting'
ORDER BY d.depends_on
"""

WAITED_ON_BY = """
SELECT d.job_id FROM sqlitejobq_dependencies AS d
JOIN sqlitejobq_jobs AS j ON j.id = d.job_id
WHERE d.depends_on = :id AND j.status = 'waiting'
ORDER BY d.job_id
"""

# --- throughput -----------------------------------------------------------------------------

# Jobs a worker ended since its last report, added to the minute's row (:minute, the epoch
# second it starts) in the report's transaction; rows older than :before go with it.
ADD_THROUGHPUT = """
INSERT INTO sqlitejobq_throughput (minute, completed, failed)
VALUES (:minute, :completed, :failed)
ON CONFLICT (minute) DO UPDATE
SET completed = completed + excluded.completed, failed = failed + excluded.failed
"""

FORGET_THROUGHPUT = "DELETE FROM sqlitejobq_throughput WHERE minute < :before"

THROUGHPUT = """
SELECT minute, completed, failed FROM sqlitejobq_throughput
WHERE minute > :since AND minute <= :until ORDER BY minute
"""

# --- workers ----------------------------------------------------------------------------

REGISTER_WORKER = """
INSERT INTO sqlitejobq_workers (id, hostname, pid, queues, concurrency, started_at, last_seen)
VALUES (:id, :hostname, :pid, :queues, :concurrency, :now, :now)
ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, stopped_at = NULL
"""

# An upsert: a worker whose row was deleted (purged while it ran) writes it back.
REPORT_WORKER = """
INSERT INTO sqlitejobq_workers
    (id, hostname, pid, queues, concurrency, started_at, last_seen, stopped_at, jobs_completed,
     jobs_failed, writes, lock_retries, lock_wait_seconds, lock_wait_max_seconds, busy_errors)
VALUES (:id, :hostname, :pid, :queues, :concurrency, :started_at, :now, :stopped_at,
        :jobs_completed, :jobs_failed, :writes, :lock_retries, :lock_wait_seconds,
        :lock_wait_max_seconds, :busy_errors)
ON CONFLICT (id) DO UPDATE
SET last_seen = excluded.last_seen, stopped_at = excluded.stopped_at,
    jobs_completed = excluded.jobs_completed, jobs_failed = excluded.jobs_failed,
    writes = excluded.writes, lock_retries = excluded.lock_retries,
    lock_wait_seconds = excluded.lock_wait_seconds,
    lock_wait_max_seconds = excluded.lock_wait_max_seconds, busy_errors = excluded.busy_errors
"""

WORKER_TOTALS = """
SELECT coalesce(sum(writes), 0), coalesce(sum(lock_wait_seconds), 0.0),
       coalesce(max(lock_wait_max_seconds), 0.0), coalesce(sum(lock_retries), 0),
       coalesce(sum(busy_errors), 0),
       coalesce(sum(stopped_at IS NULL AND last_seen >= :alive_since), 0)
FROM sqlitejobq_workers
"""

LIST_WORKERS = """
SELECT id, hostname, pid, queues, concurrency, started_at, last_seen, stopped_at,
       jobs_completed, jobs_failed, writes, lock_retries, lock_wait_seconds, busy_errors
FROM sqlitejobq_workers ORDER BY started_at DESC LIMIT :limit
"""
